"""The round's nodes: each calls one agent, writes to the store, and returns counts.

A node finds its work in the store (by round, status and a per-stage done
mark), so a node re-run after a crash skips what it already finished; model
calls it repeats are answered by the response cache. The batch stages (respond,
critique, rewrite, select) run through the drivers in `stages`, which
`evoinstruct filter` shares; a node picks the models, config and work for its
driver. Nodes emit progress events through the stream writer; the daemon
renders them.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

from langgraph.runtime import Runtime

from evoinstruct.agents import (
    critic,
    evolver,
    generation_step,
    generator,
    responder,
    rewriter,
    selector,
)
from evoinstruct.agents.constraints.split import ConstraintSplit
from evoinstruct.agents.scoring import verify
from evoinstruct.graph.round import stages
from evoinstruct.graph.round.deps import Deps
from evoinstruct.graph.round.indexes import selection_indexes
from evoinstruct.graph.round.stages import StageContext, progress_event, recorded_drops
from evoinstruct.graph.round.state import RoundState
from evoinstruct.models.base import model_version
from evoinstruct.store.generation_calls import GenerationCall
from evoinstruct.store.ids import example_id
from evoinstruct.store.records import Example, ExampleDraft
from evoinstruct.store.stages import Stage
from evoinstruct.text.rules import language_of


def emit(runtime: Runtime[Deps], stage: Stage, **event: Any) -> None:
    """A progress event for the live view; silent when nobody streams."""
    writer = runtime.stream_writer
    if writer is not None:
        writer({"stage": stage, **event})


async def plan(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Choose this round's parents for evolution (seeded by the round, so a re-run agrees)."""
    deps = runtime.context
    loop = deps.config.loop
    n = state["round"]
    # Parents in the project's language(s) only: an English project evolves no Chinese seed.
    parents = deps.store.sample_evolvable(
        loop.evolve_per_round,
        loop.max_depth,
        deps.rng(n, Stage.PLAN),
        languages=deps.config.project.languages(),
    )
    emit(runtime, Stage.PLAN, done=1, total=1, final=True, accepted=len(parents))
    return {"parent_ids": parents, "counts": {Stage.PLAN: {"parents": len(parents)}}}


