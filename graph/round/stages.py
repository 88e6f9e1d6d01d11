"""The stages that work through the store in batches, one driver each, for both callers:
the daemon's round nodes and `evoinstruct filter`.

A driver finds its work in the store (round, status, source and a per-stage
done mark), a batch at a time; calls its agent; and writes what the batch
decided in one transaction — results, rejections and done marks land together
or not at all, so a re-run after a crash finds each batch finished or untouched.

One retry policy: a failed model call is no verdict. Its item is neither
rejected nor marked done; the rest of the run passes it by, and the next round
(or the filter's re-run, which keeps its marks) tries it again. No verdict drops
a human seed either (`store.reject` keeps them). Callers choose the agent's
models and config (a function of the batch), the round, the prefix of the marks
and where progress events go.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.responder import RECORDED_META
from evoinstruct.store.records import KEPT_SOURCES, Example, Rejection
from evoinstruct.store.stages import Stage

if TYPE_CHECKING:
    from evoinstruct.agents.critic import CriticOutcome
    from evoinstruct.agents.evolver import EliminateOutcome
    from evoinstruct.agents.responder import RespondOutcome
    from evoinstruct.agents.rewriter import RewriteOutcome
    from evoinstruct.agents.selector import SelectOutcome
    from evoinstruct.store import Store

OutcomeT = TypeVar("OutcomeT", bound=AgentOutcome)
Agent = Callable[[list[Example]], Awaitable[OutcomeT]]
Emit = Callable[[dict[str, Any]], None]


def verdict_reasons(rejections: Iterable[Rejection]) -> Counter[str]:
    """Rejections per reason, failed calls left out: they dropped nothing."""
    return Counter(r.reason for r in rejections if r.is_verdict)


def recorded_drops(store: Store, round: int, stage: Stage | str) -> Counter[str]:
    """What `stage` has dropped in `round`, per reason, as the store holds it: the live view
    shows the count `inspect rejections`, the report and the card read (a step re-run after
    a stop included), not a tally of its own."""
    counts = Counter(store.rejection_counts(round, stage, verdicts_only=True).get(stage, {}))
    if stage in (Stage.EVOLVE, Stage.ELIMINATE):
        # Elimination verdicts are recorded under Stage.EVOLVE; the live view shows them apart.
        eliminated = Counter(store.elimination_counts(round))
        if stage == Stage.ELIMINATE:
            return eliminated
        counts.subtract(eliminated)
        return +counts
    return counts


def progress_event(
    stage: Stage | str,
    done: int,
    total: int | None,
    *,
    accepted: int | None = None,
    rejected: Counter[str] | None = None,
    calls: int = 0,
    tokens: int = 0,
    final: bool = False,
) -> dict[str, Any]:
    """A progress event in the shape the CLI's ProgressView reads; calls and tokens are new ones."""
    event: dict[str, Any] = {"stage": stage, "done": done, "total": total, "final": final}
    if accepted is not None:
        event["accepted"] = accepted
    if rejected is not None:
        event["rejected"] = dict(rejected)
    event.update(new_calls=calls, new_tokens=tokens)
    return event


@dataclass
class StageContext:
    """Where a driver works: the store, the round, the batch size, the marks' prefix, progress."""

    store: Store
    round: int
    batch_size: int
    emit: Emit | None = None
    prefix: str = ""  # the filter's "filter_" keeps its marks apart from a daemon's

    def mark(self, stage: Stage | str) -> str:
        """The done mark of `stage` in this round: the next round starts unmarked (the filter
        also marks steps of its own, such as "cheap")."""
        return f"{self.prefix}{stage}_r{self.round}"

    def finished(self, example: Example, stage: Stage | str) -> bool:
        """Whether `stage` marked `example` done this round (as `store.mark_done` writes it)."""
        return bool(example.meta.get(f"done_{self.mark(stage)}"))

    def batches(
        self, stage: Stage, skip: Collection[str], **filters: Any
    ) -> Iterator[list[Example]]:
        """The stage's work, a batch at a time, read again after every batch until none is left.

        Reading goes on past the last batch's examples, so what a batch left
        unmarked (a failed call) is not met again in this run.
        """
        last: str | None = None
        while page := self.store.pending(
            self.round, self.mark(stage), limit=self.batch_size, after=last, **filters
        ):
            last = page[-1].id
            batch = [e for e in page if e.id not in skip]
            if batch:
                yield batch

    def send(self, event: dict[str, Any]) -> None:
        if self.emit is not None:
            self.emit(event)


