"""The held-out verifiable suite: building it once, storing it, and keeping it out of training.

A suite is a fixed list of prompts whose answers a program can check
(METHODS 2.7, 5.1, 5.2). It is made of

* the packaged bilingual task prompts (`prompts/eval_tasks.jsonl`), minus any
  task that shares an n-gram with the pool. A generator seeded by the task's id
  (so one task's draw never depends on which others were kept) puts each task
  in one part and gives it 1-3 compatible constraints, each described by a
  phrasing placed before, after or inside the task:
  - in_distribution: trained types in training phrasings, as training data reads;
  - held_out_phrasing: trained types, each in a phrasing only the suite uses;
  - held_out_type: a type no training example carries comes first;
* rows of IFEval-format files the user adds (`evoinstruct eval --ifeval FILE`,
  part ifeval); rows the registry cannot check are skipped, counted and named
  (key, id, why).

`ifeval_suite` builds a suite of IFEval files alone (`eval --ifeval FILE --only`):
stored and reused like the project's, kept out of training the same way, but
never the current suite, so the gate never decides on it.

The suite is stored in the pool database under the hash of its content and never
changes: adding rows stores a new suite, and results are kept per suite hash.
`TrainingGuard` is the other half of "held out": the trainer (and export) drops
every pool example that shares an n-gram with a suite prompt, or carries a
held-out type or a suite-only phrasing (`agents.constraints.split`), so no
version trains on one, whatever reaches the pool later.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.agents.constraints import (
    REGISTRY,
    Constraint,
    IFEvalRow,
    dump_constraints,
    from_ifeval,
    load_constraints,
    read_ifeval,
    sample_constraint,
    sample_constraints,
    sampleable,
)
from evoinstruct.agents.constraints.phrasing import (
    LAYOUT_KEY,
    Phrasing,
    all_phrasings,
    layout,
    phrasings_for,
    render_prompt,
)
from evoinstruct.agents.constraints.split import ConstraintSplit
from evoinstruct.agents.selection.decontam import Decontaminator, ngram_hashes
from evoinstruct.agents.text import tokenize
from evoinstruct.store.errors import InputError
from evoinstruct.trainer.config import IFEVAL_PART, TASK_PARTS, SuiteConfig

if TYPE_CHECKING:
    from evoinstruct.store import Store
    from evoinstruct.store.records import Example

TASKS_FILE = "eval_tasks.jsonl"
TASKS_SOURCE = "tasks"
UNSPLIT = "unsplit"  # a packaged item of a suite built before parts existed
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class SuiteItem:
    """One prompt of the suite and the constraints its answer is checked against."""

    key: str
    source: str  # "tasks" or "ifeval:<file name>"
    language: str | None
    task: str | None  # a packaged item's bare task: the text the pool must not contain
    prompt: str  # what the model is asked: the task and the constraints' descriptions
    constraints: tuple[Constraint, ...]
    part: str | None = None  # a task part, "ifeval", or None for a suite from before parts
    phrasings: tuple[str, ...] = ()  # per constraint, the phrasing id that describes it

    @property
    def part_name(self) -> str:
        if self.part is not None:
            return self.part
        return UNSPLIT if self.source == TASKS_SOURCE else IFEVAL_PART

    def row(self) -> IFEvalRow:
        return IFEvalRow.from_constraints(self.key, self.prompt, self.constraints)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source": self.source,
            "language": self.language,
            "task": self.task,
            "prompt": self.prompt,
            "constraints": dump_constraints(self.constraints),
            "part": self.part,
            "phrasings": list(self.phrasings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteItem:
        return cls(
            str(data["key"]),
            data["source"],
            data.get("language"),
            data.get("task"),
            data["prompt"],
            tuple(load_constraints(data["constraints"])),
            data.get("part"),
            tuple(data.get("phrasings") or ()),
        )


@dataclass(frozen=True)
class Suite:
    """A stored suite: its content hash, items in order, and how it was built."""

    hash: str
    items: tuple[SuiteItem, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def short(self) -> str:
        return self.hash[:12]

    def counts(self) -> dict[str, int]:
        """Items per source and language ("tasks/en", "ifeval:x.jsonl")."""
        out: Counter[str] = Counter()
        for item in self.items:
            name = f"{item.source}/{item.language}" if item.source == TASKS_SOURCE else item.source
            out[name] += 1
        return dict(sorted(out.items()))

    def part_counts(self) -> dict[str, int]:
        """Items per part, in the parts' order."""
        found = Counter(item.part_name for item in self.items)
        order = [*TASK_PARTS, IFEVAL_PART, UNSPLIT]
        return {part: found[part] for part in order if found[part]}


