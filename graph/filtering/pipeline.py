"""`evoinstruct filter`: the critic, rewriter and selector applied to an existing data set.

What a user does to clean Alpaca-52k the AlpaGasus way (judge, keep ≥ 4.5) or
the Deita way (scores, then a diverse budget). The input is read whole with
`read_seed_file` and imported as candidates into a work store
(`<work_dir>/filter.db`). Then, cheapest first:

1. select, model-free: exact and near dedup, ROUGE-L novelty, decontamination;
2. critique: statistics (refusals, length, repetition), then IFD, InsTag tags,
   Deita scores and the LLM judge — only the steps asked for;
3. select, on scores: the thresholds the scoring steps imply, diversity
   (Deita's repr filter, or InsTag sampling with the tags step), the budget;
4. rewrite (ReAlign) the kept examples; a kept rewrite replaces its original.

Resuming: each stage marks the examples it finished (`mark_done`), so a
re-run skips them, and model calls it repeats are answered by the response
cache in the same store. A "generation" (a round of the work store) is one
setting of steps, budget and config: the same settings resume it, other
settings start a new one that recomputes every decision (from the cache). The
final selection is recomputed on every run: it is model-free and must see
every scored example at once. Model failures leave their examples
unfinished (reported, not written); the next run retries them.

The kept examples are written in the input's order with `store.export.export`;
the rejection report (`OUT.rejections.json`) counts every dropped input
example by stage and reason, with up to five samples each.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoinstruct.agents import critic, rewriter, selector
from evoinstruct.agents.critic import CriticConfig
from evoinstruct.agents.deita import KINDS as DEITA_DIMENSIONS
from evoinstruct.agents.rewriter import RewriterConfig
from evoinstruct.agents.selector import ALL_STEPS as SELECTOR_STEPS
from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes
from evoinstruct.graph.config import require_tags_for_instag
from evoinstruct.graph.filtering.report import (
    Fate,
    FilterReport,
    count_reasons,
    group_samples,
    write_json,
)
from evoinstruct.graph.filtering.steps import DEFAULT_STEPS, STEPS
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import InputError, ProjectError
from evoinstruct.store.export import EXPORT_FORMATS, ExportFilter, export, output_container
from evoinstruct.store.records import Example, ExampleDraft, Rejection
from evoinstruct.store.seeds import read_seed_file

if TYPE_CHECKING:
    from evoinstruct.agents.models.factory import ModelSet
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.store import Store

IMPORT = "import"  # the stage of what never became an example: copies, items without output
STATS_DIMENSIONS = ("instruction_words", "output_words", "mtld", "repetition", "refusal")

Progress = Callable[[str, dict[str, Any]], None]


def parse_steps(steps: str | Sequence[str] | None) -> list[str]:
    """`"dedup,judge"` (or a list) → the steps in canonical order; unknown names are an InputError."""
    if steps is None:
        return list(DEFAULT_STEPS)
    items = (
        steps.split(",")
        if isinstance(steps, str)
        else [s for part in steps for s in part.split(",")]
    )
    names = [s.strip().lower() for s in items if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown or not names:
        what = f"unknown step {unknown[0]!r}" if unknown else "no step given"
        raise InputError(f"{what}; choose from {','.join(STEPS)}", field="--steps")
    return [s for s in STEPS if s in names]


def default_work_dir(out_path: str | Path) -> Path:
    return Path(f"{out_path}.work")


def report_path_for(out_path: str | Path) -> Path:
    return Path(f"{out_path}.rejections.json")


# --- what the steps mean for each agent's config ---------------------------------------------


@dataclass
class FilterPlan:
    """The agents' configs for a set of steps: cheap selection, critique, final selection, rewrite."""

    steps: list[str]
    critic: CriticConfig
    cheap: SelectorConfig
    final: SelectorConfig
    rewriter: RewriterConfig | None

    @property
    def critic_models(self) -> bool:
        """Whether the critique needs the judge model (judge, tags and Deita fall back to it)."""
        return any(s in self.steps for s in ("judge", "tags", "deita"))

    def fingerprint(self, config: RunConfig) -> str:
        """What decides the outcome: a change starts a new generation of the work store."""
        material = {
            "steps": self.steps,
            "critic": self.critic.model_dump(),
            "cheap": self.cheap.model_dump(),
            "final": self.final.model_dump(),
            "rewriter": self.rewriter.model_dump() if self.rewriter else None,
            "language": config.project.language,
            "seed": config.project.seed,
            "roles": config.roles.model_dump(),
            "models": {k: v.model_dump() for k, v in config.models.items()},
        }
        text = json.dumps(material, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _dimensions(critic_cfg: CriticConfig, steps: Sequence[str]) -> set[str]:
    """Score dimensions the enabled scorers produce (thresholds on others would reject all)."""
    dims: set[str] = set(STATS_DIMENSIONS) if critic_cfg.stats.enabled else set()
    if "judge" in steps:
        dims.update(critic_cfg.judge.dimensions)
    if "ifd" in steps:
        dims.add("ifd")
    if "deita" in steps:
        dims.update((*DEITA_DIMENSIONS, "combined"))
    if "tags" in steps:
        dims.add("tag_count")
    return dims


def _rank_by(configured: list[str], dims: set[str], critic_cfg: CriticConfig, steps: Sequence[str]):
    """The configured ranking if it is scored, else the judge, else IFD (high first), else input order."""
    if configured and all(d in dims for d in configured):
        return configured
    if "judge" in steps:
        return list(critic_cfg.judge.dimensions)
    return ["ifd"] if "ifd" in steps else []


def plan_filter(config: RunConfig, steps: Sequence[str], budget: int | None) -> FilterPlan:
    """Map the user-facing steps onto the critic's sub-configs and the selector's steps."""
    if budget is not None and budget < 0:
        raise InputError("must be 0 or more", field="--budget")
    base = config.selector
    if "decontaminate" in steps and not base.decontam.eval_files:
        raise InputError(
            "the decontaminate step needs evaluation files: --eval-file FILE "
            "(or selector.decontam.eval_files in the config)",
            field="--steps",
        )
    critic_cfg = config.critic.model_copy(deep=True)
    critic_cfg.judge.enabled = "judge" in steps
    critic_cfg.ifd.enabled = "ifd" in steps
    critic_cfg.instag.enabled = "tags" in steps
    critic_cfg.deita.enabled = "deita" in steps
    cheap_steps = (["exact_dedup", "near_dedup"] if "dedup" in steps else []) + [
        s for s in ("novelty", "decontaminate") if s in steps
    ]
    cheap = base.model_copy(update={"steps": cheap_steps, "budget": None})
    dims = _dimensions(critic_cfg, steps)
    bounds = {
        "min_scores": {d: v for d, v in base.min_scores.items() if d in dims},
        "max_scores": {d: v for d, v in base.max_scores.items() if d in dims},
    }
    scored = any(s in steps for s in ("judge", "ifd", "tags", "deita"))
    final_steps = ["thresholds"] if scored and any(bounds.values()) else []
    if "diversity" in steps or "tags" in steps:
        final_steps.append("diversity")
    method = "instag" if "tags" in steps else base.diversity.method
    require_tags_for_instag(
        method,
        tagging="tags" in steps,
        diversity="diversity" in final_steps,
        tagging_setting="the tags step (--steps ...,tags)",
    )
    final = base.model_copy(
        update={
            **bounds,
            "steps": [s for s in SELECTOR_STEPS if s in final_steps],
            "budget": budget if budget is not None else base.budget,
            "rank_by": _rank_by(base.rank_by, dims, critic_cfg, steps),
            "diversity": base.diversity.model_copy(update={"method": method}),
            "decontam": base.decontam.model_copy(update={"eval_files": []}),
        }
    )
    rewrite_cfg = (
        config.rewriter.model_copy(update={"enabled": True}) if "rewrite" in steps else None
    )
    return FilterPlan(list(steps), critic_cfg, cheap, final, rewrite_cfg)


# --- store conventions shared with the daemon's nodes ---------------------------------------


def failed_ids(rejections: Sequence[Rejection]) -> set[str]:
    """Examples whose model call failed: not finished, a re-run tries them again."""
    return {
        r.example_id for r in rejections if r.example_id and r.reason.startswith("model_failure")
    }


class _InputOrder:
    """The store as export sees it, kept examples in input order (a rewrite at its original's place)."""

    def __init__(self, store: Store, positions: dict[str, int]) -> None:
        self.store = store
        self.positions = positions

    def _position(self, example: Example) -> int | None:
        if example.id in self.positions:
            return self.positions[example.id]
        return self.positions.get(example.parent_id or "")

    def iter_examples(self, **filters: Any) -> Iterator[Example]:
        placed = [(self._position(e), e) for e in self.store.iter_examples(**filters)]
        kept = [(p, e) for p, e in placed if p is not None]
        return (e for _, e in sorted(kept, key=lambda pe: pe[0]))

    def scores_for(self, ids: Sequence[str]) -> Any:
        return self.store.scores_for(ids)


# --- one run --------------------------------------------------------------------------------


def _mark(stage: str, generation: int) -> str:
    return f"filter_{stage}_r{generation}"


def _has_mark(example: Example, stage: str, generation: int) -> bool:
    return bool(example.meta.get(f"done_{_mark(stage, generation)}"))


def _chunks(items: Sequence[Example], size: int) -> Iterator[Sequence[Example]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _FilterRun:
    """The stages of one run against an open work store."""

    def __init__(
        self,
        store: Store,
        plan: FilterPlan,
        config: RunConfig,
        models: ModelSet,
        prompts: PromptLibrary,
        progress: Progress | None,
    ) -> None:
        self.store, self.plan, self.config = store, plan, config
        self.models, self.prompts = models, prompts
        self.progress = progress
        self.n = 1
        self.requests = 0
        self.final_rejections: dict[str, Rejection] = {}

    def emit(
        self, stage: str, done: int, total: int, accepted: int, rejections=(), calls: int = 0
    ) -> None:
        """A progress event in the daemon's shape (graph.progress.ProgressView reads it)."""
        if self.progress is not None:
            # A failed call is not a verdict: the example is retried, reported as unfinished.
            verdicts = (r.reason for r in rejections if not r.reason.startswith("model_failure"))
            rejected = dict(Counter(verdicts))
            event = {"done": done, "total": total, "final": done >= total, "new_calls": calls}
            event.update(stage=stage, round=self.n, accepted=accepted, rejected=rejected)
            self.progress("event", event)

    def rng(self, stage: str) -> random.Random:
        return random.Random(f"{self.config.project.seed}:filter:{self.n}:{stage}")

    def start(self, manifest: dict[str, Any]) -> tuple[bool, bool]:
        """Pick the generation: (resuming the last one, starting over after other settings)."""
        last = self.store.last_round()
        if last is not None and last["config"].get("input_sha256") != manifest["input_sha256"]:
            raise ProjectError(
                "this work directory holds a filter run of another input file; "
                "pass another --work-dir or delete this one",
                file=str(self.store.path.parent),
            )
        if last is not None and last["config"].get("settings") == manifest["settings"]:
            self.n = last["number"]
            return True, False
        self.n = last["number"] + 1 if last else 1
        self.store.start_round(self.n, manifest)
        return False, last is not None

    def import_(
        self, drafts: Sequence[ExampleDraft], *, reset: bool
    ) -> tuple[list[str], list[Fate]]:
        """Add the input as candidates; copies and items without a response never get further.

        With `reset` (new settings) every example is a candidate again: each
        decision is made anew, the model answers come from the cache.
        """
        ids = self.store.add_candidates(list(drafts), round=self.n, status="candidate").ids
        if reset:
            self.store.set_status(list(dict.fromkeys(ids)), "candidate")
        first: dict[str, int] = {}
        fates: list[Fate] = []
        for i, eid in enumerate(ids):
            if eid in first:
                j = first[eid]
                same = (drafts[i].output or "") == (drafts[j].output or "")
                evidence = {"duplicate_of": eid, "first_position": j, "same_response": same}
                fates.append(Fate(i, IMPORT, "exact_duplicate", evidence, example=drafts[i]))
            else:
                first[eid] = i
        missing = [
            Rejection(
                IMPORT, "no_output", {"position": i}, example_id=eid, text=drafts[i].instruction
            )
            for eid, i in first.items()
            if not drafts[i].output
        ]
        self.store.reject(missing, self.n, failures_are_verdicts=True)
        self.emit(IMPORT, len(ids), len(ids), len(first) - len(missing), missing)
        return ids, fates

    async def cheap_select(self) -> None:
        """Dedup, novelty and decontamination over everything, in input order, before any model."""
        todo = self.store.pending(
            self.n, _mark("cheap", self.n), status="candidate", source="seed", has_output=True
        )
        if not todo:
            return
        passed = [
            e for e in self.store.iter_examples(source="seed") if _has_mark(e, "cheap_ok", self.n)
        ]
        indexes = SelectorIndexes.build(passed, self.plan.cheap)
        outcome = await selector.select(todo, {}, indexes, self.plan.cheap, commit=False)
        with self.store.transaction():
            self.store.reject(outcome.rejections, self.n, failures_are_verdicts=True)
            self.store.mark_done([e.id for e in todo], _mark("cheap", self.n))
            self.store.mark_done(outcome.accepted, _mark("cheap_ok", self.n))
        self.emit("cheap filters", len(todo), len(todo), len(outcome.accepted), outcome.rejections)

    def _critic_models(self) -> dict[str, Any]:
        models, plan = self.models, self.plan
        judge = models.for_role("critic") if plan.critic_models else None
        student = None
        if "ifd" in plan.steps:
            student = models.student or models.get(models.roles.student)
        return {
            "judge": judge,
            "scorer": models.for_role("scorer")
            if "deita" in plan.steps and models.roles.scorer
            else None,
            "student": student,
            "tagger": models.for_role("tagger") if "tags" in plan.steps else None,
        }

    async def critique(self) -> None:
        """Statistics first, then the scorers asked for; a failed call leaves its example unfinished."""
        todo = self.store.pending(
            self.n, _mark("critique", self.n), status="candidate", source="seed", has_output=True
        )
        if not todo:
            return
        roles = self._critic_models()
        done = 0
        for batch in _chunks(todo, self.config.loop.batch_size):
            outcome = await critic.critique(
                batch,
                prompts=self.prompts,
                config=self.plan.critic,
                rng=self.rng("critique"),
                **roles,
            )
            self.requests += outcome.counters.get("calls", 0)
            failed = failed_ids(outcome.rejections)
            with self.store.transaction():
                self.store.record_scores(outcome.scores, self.n)
                self.store.reject(outcome.rejections, self.n, failures_are_verdicts=False)
                for example_id, tags in outcome.tags.items():
                    self.store.update_meta(example_id, tags=tags)
                self.store.mark_done(
                    [e.id for e in batch if e.id not in failed], _mark("critique", self.n)
                )
                self.store.mark_done(
                    [i for i in outcome.kept if i not in failed], _mark("critique_ok", self.n)
                )
            done += len(batch)
            calls = outcome.counters.get("calls", 0)
            self.emit("critique", done, len(todo), len(outcome.kept), outcome.rejections, calls)

    async def final_select(self) -> list[str]:
        """Thresholds, diversity and the budget over every scored example at once (model-free)."""
        pool = [
            e
            for e in self.store.iter_examples(source="seed")
            if _has_mark(e, "critique_ok", self.n)
        ]
        cfg = self.plan.final
        embedder = None
        if "diversity" in cfg.steps and cfg.diversity.method == "repr":
            model = self.models.for_role("embedder")
            embedder = model.embed if model is not None else None
        outcome = await selector.select(
            pool,
            self.store.scores_for([e.id for e in pool]),
            SelectorIndexes.build([], cfg),
            cfg,
            embedder=embedder,
            tags={e.id: e.meta.get("tags", []) for e in pool},
            commit=False,
        )
        with self.store.transaction():
            self.store.set_status(outcome.accepted, "accepted")
            self.store.reject(outcome.rejections, self.n, failures_are_verdicts=True)
        self.final_rejections = {r.example_id: r for r in outcome.rejections if r.example_id}
        self.emit("select", len(pool), len(pool), len(outcome.accepted), outcome.rejections)
        return outcome.accepted

    async def rewrite(self) -> None:
        """ReAlign the kept examples; a rewrite that breaks a rule leaves the original as it is."""
        if self.plan.rewriter is None:
            return
        todo = self.store.pending(
            self.n, _mark("rewrite", self.n), status="accepted", source="seed", has_output=True
        )
        model = self.models.for_role("rewriter") if todo else None
        done = 0
        for batch in _chunks(todo, self.config.loop.batch_size):
            outcome = await rewriter.rewrite_examples(
                batch, model, self.prompts, self.plan.rewriter, self.rng("rewrite")
            )
            self.requests += outcome.counters.get("calls", 0)
            failed = failed_ids(outcome.rejections)
            with self.store.transaction():
                children = self.store.add_rewrites(outcome.drafts, self.n, supersede=False)
                self.store.mark_done(list(children.values()), _mark("rewrite_child", self.n))
                self.store.record_rejections(outcome.rejections, self.n)
                self.store.mark_done(
                    [e.id for e in batch if e.id not in failed], _mark("rewrite", self.n)
                )
            done += len(batch)
            calls = outcome.counters.get("calls", 0)
            self.emit("rewrite", done, len(todo), len(outcome.drafts), calls=calls)

    def settle_rewrites(self, kept: Sequence[str]) -> dict[str, str]:
        """A kept original with a rewrite of this generation gives way to it; other rewrites do not count."""
        kept_set = set(kept)
        current: dict[str, str] = {}
        stale, dropped = [], []
        for child in self.store.iter_examples(source="rewritten"):
            if not _has_mark(child, "rewrite_child", self.n):
                stale.append(child.id)
            elif child.parent_id in kept_set:
                current[child.parent_id] = child.id
            else:
                dropped.append(child.id)
        with self.store.transaction():
            self.store.set_status(stale, "superseded")
            self.store.set_status(dropped, "rejected")
            self.store.set_status(list(current.values()), "accepted")
            self.store.set_status(list(current), "superseded")
        return current

    def fates(
        self, ids: Sequence[str], kept: set[str], examples: dict[str, Example]
    ) -> tuple[list[Fate], dict[str, int]]:
        """Why each distinct input example is not kept; model failures are unfinished, not dropped."""
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in self.store.rejections(round=self.n):
            rows.setdefault(row["example_id"], []).append(row)
        fates: list[Fate] = []
        unfinished: Counter[str] = Counter()
        first: dict[str, int] = {}
        for i, eid in enumerate(ids):
            first.setdefault(eid, i)
        for eid, i in first.items():
            if eid in kept:
                continue
            mine = [r for r in rows.get(eid, []) if r["stage"] != rewriter.STAGE]
            final = self.final_rejections.get(eid)
            verdict = (
                vars(final)
                if final
                else next((r for r in mine if not r["reason"].startswith("model_failure")), None)
            )
            if verdict is None:
                unfinished[mine[-1]["reason"] if mine else "not_processed"] += 1
                continue
            keys = ("stage", "reason", "evidence", "raw_output")
            fates.append(Fate(i, *(verdict[k] for k in keys), examples.get(eid)))
        return fates, dict(unfinished)


async def run_filter(
    input_path: str | Path,
    out_path: str | Path,
    *,
    config: RunConfig,
    models: ModelSet | Callable[[Store], ModelSet],
    steps: Sequence[str] | str | None = None,
    budget: int | None = None,
    fmt: str = "alpaca",
    work_dir: str | Path | None = None,
    progress: Progress | None = None,
    input_format: str | None = None,
    prompts: PromptLibrary | None = None,
) -> FilterReport:
    """Filter `input_path` into `out_path`; resumable through `<work_dir>/filter.db`.

    `models` is a ModelSet, or a function of the work store that builds one
    (so its response cache is that store: `lambda s: ModelSet(..., cache=s)`);
    a set built here is closed here. Raises InputError for bad steps, format
    or input before anything is written.
    """
    from filelock import FileLock, Timeout

    from evoinstruct.store import open_store

    chosen = parse_steps(steps)
    if fmt not in EXPORT_FORMATS:
        raise InputError(
            f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})", field="--format"
        )
    input_path, out_path = Path(input_path), Path(out_path)
    output_container(out_path, fmt)  # refuse `-o clean.csv` before any model work
    if out_path.resolve() == input_path.resolve():
        raise InputError("the output would overwrite the input; choose another -o", field="-o")
    plan = plan_filter(config, chosen, budget)
    seeds = read_seed_file(input_path, input_format)  # all of it reads before anything is written
    work = Path(work_dir) if work_dir is not None else default_work_dir(out_path)
    work.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ProjectError(
            "another filter run is using this work directory", file=str(work)
        ) from None
    async with AsyncExitStack() as stack:
        stack.callback(lock.release)
        store = stack.enter_context(open_store(work / "filter.db"))
        model_set = models(store) if callable(models) else models
        if model_set is not models:  # built here, closed here
            stack.push_async_callback(model_set.aclose)
        library = prompts or PromptLibrary(config.project.language)
        run = _FilterRun(store, plan, config, model_set, library, progress)
        manifest = {
            "input": str(input_path),
            "input_sha256": hashlib.sha256(input_path.read_bytes()).hexdigest(),
            "settings": plan.fingerprint(config),
            "steps": plan.steps,
            "budget": plan.final.budget,
        }
        return await _execute(run, seeds.drafts, manifest, input_path, out_path, fmt, work)