@dataclass
class Books:
    """What a batch stage did: items tried, accepted and left unfinished, and the agent's books."""

    tried: int = 0
    accepted: int = 0
    unfinished: int = 0
    counters: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, batch: Sequence[Example], outcome: AgentOutcome, accepted: int) -> None:
        self.tried += len(batch)
        self.accepted += accepted
        self.unfinished += len(outcome.failed_ids())
        self.counters.update(outcome.counters)
        self.counters.update(outcome.reasons())
        self.rejected.update(verdict_reasons(outcome.rejections))


async def run_batches(
    ctx: StageContext,
    stage: Stage,
    agent: Agent[OutcomeT],
    write: Callable[[list[Example], OutcomeT], None],
    accepted: Callable[[OutcomeT], int],
    *,
    skip: Collection[str] = (),
    **filters: Any,
) -> Books:
    """The one batch loop: the agent, then `write` and the done marks in one transaction."""
    total = ctx.store.count_pending(ctx.round, ctx.mark(stage), exclude=skip, **filters)
    books = Books()
    for batch in ctx.batches(stage, skip, **filters):
        outcome = await agent(batch)
        failed = outcome.failed_ids()
        with ctx.store.transaction():
            write(batch, outcome)
            ctx.store.mark_done([e.id for e in batch if e.id not in failed], ctx.mark(stage))
        books.add(batch, outcome, accepted(outcome))
        ctx.send(
            progress_event(
                stage,
                books.tried,
                total,
                accepted=books.accepted,
                rejected=recorded_drops(ctx.store, ctx.round, stage),
                calls=outcome.calls,
                tokens=outcome.tokens,
            )
        )
    drops = recorded_drops(ctx.store, ctx.round, stage)
    ctx.send(
        progress_event(
            stage, books.tried, total, accepted=books.accepted, rejected=drops, final=True
        )
    )
    return books


# --- the stages -----------------------------------------------------------------------------


async def respond(
    ctx: StageContext,
    agent: Agent[RespondOutcome],
    *,
    model_version: str | None,
    template: str,
    **filters: Any,
) -> dict[str, int]:
    """Give answers to what has none; a rejected answer rejects its example (not a seed).

    The responder's record of how the answer was drawn (`RECORDED_META`) is
    written with it, and so are the verified preference pairs of the draw.
    """

    def write(batch: list[Example], outcome: RespondOutcome) -> None:
        for item in outcome.answered:
            ctx.store.set_output(
                item.id,
                item.output,
                system=item.system or None,
                model_version=model_version,
                template=template,
            )
            # What the answer's draw looked like (rejection sampling, truncation) stays with it.
            recorded = {k: item.meta[k] for k in RECORDED_META if k in item.meta}
            if recorded:
                ctx.store.update_meta(item.id, **recorded)
        ctx.store.add_preference_pairs(outcome.pairs, ctx.round)
        ctx.store.reject(outcome.rejections, ctx.round)

    books = await run_batches(
        ctx, Stage.RESPOND, agent, write, lambda o: len(o.answered), has_output=False, **filters
    )
    return {**books.counters, "answered": books.accepted, "unanswered": books.unfinished}


async def eliminate(
    ctx: StageContext, agent: Agent[EliminateOutcome], **filters: Any
) -> dict[str, int]:
    """Evol-Instruct's elimination rules on answered children; a failed check decides nothing."""

    def write(batch: list[Example], outcome: EliminateOutcome) -> None:
        ctx.store.reject(outcome.rejections, ctx.round)

    books = await run_batches(
        ctx, Stage.ELIMINATE, agent, write, lambda o: len(o.kept), has_output=True, **filters
    )
    return {
        **books.counters,
        "eliminated": sum(books.rejected.values()),
        "unchecked": books.unfinished,
    }