async def generate(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Self-Instruct: few-shot generation in the project's language(s), heuristic filters,
    ROUGE-L novelty, then instances; each call is recorded with the candidates it added."""
    deps = runtime.context
    n, cfg = state["round"], deps.config.generator
    calls = deps.config.loop.generate_calls
    if calls == 0:
        return {"counts": {Stage.GENERATE: {"new": 0}}}
    rng = deps.rng(n, Stage.GENERATE)
    model = deps.models.for_role("generator")
    emit(runtime, Stage.GENERATE, done=0, total=calls)
    human, machine = cfg.demo_counts()
    languages = deps.config.project.languages()
    plans = generation_step.plan_calls(
        calls, languages, lambda lang: deps.store.sample_demos(human, machine, rng, language=lang)
    )
    step = await generation_step.generate_step(
        plans, model, deps.prompts_for, cfg, rng, selection_indexes(deps).novelty
    )
    drafts = step.drafts
    for draft in drafts:
        draft.language = draft.language or language_of(f"{draft.instruction} {draft.input}")
    with deps.store.transaction():
        ids = [example_id(d.instruction, d.input, d.output, source=d.source) for d in drafts]
        known = {e.id for e in deps.store.get_many(ids)}
        added = deps.store.add_candidates(drafts, round=n)
        records = _call_records(n, step, drafts, added.ids, known)
        deps.store.record_generation_calls(records)
        deps.store.record_rejections(step.rejections, n)
    counts = {
        "new": added.inserted,
        "duplicates": added.duplicates,
        "calls_planned": calls,
        "calls_without_demos": calls - len(plans),
        **step.usage,
        **Counter(r.reason for r in step.rejections),
    }
    emit(
        runtime,
        **progress_event(
            Stage.GENERATE,
            calls,
            calls,
            accepted=added.inserted,
            rejected=recorded_drops(deps.store, n, Stage.GENERATE),
            calls=step.usage["calls"],
            tokens=step.usage["tokens"],
            final=True,
        ),
    )
    return {"counts": {Stage.GENERATE: counts}}


def _call_records(
    n: int,
    step: generation_step.StepResult,
    drafts: list[ExampleDraft],
    ids: list[str],
    known: set[str],
) -> list[GenerationCall]:
    """The store's record of each call: the candidates it added (an example already in the
    pool is a `duplicate` drop of the call, not a new candidate)."""
    records = [
        GenerationCall(
            round=n,
            call=c.index,
            prompt=c.prompt,
            first_index=c.first_index,
            language=c.language,
            model_version=c.model_version,
            template=c.template,
            tasks=c.tasks,
            drops=dict(c.drops),
        )
        for c in step.calls
    ]
    added: set[str] = set()
    for draft, eid in zip(drafts, ids, strict=True):
        record = records[draft.meta[generator.CALL_KEY]]
        if eid in known or eid in added:
            record.drops["duplicate"] = record.drops.get("duplicate", 0) + 1
        else:
            added.add(eid)
            record.candidates.append(eid)
    return records


async def evolve(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Evol-Instruct: one uniformly chosen operation per parent; children wait for answers."""
    deps = runtime.context
    n = state["round"]
    parents = deps.store.get_many(state.get("parent_ids", []))
    if not parents:
        return {"counts": {Stage.EVOLVE: {"children": 0}}}
    emit(runtime, Stage.EVOLVE, done=0, total=len(parents))
    outcome = evolver.EvolveOutcome()
    rng = deps.rng(n, Stage.EVOLVE)
    split = ConstraintSplit.from_config(deps.config.trainer.suite.held_out)
    # Each parent with its own language's prompts (a bilingual project has two).
    for language in dict.fromkeys(_language(p, deps) for p in parents):
        part = await evolver.evolve(
            [p for p in parents if _language(p, deps) == language],
            deps.models.for_role("evolver"),
            deps.prompts_for(language),
            deps.config.evolver,
            rng,
            split,
        )
        outcome.merge(part)
    added = deps.store.add_candidates(outcome.drafts, round=n)
    deps.store.record_rejections(outcome.rejections, n)
    emit(
        runtime,
        **progress_event(
            Stage.EVOLVE,
            len(parents),
            len(parents),
            accepted=added.inserted,
            rejected=recorded_drops(deps.store, n, Stage.EVOLVE),
            calls=outcome.calls,
            tokens=outcome.tokens,
            final=True,
        ),
    )
    counts = {
        "children": added.inserted,
        **outcome.operations,
        **outcome.verifiable,
        **outcome.reasons(),
        **outcome.usage(),
    }
    return {"counts": {Stage.EVOLVE: counts}}


def _language(example: Example, deps: Deps) -> str:
    """The prompt language for an example: its own where the project writes in it."""
    languages = deps.config.project.languages()
    return example.language if example.language in languages else languages[0]


def _stages(runtime: Runtime[Deps], n: int) -> StageContext:
    deps = runtime.context
    return StageContext(deps.store, n, deps.config.loop.batch_size, emit=runtime.stream_writer)