def suite_hash(items: Sequence[SuiteItem]) -> str:
    """Hash of the canonical JSON of the items: equal content, equal hash."""
    canonical = json.dumps(
        [i.to_dict() for i in items], ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def load_suite(store: Store, suite_hash: str | None = None) -> Suite | None:
    """The current suite (or the one with this hash) from the store; None if there is none."""
    row = store.eval_suite(suite_hash)
    if row is None:
        return None
    items = tuple(SuiteItem.from_dict(i) for i in row["items"])
    return Suite(row["hash"], items, row["meta"])


# --- the packaged tasks ----------------------------------------------------------------
def packaged_tasks() -> list[dict[str, str]]:
    """The packaged task prompts: `{"id", "language", "task"}` per line."""
    text = (resources.files("evoinstruct.prompts") / TASKS_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def part_choices(
    split: ConstraintSplit, language: str
) -> dict[str, dict[str, tuple[Phrasing, ...]]]:
    """Per task part, the types it may draw in `language` and the phrasings of each.

    in_distribution: training's types and phrasings. held_out_phrasing: trained types
    that have a suite-only phrasing here, in those phrasings. held_out_type: the held-out
    types, in any of their phrasings (training never carries one); a held-out-type item's
    other constraints come from in_distribution's choices.
    """
    training = split.training_choices(language)
    suite_only = {t: found for t in training if (found := split.suite_phrasings(t, language))}
    held_out = {
        t: found for t in sorted(split.held_out_types) if (found := phrasings_for(t, language))
    }
    return {
        "in_distribution": training,
        "held_out_phrasing": suite_only,
        "held_out_type": held_out,
    }


def task_item(
    task: dict[str, str], cfg: SuiteConfig, split: ConstraintSplit | None = None
) -> SuiteItem:
    """A packaged task in its part, with its constraints and their phrasings; the draw
    depends on the seed, the task id and the split only."""
    split = split or ConstraintSplit.from_config(cfg.held_out)
    language, text = task["language"], task["task"]
    rng = Random(f"suite:{cfg.seed}:{task['id']}")
    choices = part_choices(split, language)
    part = _draw_part(rng, cfg, choices, language, text)
    k = rng.randint(cfg.min_constraints, cfg.max_constraints)
    if part == "held_out_type":
        first = sample_constraints(rng, language, 1, text, only=choices[part])
        rest = (
            sample_constraints(
                rng, language, k - 1, text, existing=first, only=choices["in_distribution"]
            )
            if k > 1
            else []
        )
        constraints = first + rest
        phrasings = {**choices["in_distribution"], **choices[part]}
    else:
        constraints = sample_constraints(rng, language, k, text, only=choices[part])
        phrasings = choices[part]
    placed = layout(constraints, language, rng, phrasings)
    return SuiteItem(
        task["id"],
        TASKS_SOURCE,
        language,
        text,
        render_prompt(text, placed, language),
        tuple(constraints),
        part,
        tuple(p.phrasing.id for p in placed),
    )


def _draw_part(
    rng: Random,
    cfg: SuiteConfig,
    choices: dict[str, dict[str, tuple[Phrasing, ...]]],
    language: str,
    text: str,
) -> str:
    # A part is open to a task when enough of its types can be sampled for it.
    can = {t.id for t in sampleable(language, text)}
    need = {"held_out_type": 1}
    weights = {
        part: share
        for part, share in cfg.parts.items()
        if share > 0 and len(can & set(choices[part])) >= need.get(part, cfg.max_constraints)
    }
    if not weights:
        raise InputError(
            f"no suite part can be drawn for a {language!r} task: check trainer.suite.parts "
            "and trainer.suite.held_out",
            field="trainer.suite.parts",
        )
    parts = list(weights)
    return rng.choices(parts, weights=[weights[p] for p in parts])[0]


def _task_items(store: Store, cfg: SuiteConfig, skipped: Counter[str]) -> list[SuiteItem]:
    split = ConstraintSplit.from_config(cfg.held_out)
    chosen: list[dict[str, str]] = []
    per_language: Counter[str] = Counter()
    for task in packaged_tasks():
        language = task["language"]
        if language not in cfg.languages:
            continue
        if cfg.tasks_per_language is not None and per_language[language] >= cfg.tasks_per_language:
            continue
        if len(tokenize(task["task"])) < cfg.ngram:
            # Too short to be checked against the pool by n-grams: it could not be kept out.
            skipped["too_short"] += 1
            continue
        per_language[language] += 1
        chosen.append(task)
    overlapping = pool_overlaps(store, [(t["id"], t["task"]) for t in chosen], cfg.ngram)
    skipped["overlaps_pool"] += len(overlapping)
    return [task_item(t, cfg, split) for t in chosen if t["id"] not in overlapping]


# --- IFEval-format files -----------------------------------------------------------------
@dataclass(frozen=True)
class SkippedRow:
    """A row of an IFEval-format file left out of a suite, and why."""

    source: str  # "ifeval:<file name>"
    key: str
    instruction_id: str | None  # the id at fault, when one is
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key": self.key,
            "instruction_id": self.instruction_id,
            "reason": self.reason,
        }


def _row_fault(row: IFEvalRow) -> tuple[str | None, str]:
    """The id (if one) and reason that keep a row out, for a row `row.constraints()` refuses."""
    for cid, kwargs in zip(row.instruction_id_list, row.kwargs, strict=True):
        if cid not in REGISTRY:
            return cid, "instruction id not in the registry"
        try:
            from_ifeval(cid, kwargs)
        except ValueError as exc:
            return cid, str(exc).removeprefix(f"{cid}: ")
    return None, "invalid row"


def ifeval_items(
    path: str | Path, skipped: Counter[str], named: list[SkippedRow] | None = None
) -> list[SuiteItem]:
    """Rows of an IFEval-format file the registry can check; the others are counted by
    reason (and by id) in `skipped`, and named in `named` when it is given."""
    path = Path(path)
    try:
        rows = read_ifeval(path, validate=False)
    except FileNotFoundError as exc:
        raise InputError("IFEval file not found", file=str(path)) from exc
    except ValueError as exc:
        raise InputError(str(exc), file=str(path)) from exc
    source = f"ifeval:{path.name}"
    items = []
    for row in rows:
        unknown = [i for i in row.instruction_id_list if i not in REGISTRY]
        if unknown:
            skipped.update(f"unsupported:{i}" for i in unknown)
            skipped["unsupported_rows"] += 1
        try:
            constraints = [] if unknown else row.constraints()
        except ValueError:
            skipped["invalid_rows"] += 1
            constraints = []
        if unknown or not constraints:
            if not (unknown or row.instruction_id_list):
                skipped["no_constraints"] += 1
            if named is not None:
                fault = _row_fault(row) if row.instruction_id_list else (None, "no instructions")
                named.append(SkippedRow(source, str(row.key), *fault))
            continue
        items.append(
            SuiteItem(
                f"{path.stem}:{row.key}",
                source,
                None,
                None,
                row.prompt,
                tuple(constraints),
                IFEVAL_PART,
            )
        )
    return items


@lru_cache(maxsize=4)
def boilerplate_hashes(n: int) -> np.ndarray:
    """N-grams of our own constraint descriptions, every phrasing in both languages.

    IFEval prompts phrase their constraints much as the registry's phrasings do,
    and the evolver writes those very sentences into pool examples; a shared
    "your entire response should be in lowercase letters" is not contamination.
    """
    texts: list[str] = []
    rng = Random(f"boilerplate:{n}")
    for phrasing in all_phrasings():
        texts.extend(_PLACEHOLDER.split(phrasing.text))
        for _ in range(4):
            drawn = sample_constraint(
                phrasing.type_id, rng, phrasing.language, "Write a note about the weather."
            )
            if drawn is not None:
                texts.append(phrasing.render(drawn.params))
    hashes = [ngram_hashes(t, n) for t in texts]
    return np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, dtype=np.uint64)