async def critique(
    ctx: StageContext,
    agent: Agent[CriticOutcome],
    *,
    skip: Collection[str] = (),
    kept_mark: str | None = None,
    **filters: Any,
) -> dict[str, int]:
    """Scores kept, failing examples rejected; `kept_mark` also marks the ones that passed."""

    def write(batch: list[Example], outcome: CriticOutcome) -> None:
        ctx.store.record_scores(outcome.scores, ctx.round)
        ctx.store.reject(outcome.rejections, ctx.round)
        for example_id, tags in outcome.tags.items():
            ctx.store.update_meta(example_id, tags=tags)
        if kept_mark is not None:
            ctx.store.mark_done(outcome.kept, ctx.mark(kept_mark))

    books = await run_batches(
        ctx,
        Stage.CRITIQUE,
        agent,
        write,
        lambda o: len(o.kept),
        skip=skip,
        has_output=True,
        **filters,
    )
    return {**books.counters, "scored": books.tried, "unfinished": books.unfinished}


async def rewrite(
    ctx: StageContext, agent: Agent[RewriteOutcome], *, supersede: bool, **filters: Any
) -> dict[str, int]:
    """ReAlign: a kept rewrite joins as a child that inherits its original's scores.

    With `supersede` the child replaces its original at once; else the caller
    decides later (the filter, once it knows what it keeps).
    """

    def write(batch: list[Example], outcome: RewriteOutcome) -> None:
        children = list(
            ctx.store.add_rewrites(outcome.drafts, ctx.round, supersede=supersede).values()
        )
        # A rewrite keeps its original's meaning and scores: it counts as rewritten and judged.
        ctx.store.mark_done(children, ctx.mark(Stage.REWRITE))
        ctx.store.mark_done(children, ctx.mark(Stage.CRITIQUE))
        # A rewrite rejection keeps the original: it is recorded, never a reason to drop it.
        ctx.store.record_rejections(outcome.rejections, ctx.round)

    books = await run_batches(
        ctx, Stage.REWRITE, agent, write, lambda o: len(o.drafts), has_output=True, **filters
    )
    return {
        **books.counters,
        "checked": books.tried,
        "rewritten": books.accepted,
        "unfinished": books.unfinished,
    }


def unfinished(ctx: StageContext, stage: Stage, **filters: Any) -> set[str]:
    """Ids `stage` left unmarked this round (its call failed): later stages hold them back."""
    return {e.id for e in ctx.store.pending(ctx.round, ctx.mark(stage), **filters)}


def failed_calls(ctx: StageContext, stage: Stage) -> set[str]:
    """Ids whose `stage` call failed this round and that `stage` has not finished since."""
    rows = ctx.store.rejections(round=ctx.round, stage=stage)
    failed = [r["example_id"] for r in rows if not Rejection.from_row(r).is_verdict]
    return {e.id for e in ctx.store.get_many(failed) if not ctx.finished(e, stage)}


@dataclass
class Selection:
    """What select decided: the selector's outcome, and the seeds it let through as written."""

    outcome: SelectOutcome
    seeds: list[Example]

    @property
    def accepted(self) -> list[str]:
        return self.outcome.accepted + [e.id for e in self.seeds]


async def select(
    ctx: StageContext,
    candidates: Sequence[Example],
    agent: Agent[SelectOutcome],
    *,
    label: Stage | str = Stage.SELECT,
    accept: bool = True,
    done: Stage | str | None = Stage.SELECT,
    passed: str | None = None,
) -> Selection:
    """Human seeds pass as written, the rest through the selector; one transaction settles it.

    With `accept` the chosen become accepted (else only the dropped move);
    `done` marks every candidate finished, `passed` marks the chosen.
    """
    seeds = [e for e in candidates if e.source in KEPT_SOURCES]
    ctx.send(progress_event(label, 0, len(candidates)))
    outcome = await agent([e for e in candidates if e.source not in KEPT_SOURCES])
    selection = Selection(outcome, seeds)
    with ctx.store.transaction():
        if accept:
            ctx.store.set_status(selection.accepted, "accepted")
        ctx.store.reject(outcome.rejections, ctx.round)
        if done is not None:
            ctx.store.mark_done([e.id for e in candidates], ctx.mark(done))
        if passed is not None:
            ctx.store.mark_done(selection.accepted, ctx.mark(passed))
    ctx.send(
        progress_event(
            label,
            len(candidates),
            len(candidates),
            accepted=len(selection.accepted),
            rejected=recorded_drops(ctx.store, ctx.round, label),
            final=True,
        )
    )
    return selection
