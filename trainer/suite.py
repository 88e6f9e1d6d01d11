"""The held-out verifiable suite: building it once, storing it, and keeping it out of training.

A suite is a fixed list of prompts whose answers a program can check
(METHODS 2.7, 5.1). It is made of

* the packaged bilingual task prompts (`prompts/eval_tasks.jsonl`), minus any
  task that shares an n-gram with the pool, each given 1-3 compatible
  constraints drawn with a generator seeded by the task's id (so one task's draw
  never depends on which others were kept), and rendered as the task followed
  by the constraints' descriptions;
* rows of IFEval-format files the user adds (`evoinstruct eval --ifeval FILE`);
  rows the registry cannot check are skipped, counted and named (key, id, why).

`ifeval_suite` builds a suite of IFEval files alone (`eval --ifeval FILE --only`):
stored and reused like the project's, kept out of training the same way, but
never the current suite, so the gate never decides on it.

The suite is stored in the pool database under the hash of its content and never
changes: adding rows stores a new suite, and results are kept per suite hash.
`SuiteGuard` is the other half of "held out": the trainer drops every pool
example that shares an n-gram with a suite prompt, so no version trains on one,
whatever reaches the pool later.
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
    LANGUAGES,
    REGISTRY,
    Constraint,
    IFEvalRow,
    describe_all,
    dump_constraints,
    from_ifeval,
    load_constraints,
    read_ifeval,
    sample_constraint,
    sample_constraints,
)
from evoinstruct.agents.decontam import Decontaminator, ngram_hashes
from evoinstruct.agents.text import tokenize
from evoinstruct.store.errors import InputError
from evoinstruct.trainer.config import SuiteConfig

if TYPE_CHECKING:
    from evoinstruct.store import Store
    from evoinstruct.store.records import Example

TASKS_FILE = "eval_tasks.jsonl"
TASKS_SOURCE = "tasks"
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


def task_item(task: dict[str, str], cfg: SuiteConfig) -> SuiteItem:
    """A packaged task with its constraints; the draw depends on the seed and the task id only."""
    language = task["language"]
    rng = Random(f"suite:{cfg.seed}:{task['id']}")
    k = rng.randint(cfg.min_constraints, cfg.max_constraints)
    constraints = sample_constraints(rng, language, k, task["task"])
    joiner = "" if language == "zh" else " "
    prompt = task["task"] + joiner + describe_all(constraints, language)
    return SuiteItem(task["id"], TASKS_SOURCE, language, task["task"], prompt, tuple(constraints))


def _task_items(store: Store, cfg: SuiteConfig, skipped: Counter[str]) -> list[SuiteItem]:
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
    return [task_item(t, cfg) for t in chosen if t["id"] not in overlapping]


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
            SuiteItem(f"{path.stem}:{row.key}", source, None, None, row.prompt, tuple(constraints))
        )
    return items


@lru_cache(maxsize=4)
def boilerplate_hashes(n: int) -> np.ndarray:
    """N-grams of our own constraint descriptions, in both languages.

    IFEval prompts phrase their constraints much as the registry's templates do,
    and the evolver writes those very sentences into pool examples; a shared
    "your entire response should be in lowercase letters" is not contamination.
    """
    texts: list[str] = []
    rng = Random(f"boilerplate:{n}")
    for ctype in REGISTRY.values():
        for language in LANGUAGES:
            texts.extend(_PLACEHOLDER.split(ctype.templates[language]))
            for _ in range(12):
                drawn = sample_constraint(
                    ctype.id, rng, language, "Write a note about the weather."
                )
                if drawn is not None:
                    texts.append(drawn.describe(language))
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