# --- the pool and the suite never meet ----------------------------------------------------
def _pool_texts(example: Example) -> Iterable[str]:
    return (t for t in (example.instruction, example.input) if t)


def pool_overlaps(
    store: Store, texts: Sequence[tuple[str, str]], n: int, *, ignore: np.ndarray | None = None
) -> set[str]:
    """Keys of the texts that share an n-gram with any pool example's instruction or input.

    Every status counts: a rejected example today may be a parent of an accepted one.
    """
    if not texts:
        return set()
    index = Decontaminator.from_texts(texts, n, ignore=ignore)
    found: set[str] = set()
    for example in store.iter_examples():
        for text in _pool_texts(example):
            found |= index.sources_in(text)
    return found


@dataclass
class SuiteGuard:
    """The suite's prompts as n-gram indexes; `hit(example)` names the item an example copies."""

    indexes: list[Decontaminator]

    @classmethod
    def for_suite(cls, suite: Suite, cfg: SuiteConfig) -> SuiteGuard:
        tasks = [(i.key, i.task) for i in suite.items if i.task]
        others = [(i.key, i.prompt) for i in suite.items if not i.task]
        indexes = [Decontaminator.from_texts(tasks, cfg.ngram)]
        if others:
            ignore = boilerplate_hashes(cfg.ifeval_ngram)
            indexes.append(Decontaminator.from_texts(others, cfg.ifeval_ngram, ignore=ignore))
        return cls(indexes)

    def hit(self, example: Example) -> str | None:
        for text in _pool_texts(example):
            for index in self.indexes:
                found = index.check(text)
                if found is not None:
                    return found.eval_file
        return None