async def _execute(
    run: _FilterRun,
    drafts: Sequence[ExampleDraft],
    manifest: dict[str, Any],
    input_path: Path,
    out_path: Path,
    fmt: str,
    work: Path,
) -> FilterReport:
    store = run.store
    resumed, reset = run.start(manifest)
    ids, fates = run.import_(drafts, reset=reset)
    await run.cheap_select()
    await run.critique()
    kept = await run.final_select()
    await run.rewrite()
    rewrites = run.settle_rewrites(kept)
    positions: dict[str, int] = {}
    for i, eid in enumerate(ids):
        positions.setdefault(eid, i)
    written = export(
        _InputOrder(store, positions), fmt, out_path, ExportFilter(statuses=["accepted"])
    )
    examples = {e.id: e for e in store.get_many(list(positions))}
    dropped, unfinished = run.fates(ids, set(kept), examples)
    fates = fates + dropped
    report = FilterReport(
        input_path=input_path,
        out_path=out_path,
        report_path=report_path_for(out_path),
        work_dir=work,
        format=fmt,
        steps=run.plan.steps,
        budget=run.plan.final.budget,
        generation=run.n,
        resumed=resumed,
        input_count=len(ids),
        kept_count=written,
        rewritten_count=len(rewrites),
        counts=count_reasons(fates),
        unfinished=unfinished,
        requests=run.requests,
    )
    kept_set = set(kept)
    kept_originals = Counter(
        r["reason"]
        for r in store.rejections(round=run.n, stage=rewriter.STAGE)
        if r["example_id"] in kept_set and r["example_id"] not in rewrites
    )
    write_json(
        report.report_path,
        {
            **report.to_dict(),
            "reasons": group_samples(fates),
            "rewrites": {"rewritten": len(rewrites), "kept_original": dict(kept_originals)},
        },
    )
    store.finish_round(
        run.n, {"filter": {"kept": written, "counts": report.counts, "unfinished": unfinished}}
    )
    return report
