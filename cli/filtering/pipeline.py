"""`evoinstruct filter`: the critic, rewriter and selector applied to an existing data set.

What a user does to clean Alpaca-52k the AlpaGasus way (judge, keep ≥ 4.5) or
the Deita way (scores, then a diverse budget). The input is read whole with
`read_seed_file` and imported into a work store (`<work_dir>/filter.db`) as
candidates of source "filter_input": unlike a seed, any of them may be dropped.
Then, cheapest first, through the same stage drivers as the daemon's rounds
(`graph.round.stages`):

1. select, model-free: exact and near dedup, ROUGE-L novelty, decontamination;
2. critique: statistics (refusals, length, repetition), then IFD, InsTag tags,
   Deita scores and the LLM judge — only the steps asked for;
3. select, on scores: the thresholds the scoring steps imply, diversity
   (Deita's repr filter, or InsTag sampling with the tags step), the budget;
4. rewrite (ReAlign) the kept examples; a kept rewrite replaces its original.

Resuming: each stage marks the examples it finished, batch by batch, so a
re-run skips them, and model calls it repeats are answered by the response
cache in the same store. A "generation" (a round of the work store) is one
setting of steps, budget and config (`FilterPlan.fingerprint`): the same
settings resume it, other settings start a new one that recomputes every
decision (from the cache). The final selection is recomputed on every run: it is
model-free and must see every scored example at once. A failed model call is no
verdict: its example is left unfinished (reported, not written), and the next
run retries it.

The kept examples are written in the input's order with `store.export.export`;
the rejection report (`OUT.rejections.json`) counts every dropped input
example by stage and reason, with up to five samples each.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoinstruct.agents import critic, rewriter, selector
from evoinstruct.agents.selector import SelectorIndexes
from evoinstruct.cli.filtering.plan import (
    FilterPlan,
    default_work_dir,
    parse_steps,
    plan_filter,
    report_path_for,
)
from evoinstruct.cli.filtering.report import (
    Fate,
    FilterReport,
    count_reasons,
    export_in_input_order,
    fates_of,
    write_report,
)
from evoinstruct.graph.round import stages
from evoinstruct.graph.round.stages import StageContext, progress_event
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import InputError, ProjectError
from evoinstruct.store.export import EXPORT_FORMATS, output_container
from evoinstruct.store.records import Example, ExampleDraft, Rejection
from evoinstruct.store.seeds import read_seed_file
from evoinstruct.store.stages import Stage

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.models.factory import ModelSet
    from evoinstruct.store import Store

SOURCE = "filter_input"

Progress = Callable[[str, dict[str, Any]], None]


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

    @property
    def ctx(self) -> StageContext:
        """The drivers' view of this generation; "filter_" keeps its marks apart from a round's."""
        batch_size = self.config.loop.batch_size
        return StageContext(self.store, self.n, batch_size, emit=self._emit, prefix="filter_")

    def _emit(self, event: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress("event", {"round": self.n, **event})

    def rng(self, stage: Stage) -> random.Random:
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
        # Work stores of older versions hold the inputs as seeds, which no verdict may drop.
        self.store.relabel_source("seed", SOURCE)
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
                fates.append(Fate(i, Stage.IMPORT, "exact_duplicate", evidence, example=drafts[i]))
            else:
                first[eid] = i
        missing = [
            Rejection(
                Stage.IMPORT,
                "no_output",
                {"position": i},
                example_id=eid,
                text=drafts[i].instruction,
            )
            for eid, i in first.items()
            if not drafts[i].output
        ]
        self.store.reject(missing, self.n)
        accepted, rejected = len(first) - len(missing), Counter(r.reason for r in missing)
        self._emit(
            progress_event(
                Stage.IMPORT, len(ids), len(ids), accepted=accepted, rejected=rejected, final=True
            )
        )
        return ids, fates

    async def cheap_select(self) -> None:
        """Dedup, novelty and decontamination over everything, in input order, before any model."""
        ctx = self.ctx
        todo = self.store.pending(self.n, ctx.mark("cheap"), source=SOURCE, has_output=True)
        if not todo:
            return
        passed = [e for e in self.store.iter_examples(source=SOURCE) if ctx.finished(e, "cheap_ok")]
        cfg = self.plan.cheap
        # In memory, not the daemon's index file (agents.selection.pool_index): the reference set
        # here is what passed this stage (a mark, not `accepted`), bounded by the input
        # file, and rebuilt once per run; the decisions are the same either way.
        choose = partial(
            selector.select,
            scores={},
            indexes=SelectorIndexes.build(passed, cfg),
            config=cfg,
            commit=False,
        )
        await stages.select(
            ctx, todo, choose, label="cheap filters", accept=False, done="cheap", passed="cheap_ok"
        )

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
        rng = self.rng(Stage.CRITIQUE)

        async def judge(batch: list[Example]) -> critic.CriticOutcome:
            # Models are built at the first batch: a finished run loads none.
            return await critic.critique(
                batch,
                prompts=self.prompts,
                config=self.plan.critic,
                rng=rng,
                **self._critic_models(),
            )

        counts = await stages.critique(self.ctx, judge, kept_mark="critique_ok", source=SOURCE)
        self.requests += counts.get("calls", 0)

    async def final_select(self) -> list[str]:
        """Thresholds, diversity and the budget over every scored example at once (model-free)."""
        ctx = self.ctx
        pool = [
            e for e in self.store.iter_examples(source=SOURCE) if ctx.finished(e, "critique_ok")
        ]
        cfg = self.plan.final
        embedder = None
        if "diversity" in cfg.steps and cfg.diversity.method == "repr":
            model = self.models.for_role("embedder")
            embedder = model.embed if model is not None else None
        choose = partial(
            selector.select,
            scores=self.store.scores_for([e.id for e in pool]),
            indexes=SelectorIndexes.build([], cfg),
            config=cfg,
            embedder=embedder,
            tags={e.id: e.meta.get("tags", []) for e in pool},
            commit=False,
        )
        chosen = await stages.select(ctx, pool, choose, done=None)
        self.final_rejections = {r.example_id: r for r in chosen.outcome.rejections if r.example_id}
        return chosen.accepted

    async def rewrite(self) -> None:
        """ReAlign the kept examples; a rewrite that breaks a rule leaves the original as it is."""
        config = self.plan.rewriter
        if config is None:
            return
        rng = self.rng(Stage.REWRITE)

        async def realign(batch: list[Example]) -> rewriter.RewriteOutcome:
            model = self.models.for_role("rewriter")
            return await rewriter.rewrite_examples(batch, model, self.prompts, config, rng)

        counts = await stages.rewrite(
            self.ctx, realign, supersede=False, status="accepted", source=SOURCE
        )
        self.requests += counts.get("calls", 0)

    def settle_rewrites(self, kept: Sequence[str]) -> dict[str, str]:
        """A kept original with a rewrite of this generation gives way to it; other rewrites do not count."""
        kept_set, ctx = set(kept), self.ctx
        current: dict[str, str] = {}
        stale, dropped = [], []
        for child in self.store.iter_examples(source="rewritten"):
            if not ctx.finished(child, Stage.REWRITE):
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
        """Why each distinct input example is not kept; failed calls leave it unfinished."""
        rejections = [
            Rejection.from_row(row)
            for row in self.store.rejections(round=self.n)
            if row["stage"] != Stage.REWRITE  # a rewrite rejection keeps its original
        ]
        return fates_of(ids, kept, examples, rejections, self.final_rejections)


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
    # All of it reads before anything is written.
    inputs = read_seed_file(input_path, input_format, source=SOURCE)
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
        return await _execute(run, inputs.drafts, manifest, input_path, out_path, fmt, work)


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
    written = export_in_input_order(store, ids, fmt, out_path)
    examples = {e.id: e for e in store.get_many(list(dict.fromkeys(ids)))}
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
        unscored_thresholds=run.plan.unscored_thresholds,
    )
    kept_set = set(kept)
    kept_originals = Counter(
        r["reason"]
        for r in store.rejections(round=run.n, stage=Stage.REWRITE)
        if r["example_id"] in kept_set and r["example_id"] not in rewrites
    )
    write_report(report, fates, kept_originals)
    store.finish_round(
        run.n, {"filter": {"kept": written, "counts": report.counts, "unfinished": unfinished}}
    )
    return report
