"""The round's nodes: each calls one agent, writes to the store, and returns counts.

A node finds its work in the store (by round, status and a per-stage done
mark), so a node re-run after a crash skips what it already finished; model
calls it repeats are answered by the response cache. Nodes emit progress events
through the stream writer; the daemon renders them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from evoinstruct.agents import critic, evolver, generator, responder, rewriter, selector
from evoinstruct.agents.models.base import model_version
from evoinstruct.graph.round.deps import Deps
from evoinstruct.graph.round.indexes import selection_indexes
from evoinstruct.graph.round.state import RoundState
from evoinstruct.store.ids import language_of
from evoinstruct.store.records import Example, ExampleDraft, Rejection


def emit(runtime: Runtime[Deps], stage: str, **event: Any) -> None:
    """A progress event for the live view; silent when nobody streams."""
    writer = runtime.stream_writer
    if writer is not None:
        writer({"stage": stage, **event})


def _reasons(rejections: Sequence[Rejection]) -> dict[str, int]:
    return dict(Counter(r.reason for r in rejections))


def _usage(outcome: Any) -> dict[str, int]:
    return {"calls": getattr(outcome, "calls", 0), "tokens": getattr(outcome, "tokens", 0)}


async def plan(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Choose this round's parents for evolution (seeded by the round, so a re-run agrees)."""
    deps = runtime.context
    loop = deps.config.loop
    n = state["round"]
    parents = deps.store.sample_evolvable(
        loop.evolve_per_round, loop.max_depth, deps.rng(n, "plan")
    )
    emit(runtime, "plan", done=1, total=1, final=True, accepted=len(parents))
    return {"parent_ids": parents, "counts": {"plan": {"parents": len(parents)}}}


