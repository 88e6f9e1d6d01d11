"""The training branch in the weak-to-strong mode: one experiment instead of a new version.

The node plans (or resumes) an experiment, has the weak model label its prompts, trains
the two students in the trainer's process (as `train` does a version), scores the four
models on the suite and records PGR on the round. Nothing is promoted: the generator stays.
A re-run after a crash continues the stored experiment (`trainer.weak_to_strong`).
"""

from __future__ import annotations

import functools
from typing import Any

from langgraph.runtime import Runtime

from evoinstruct.graph.round import nodes
from evoinstruct.graph.round.deps import Deps
from evoinstruct.graph.round.state import RoundState
from evoinstruct.store.errors import Interrupted, describe_error
from evoinstruct.store.stages import Stage


async def weak_to_strong(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Run the weak-to-strong experiment; a failure ends the branch with its reason recorded."""
    from evoinstruct.trainer.pgr import ALL_PROMPTS, pgr_text
    from evoinstruct.trainer.weak_to_strong import run_weak_to_strong

    deps = runtime.context
    steps = deps.trainer

    def progress(step: str, done: int, total: int) -> None:
        nodes.emit(runtime, Stage.WEAK_TO_STRONG, done=done, total=total, step=step)

    try:
        result = await run_weak_to_strong(
            deps.store,
            deps.models,
            deps.prompts,
            steps.config,
            steps.weak_to_strong,
            steps.project_root,
            train=functools.partial(steps.train_weak_to_strong, stopping=deps.stopping),
            round=state["round"],
            progress=progress,
        )
    except Interrupted:
        raise  # a stop request: the next start resumes the experiment at this step
    except Exception as exc:  # as the training branch: a re-run would fail the same way
        reason = f"weak-to-strong experiment failed: {describe_error(exc)}"
        deps.store.finish_round(state["round"], {"training": reason})
        return {"notes": [reason]}
    note = f"{result['name']}: PGR {pgr_text(result['pgr'][ALL_PROMPTS])}"
    deps.store.finish_round(state["round"], {"training": note, "weak_to_strong": result["name"]})
    nodes.emit(runtime, Stage.WEAK_TO_STRONG, done=1, total=1, final=True)
    return {"notes": [note]}