def suite_guard(store: Store, cfg: SuiteConfig) -> SuiteGuard | None:
    """A guard for every suite the project ever stored (a retired suite's prompts stay out)."""
    suites = [load_suite(store, row["hash"]) for row in store.eval_suites()]
    items = tuple(i for s in suites if s is not None for i in s.items)
    return SuiteGuard.for_suite(Suite("all", items), cfg) if items else None


@dataclass
class TrainingGuard:
    """Everything no training example (and no export) may carry, in one check.

    `hit(example)` says why an example is held back — "suite:<key>" (it copies a
    suite prompt), "held_out_type:<id>" or "suite_phrasing:<id>" (by its stored
    constraints and layout, or by its text) — or None when it may train.
    """

    split: ConstraintSplit
    suite: SuiteGuard | None = None

    def hit(self, example: Example) -> str | None:
        if self.suite is not None:
            found = self.suite.hit(example)
            if found is not None:
                return f"suite:{found}"
        constraints = example.meta.get("constraints")
        return self.split.violation(
            _pool_texts(example),
            constraints if isinstance(constraints, list) else (),
            example.meta.get(LAYOUT_KEY),
        )


def training_guard(store: Store, cfg: SuiteConfig) -> TrainingGuard:
    """The guard the trainer and export share: every stored suite, and `cfg.held_out`."""
    return TrainingGuard(ConstraintSplit.from_config(cfg.held_out), suite_guard(store, cfg))


def held_back_kind(reason: str) -> str:
    """The kind of a guard's reason: suite, held_out_type or suite_phrasing."""
    return reason.split(":", 1)[0]


# --- building -------------------------------------------------------------------------------
@dataclass
class SuiteBuild:
    """What `ensure_suite` did: the current suite, whether it is new, what was left out."""

    suite: Suite
    created: bool
    added: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_rows: list[SkippedRow] = field(default_factory=list)