async def generate(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Self-Instruct: few-shot generation, heuristic filters, ROUGE-L novelty, then instances."""
    deps = runtime.context
    n, cfg = state["round"], deps.config.generator
    calls = deps.config.loop.generate_calls
    if calls == 0:
        return {"counts": {"generate": {"new": 0}}}
    rng = deps.rng(n, "generate")
    model = deps.models.for_role("generator")
    emit(runtime, "generate", done=0, total=calls)
    human, machine = cfg.demo_counts()
    demo_sets = [deps.store.sample_demos(human, machine, rng) for _ in range(calls)]
    outcome = await generator.generate(demo_sets, model, deps.prompts, cfg, rng)
    rejections = list(outcome.rejections)
    drafts = _novel(outcome.drafts, deps, rejections)
    usage = Counter(_usage(outcome))
    if cfg.mode == "self_instruct" and cfg.generate_instances and drafts:
        instances = await generator.generate_instances(drafts, model, deps.prompts, cfg, rng)
        drafts = instances.drafts
        rejections.extend(instances.rejections)
        usage.update(_usage(instances))
    for draft in drafts:
        draft.language = draft.language or language_of(f"{draft.instruction} {draft.input}")
    added = deps.store.add_candidates(drafts, round=n)
    deps.store.record_rejections(rejections, n)
    counts = {
        "new": added.inserted,
        "duplicates": added.duplicates,
        **usage,
        **_reasons(rejections),
    }
    emit(
        runtime,
        "generate",
        done=calls,
        total=calls,
        final=True,
        accepted=added.inserted,
        rejected=_reasons(rejections),
        new_calls=usage["calls"],
        new_tokens=usage["tokens"],
    )
    return {"counts": {"generate": counts}}


def _novel(
    drafts: list[ExampleDraft], deps: Deps, rejections: list[Rejection]
) -> list[ExampleDraft]:
    """Self-Instruct's novelty filter: ROUGE-L against the pool, in order, within the batch too."""
    indexes = selection_indexes(deps)
    keyed = [(f"draft-{i}", d.instruction) for i, d in enumerate(drafts)]
    decisions = indexes.novelty.filter(keyed, commit=False)
    kept = []
    for draft, decision in zip(drafts, decisions, strict=True):
        if decision.accepted:
            kept.append(draft)
        else:
            evidence = {
                "rouge_l": round(decision.score or 0.0, 4),
                "similar_to": decision.most_similar,
            }
            rejections.append(
                Rejection("generate", "too_similar", evidence, text=draft.instruction)
            )
    return kept


async def evolve(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Evol-Instruct: one uniformly chosen operation per parent; children wait for answers."""
    deps = runtime.context
    n = state["round"]
    parents = deps.store.get_many(state.get("parent_ids", []))
    if not parents:
        return {"counts": {"evolve": {"children": 0}}}
    emit(runtime, "evolve", done=0, total=len(parents))
    outcome = await evolver.evolve(
        parents,
        deps.models.for_role("evolver"),
        deps.prompts,
        deps.config.evolver,
        deps.rng(n, "evolve"),
    )
    added = deps.store.add_candidates(outcome.drafts, round=n)
    deps.store.record_rejections(outcome.rejections, n)
    reasons = _reasons(outcome.rejections)
    emit(
        runtime,
        "evolve",
        done=len(parents),
        total=len(parents),
        final=True,
        accepted=added.inserted,
        rejected=reasons,
        new_calls=outcome.calls,
        new_tokens=outcome.tokens,
    )
    return {
        "counts": {
            "evolve": {
                "children": added.inserted,
                **dict(outcome.operations),
                **reasons,
                **_usage(outcome),
            }
        }
    }


def _batches(deps: Deps, n: int, stage: str, skip: set[str] | None = None, **filters: Any):
    """Work lists of one stage, a batch at a time, until the store has none left.

    The done mark names the round: what a failed call left behind (the node adds
    it to `skip` instead of marking it done) is tried again by the next round.
    """
    size = deps.config.loop.batch_size
    skip = set() if skip is None else skip
    while batch := deps.store.pending(n, _mark(stage, n), limit=size, exclude=skip, **filters):
        yield batch


def _settle(
    deps: Deps, n: int, batch: Sequence[Example], rejections: Sequence[Rejection]
) -> set[str]:
    """Record rejections and reject their examples; returns the ids whose model call failed.

    A failed call is no verdict: the example stays a candidate for the next round.
    Human seeds are never dropped either: a rejected answer to a seed is recorded,
    and the seed stays (unanswered seeds are answered again next round).
    """
    seeds = {e.id for e in batch if e.source == "seed"}
    deps.store.reject(
        [r for r in rejections if r.example_id not in seeds], n, failures_are_verdicts=False
    )
    deps.store.record_rejections([r for r in rejections if r.example_id in seeds], n)
    return {
        r.example_id for r in rejections if r.example_id and r.reason.startswith("model_failure")
    }


def _mark(stage: str, n: int) -> str:
    return f"{stage}_r{n}"


async def respond(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Answer every candidate without an output, then apply Evol-Instruct's elimination rules."""
    deps = runtime.context
    n = state["round"]
    model = deps.models.for_role("responder")
    total = deps.store.count_examples(status="candidate", has_output=False, max_round=n)
    counts: Counter[str] = Counter()
    rng = deps.rng(n, "respond")
    for batch in _batches(deps, n, "respond", has_output=False):
        outcome = await responder.respond(batch, model, deps.prompts, deps.config.responder, rng)
        for item in outcome.answered:
            deps.store.set_output(
                item.id,
                item.output,
                system=item.system or None,
                model_version=model_version(model),
                template=deps.prompts.template_name("respond"),
            )
        _settle(deps, n, batch, outcome.rejections)
        # Every item was tried; what failed waits for the next round (its own mark).
        deps.store.mark_done([e.id for e in batch], _mark("respond", n))
        counts.update(
            answered=len(outcome.answered), **_reasons(outcome.rejections), **_usage(outcome)
        )
        emit(
            runtime,
            "respond",
            done=counts["answered"],
            total=total,
            accepted=counts["answered"],
            rejected=_reasons(outcome.rejections),
            new_calls=outcome.calls,
            new_tokens=outcome.tokens,
        )
    counts.update(await _eliminate(deps, n, runtime))
    emit(
        runtime,
        "respond",
        done=counts["answered"],
        total=total,
        final=True,
        accepted=counts["answered"],
    )
    return {"counts": {"respond": dict(counts)}}


async def _eliminate(deps: Deps, n: int, runtime: Runtime[Deps]) -> Counter[str]:
    counts: Counter[str] = Counter()
    model = deps.models.for_role("evolver")
    # A failed equality call is no verdict: the child stays unmarked, and the next round
    # checks it again (critique holds it back meanwhile, see `_unchecked_children`).
    failed: set[str] = set()
    for batch in _batches(deps, n, "eliminate", failed, source="evolved", has_output=True):
        parents = {
            p.id: p for p in deps.store.get_many([c.parent_id for c in batch if c.parent_id])
        }
        pairs = [(parents[c.parent_id], c) for c in batch if c.parent_id in parents]
        outcome = await evolver.eliminate(pairs, model, deps.prompts, deps.config.evolver)
        failed |= {c.id for c in outcome.failed}
        deps.store.reject(outcome.rejections, n)
        deps.store.mark_done([c.id for c in batch if c.id not in failed], _mark("eliminate", n))
        counts.update(
            eliminated=len(outcome.rejections),
            unchecked=len(outcome.failed),
            **_reasons(outcome.rejections),
        )
        emit(
            runtime,
            "eliminate",
            done=counts["eliminated"],
            total=None,
            rejected=_reasons(outcome.rejections),
        )
    return counts


def _unchecked_children(deps: Deps, n: int) -> set[str]:
    """Answered evolved candidates this round's elimination has not decided (its call failed)."""
    return {
        e.id
        for e in deps.store.pending(n, _mark("eliminate", n), source="evolved", has_output=True)
    }


async def critique(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Statistics first, the LLM judge last; scores are kept, failing examples rejected."""
    deps = runtime.context
    n = state["round"]
    models = deps.models
    total = deps.store.count_examples(status="candidate", has_output=True, max_round=n)
    counts: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    rng = deps.rng(n, "critique")
    # Evolved children still waiting for their equality check must not be judged and
    # selected past it; they stay unmarked like a failed judge call.
    failed: set[str] = _unchecked_children(deps, n)
    for batch in _batches(deps, n, "critique", failed, has_output=True):
        outcome = await critic.critique(
            batch,
            judge=models.for_role("critic"),
            prompts=deps.prompts,
            config=deps.config.critic,
            rng=rng,
            scorer=models.for_role("scorer") if models.roles.scorer else None,
            student=models.student,
            tagger=models.for_role("tagger") if deps.config.critic.instag.enabled else None,
        )
        deps.store.record_scores(outcome.scores, n)
        failed |= _settle(deps, n, batch, outcome.rejections)
        for example_id, tags in outcome.tags.items():
            deps.store.update_meta(example_id, tags=tags)
        # A judge that failed leaves its examples unjudged: select waits, the next round retries.
        deps.store.mark_done([e.id for e in batch if e.id not in failed], _mark("critique", n))
        counts.update(scored=len(batch), **dict(outcome.counters), **_reasons(outcome.rejections))
        dropped.update(_reasons(outcome.rejections))
        emit(
            runtime,
            "critique",
            done=counts["scored"],
            total=total,
            accepted=len(outcome.kept),
            rejected=_reasons(outcome.rejections),
            new_calls=outcome.counters.get("calls", 0),
        )
    emit(
        runtime,
        "critique",
        done=counts["scored"],
        total=total,
        final=True,
        accepted=counts["kept"],
        rejected=dict(dropped),
    )
    return {"counts": {"critique": dict(counts)}}


async def rewrite(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """ReAlign: a kept rewrite supersedes its original and inherits its scores."""
    deps = runtime.context
    n = state["round"]
    if not deps.config.loop.rewrite:
        return {"counts": {"rewrite": {"skipped": 1}}}
    model = deps.models.for_role("rewriter")
    counts: Counter[str] = Counter()
    rng = deps.rng(n, "rewrite")
    for batch in _batches(
        deps,
        n,
        "rewrite",
        has_output=True,
        source=["generated", "evolved"],
        requires=_mark("critique", n),
    ):
        outcome = await rewriter.rewrite_examples(
            batch, model, deps.prompts, deps.config.rewriter, rng
        )
        children = deps.store.add_rewrites(outcome.drafts, n)
        # A rewrite keeps its original's meaning and scores: it counts as rewritten and judged.
        deps.store.mark_done(list(children.values()), _mark("rewrite", n))
        deps.store.mark_done(list(children.values()), _mark("critique", n))
        # A rewrite rejection keeps the original: it is recorded, never a reason to drop it.
        deps.store.record_rejections(outcome.rejections, n)
        deps.store.mark_done([e.id for e in batch], _mark("rewrite", n))
        counts.update(
            checked=len(batch), rewritten=len(outcome.drafts), **_reasons(outcome.rejections)
        )
        emit(
            runtime,
            "rewrite",
            done=counts["checked"],
            total=None,
            accepted=counts["rewritten"],
            rejected=_reasons(outcome.rejections),
        )
    emit(
        runtime,
        "rewrite",
        done=counts["checked"],
        total=counts["checked"],
        final=True,
        accepted=counts["rewritten"],
    )
    return {"counts": {"rewrite": dict(counts)}}


async def select(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Dedup, decontamination, thresholds, diversity and the budget decide what joins the pool."""
    deps = runtime.context
    n = state["round"]
    candidates = deps.store.pending(
        n, _mark("select", n), has_output=True, requires=_mark("critique", n)
    )
    seeds = [e for e in candidates if e.source == "seed"]
    # Human seeds are accepted as written; only machine examples compete for the pool.
    machine = [e for e in candidates if e.source != "seed"]
    emit(runtime, "select", done=0, total=len(candidates))
    cfg = deps.config.selector
    # Novelty ran at generation (Self-Instruct); an evolved child is meant to resemble its parent.
    cfg = cfg.model_copy(update={"steps": [s for s in cfg.steps if s != "novelty"]})
    embedder = deps.models.for_role("embedder")
    indexes = selection_indexes(deps)
    # The diversity filter compares with a sample of the accepted pool, not just this round.
    reference = deps.store.get_many(
        deps.store.sample_accepted(deps.config.loop.diversity_reference, deps.rng(n, "select"))
    )
    outcome = await selector.select(
        machine,
        deps.store.scores_for([e.id for e in machine]),
        indexes,
        cfg,
        embedder=embedder.embed if embedder is not None else None,
        tags={e.id: e.meta.get("tags", []) for e in machine},
        reference_texts=[selector.field_text(e, cfg.diversity_fields) for e in reference],
    )
    for seed in seeds:  # later candidates are deduplicated against accepted seeds too
        indexes.add(seed, cfg)
    with deps.store.transaction():
        deps.store.set_status(outcome.accepted + [e.id for e in seeds], "accepted")
        deps.store.reject(outcome.rejections, n)
        deps.store.mark_done([e.id for e in candidates], _mark("select", n))
    reasons = _reasons(outcome.rejections)
    emit(
        runtime,
        "select",
        done=len(candidates),
        total=len(candidates),
        final=True,
        accepted=len(outcome.accepted) + len(seeds),
        rejected=reasons,
    )
    return {"counts": {"select": {"accepted": len(outcome.accepted) + len(seeds), **reasons}}}


async def commit(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Close the round with counts taken from SQL, and decide whether to train now."""
    deps = runtime.context
    n = state["round"]
    counts = deps.store.round_counts(n)
    train, reason = (
        deps.trainer.due(deps.store, n) if deps.trainer is not None else (False, "training is off")
    )
    deps.store.finish_round(n, {"stages": state.get("counts", {}), "training": reason, **counts})
    emit(
        runtime,
        "commit",
        done=1,
        total=1,
        final=True,
        accepted=counts["by_status"].get("accepted", 0),
    )
    return {"train": train, "notes": [f"round {n}: {reason}"]}
