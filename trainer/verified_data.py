"""Verified training data from plain task prompts, as the loop makes it, in one pass.

Each task gets verifiable constraints from the evolver's `add_verifiable` operation (no
model call), `draws` times with independent draws; a model answers every constrained
prompt through the responder (rejection sampling, programmatic repair, the pick it is
configured with); an answer is kept only when it passes every constraint strictly. The
weak-model recipe (`trainer.weak_model`) and `bench/weak_to_strong.py` use it: one
without the loop's rounds, novelty filter and critic, which would keep one child per task.
`add_answered` is its unconstrained twin: plain answers, nothing verified.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from random import Random
from typing import TYPE_CHECKING, Any

from evoinstruct.agents.constraints import check_all
from evoinstruct.agents.constraints.split import ConstraintSplit
from evoinstruct.agents.evolver import ADD_VERIFIABLE, EvolverConfig, VerifiableConfig, evolve
from evoinstruct.agents.responder import ResponderConfig, respond
from evoinstruct.agents.scoring.verify import constraints_of
from evoinstruct.store.records import ExampleDraft

if TYPE_CHECKING:
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.store import Store

Progress = Callable[[str, int, int], None]  # stage, done, total


def read_tasks(text: str) -> list[str]:
    """Task prompts of a packaged text file: one per line, `#` comments and blanks skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def passes(draft: ExampleDraft) -> bool:
    """Whether the draft's answer passes every one of its constraints (strictly)."""
    constraints = constraints_of(draft)
    return bool(constraints) and all(r.passed for r in check_all(constraints, draft.output or ""))


async def add_verified(
    store: Store,
    tasks: Sequence[str],
    model: Any,
    prompts: PromptLibrary,
    responder: ResponderConfig,
    *,
    draws: int,
    max_constraints: int,
    seed: int,
    batch_size: int = 32,
    progress: Progress | None = None,
    split: ConstraintSplit | None = None,
) -> dict[str, int]:
    """Store `tasks` as seeds and their verified constrained children as accepted examples.

    Returns counts: prompts asked, answers verified, rejected by the responder (cut or
    empty), failing a constraint. Children are stored in rounds 1..draws; equal draws of
    one task are one example (the store's content hash).
    """
    say = progress or (lambda stage, done, total: None)
    seeds = [ExampleDraft(instruction=t, source="seed", language=prompts.language) for t in tasks]
    parents = store.get_many(store.add_candidates(seeds, 0, status="accepted").ids)
    evolver = EvolverConfig(
        operations=[ADD_VERIFIABLE],
        verifiable=VerifiableConfig(max_count=max_constraints),
    )
    counts = {"prompts": 0, "verified": 0, "rejected": 0, "failed_constraints": 0}
    rng = Random(seed)
    total = draws * len(parents)
    say("verified answers", 0, total)
    for draw in range(1, draws + 1):
        # The project's held-out types and suite-only phrasings stay out (default: the
        # packaged split, what the weak model's cached recipe is made with).
        drafts = (await evolve(parents, model, prompts, evolver, rng, split)).drafts
        for at in range(0, len(drafts), batch_size):
            batch = drafts[at : at + batch_size]
            answered = (await respond(batch, model, prompts, responder, rng)).answered
            kept = [d for d in answered if passes(d)]
            counts["prompts"] += len(batch)
            counts["rejected"] += len(batch) - len(answered)
            counts["failed_constraints"] += len(answered) - len(kept)
            counts["verified"] += len(kept)
            if kept:
                store.add_candidates(kept, draw, status="accepted")
            say("verified answers", counts["prompts"], total)
    return counts


async def add_answered(
    store: Store,
    tasks: Sequence[str],
    model: Any,
    prompts: PromptLibrary,
    responder: ResponderConfig,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Store `tasks` with the model's plain answers (no constraint attached, nothing
    verified) as accepted examples: data that teaches fluency, not constraint following.

    Returns counts: prompts asked, answers kept, rejected by the responder (cut or empty).
    """
    say = progress or (lambda stage, done, total: None)
    counts = {"prompts": 0, "answered": 0, "rejected": 0}
    rng = Random(0)  # respond() draws system prompts with it when the config has a bank
    say("answers", 0, len(tasks))
    for at in range(0, len(tasks), batch_size):
        # Not "seed": the trainer takes them as new examples, not as the seed share.
        batch = [
            ExampleDraft(instruction=t, language=prompts.language)
            for t in tasks[at : at + batch_size]
        ]
        answered = (await respond(batch, model, prompts, responder, rng)).answered
        counts["prompts"] += len(batch)
        counts["answered"] += len(answered)
        counts["rejected"] += len(batch) - len(answered)
        if answered:
            store.add_candidates(answered, 1, status="accepted")
        say("answers", counts["prompts"], len(tasks))
    return counts