def ensure_suite(
    store: Store,
    cfg: SuiteConfig,
    *,
    ifeval_files: Sequence[str | Path] = (),
    rebuild: bool = False,
) -> SuiteBuild:
    """The project's current suite, built from the packaged tasks on first use.

    IFEval files add their rows not yet in the suite (a new suite, a new hash);
    `rebuild` draws the packaged part again from the current config and pool.
    """
    current = None if rebuild else load_suite(store)
    skipped: Counter[str] = Counter()
    named: list[SkippedRow] = []
    items = list(current.items) if current else _task_items(store, cfg, skipped)
    added = 0
    for path in ifeval_files:
        known = {(i.source, i.key) for i in items}
        fresh = [i for i in ifeval_items(path, skipped, named) if (i.source, i.key) not in known]
        fresh = _without_pool_overlaps(store, cfg, fresh, skipped, named)
        items.extend(fresh)
        added += len(fresh)
    if current is not None and not added:
        return SuiteBuild(current, False, 0, dict(skipped), named)
    if not items:
        raise InputError("the held-out suite would be empty: every prompt overlaps the pool")
    digest = suite_hash(items)
    meta = {
        "parent": current.hash if current else None,
        "skipped": dict(skipped),
        "config": cfg.model_dump(mode="json"),
    }
    created = store.save_eval_suite(digest, [i.to_dict() for i in items], meta)
    suite = load_suite(store, digest)
    assert suite is not None  # just stored
    return SuiteBuild(suite, created, added, dict(skipped), named)


def _without_pool_overlaps(
    store: Store,
    cfg: SuiteConfig,
    items: list[SuiteItem],
    skipped: Counter[str],
    named: list[SkippedRow],
) -> list[SuiteItem]:
    """IFEval items that share no n-gram with the pool; the others are counted and named."""
    overlapping = pool_overlaps(
        store,
        [(i.key, i.prompt) for i in items],
        cfg.ifeval_ngram,
        ignore=boilerplate_hashes(cfg.ifeval_ngram),
    )
    skipped["overlaps_pool"] += len(overlapping)
    for item in items:
        if item.key in overlapping:
            row_key = item.key.split(":", 1)[1]
            reason = f"shares a {cfg.ifeval_ngram}-token n-gram with a pool example"
            named.append(SkippedRow(item.source, row_key, None, reason))
    return [i for i in items if i.key not in overlapping]


def ifeval_suite(store: Store, cfg: SuiteConfig, ifeval_files: Sequence[str | Path]) -> SuiteBuild:
    """A suite of IFEval-format files alone (no packaged tasks), stored but never current.

    The same files give the same suite: once stored, it is found again by the
    digest of the files' checkable rows and reused as it was, even if the pool
    has since grown to overlap a row (the trainer keeps every stored suite's
    prompts out of training, so a stored row stays held out).
    """
    if not ifeval_files:
        raise InputError("--only needs at least one --ifeval FILE", field="--only")
    skipped: Counter[str] = Counter()
    named: list[SkippedRow] = []
    candidates = [i for path in ifeval_files for i in ifeval_items(path, skipped, named)]
    digest = suite_hash(candidates)
    for row in reversed(store.eval_suites()):
        if row["meta"].get("ifeval_only") == digest:
            stored = load_suite(store, row["hash"])
            assert stored is not None  # listed just now
            # What was left out when it was built, pool overlaps of that day included.
            rows = [SkippedRow(**r) for r in row["meta"].get("skipped_rows", [])]
            return SuiteBuild(stored, False, 0, dict(row["meta"].get("skipped", {})), rows)
    items = _without_pool_overlaps(store, cfg, candidates, skipped, named)
    if not items:
        raise InputError("no row of the IFEval file(s) can be scored", field="--ifeval")
    meta = {
        "ifeval_only": digest,
        "files": [Path(p).name for p in ifeval_files],
        "skipped": dict(skipped),
        "skipped_rows": [r.to_dict() for r in named],
        "config": cfg.model_dump(mode="json"),
    }
    suite_digest = suite_hash(items)
    created = store.save_eval_suite(suite_digest, [i.to_dict() for i in items], meta, current=False)
    suite = load_suite(store, suite_digest)
    assert suite is not None  # just stored
    return SuiteBuild(suite, created, len(items), dict(skipped), named)