async def respond(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Answer every candidate without an output, then apply Evol-Instruct's elimination rules."""
    deps = runtime.context
    n = state["round"]
    ctx = _stages(runtime, n)
    model = deps.models.for_role("responder")
    answer = partial(
        responder.respond,
        model=model,
        prompts=deps.prompts,
        config=deps.config.responder,
        rng=deps.rng(n, Stage.RESPOND),
    )
    counts = Counter(
        await stages.respond(
            ctx,
            answer,
            model_version=model_version(model),
            template=deps.prompts.template_name("respond"),
        )
    )
    counts.update(await stages.eliminate(ctx, partial(_eliminate, deps), source="evolved"))
    return {"counts": {Stage.RESPOND: dict(counts)}}


async def _eliminate(deps: Deps, batch: list[Example]) -> evolver.EliminateOutcome:
    parents = {p.id: p for p in deps.store.get_many([c.parent_id for c in batch if c.parent_id])}
    pairs = [(parents[c.parent_id], c) for c in batch if c.parent_id in parents]
    return await evolver.eliminate(
        pairs, deps.models.for_role("evolver"), deps.prompts, deps.config.evolver
    )


async def critique(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Statistics first, the LLM judge last; scores are kept, failing examples rejected."""
    deps = runtime.context
    ctx = _stages(runtime, state["round"])
    models, cfg = deps.models, deps.config.critic
    judge = partial(
        critic.critique,
        judge=models.for_role("critic"),
        prompts=deps.prompts,
        config=cfg,
        rng=deps.rng(ctx.round, Stage.CRITIQUE),
        scorer=models.for_role("scorer") if models.roles.scorer else None,
        student=models.student,
        tagger=models.for_role("tagger") if cfg.instag.enabled else None,
    )
    # Evolved children whose equality check failed must not be judged and selected past
    # it: they wait, like an example whose judge call failed, for the next round.
    waiting = stages.unfinished(ctx, Stage.ELIMINATE, source="evolved", has_output=True)
    return {"counts": {Stage.CRITIQUE: await stages.critique(ctx, judge, skip=waiting)}}


async def rewrite(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """ReAlign: a kept rewrite supersedes its original and inherits its scores."""
    deps = runtime.context
    if not deps.config.loop.rewrite:
        return {"counts": {Stage.REWRITE: {"skipped": 1}}}
    n = state["round"]
    ctx = _stages(runtime, n)
    realign = partial(
        rewriter.rewrite_examples,
        model=deps.models.for_role("rewriter"),
        prompts=deps.prompts,
        config=deps.config.rewriter,
        rng=deps.rng(n, Stage.REWRITE),
    )
    # A reformatted answer must still meet the verifiable constraints its example carries.
    guarded = partial(verify.guard_rewrites, rewrite=realign)
    # Judged machine answers only: a seed is never rewritten away.
    counts = await stages.rewrite(
        ctx,
        guarded,
        supersede=True,
        source=["generated", "evolved"],
        requires=ctx.mark(Stage.CRITIQUE),
    )
    return {"counts": {Stage.REWRITE: counts}}


async def select(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Dedup, decontamination, thresholds, diversity and the budget decide what joins the pool."""
    deps = runtime.context
    n = state["round"]
    ctx = _stages(runtime, n)
    candidates = deps.store.pending(
        n, ctx.mark(Stage.SELECT), has_output=True, requires=ctx.mark(Stage.CRITIQUE)
    )
    # An example whose rewrite call failed waits, unselected, for the next round's rewrite.
    waiting = stages.failed_calls(ctx, Stage.REWRITE)
    candidates = [e for e in candidates if e.id not in waiting]
    cfg = deps.config.selector
    # Novelty ran at generation (Self-Instruct); an evolved child is meant to resemble its parent.
    cfg = cfg.model_copy(update={"steps": [s for s in cfg.steps if s != "novelty"]})
    indexes = selection_indexes(deps)
    chosen = await stages.select(ctx, candidates, partial(_select, deps, n, cfg, indexes))
    for seed in chosen.seeds:  # later candidates are deduplicated against accepted seeds too
        indexes.add(seed, cfg)
    reasons = stages.verdict_reasons(chosen.outcome.rejections)
    return {"counts": {Stage.SELECT: {"accepted": len(chosen.accepted), **reasons}}}


async def _select(
    deps: Deps,
    n: int,
    cfg: selector.SelectorConfig,
    indexes: selector.SelectorIndexes,
    machine: list[Example],
) -> selector.SelectOutcome:
    embedder = deps.models.for_role("embedder")
    # The diversity filter compares with a sample of the accepted pool, not just this round.
    reference = deps.store.get_many(
        deps.store.sample_accepted(deps.config.loop.diversity_reference, deps.rng(n, Stage.SELECT))
    )
    return await selector.select(
        machine,
        deps.store.scores_for([e.id for e in machine]),
        indexes,
        cfg,
        embedder=embedder.embed if embedder is not None else None,
        tags={e.id: e.meta.get("tags", []) for e in machine},
        reference_texts=[selector.field_text(e, cfg.diversity_fields) for e in reference],
    )


async def commit(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Close the round with counts taken from SQL, and decide whether to train now."""
    deps = runtime.context
    n = state["round"]
    counts = deps.store.round_counts(n)
    train, reason = (
        deps.trainer.due(deps.store, n) if deps.trainer is not None else (False, "training is off")
    )
    deps.store.finish_round(n, {"stages": state.get("counts", {}), "training": reason, **counts})
    # In the weak-to-strong mode the branch runs the experiment instead of training a version.
    experiment = train and deps.config.weak_to_strong.enabled
    plan = "the weak-to-strong experiment runs" if experiment else "a version trains"
    emit(
        runtime,
        Stage.COMMIT,
        done=1,
        total=1,
        final=True,
        accepted=counts["by_status"].get("accepted", 0),
        # A round that trains nothing says why, where the user is looking.
        schedule=f"{plan if train else 'no version this round'}: {reason}",
    )
    return {"train": train, "weak_to_strong": experiment, "notes": [f"round {n}: {reason}"]}
