"""The training branch's nodes: train, evaluate, promote.

Each ends the branch with its reason recorded on the round when it fails, so the
daemon goes on with the current generator.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from evoinstruct.graph.round import nodes
from evoinstruct.graph.round.deps import Deps
from evoinstruct.graph.round.state import RoundState
from evoinstruct.store.errors import Interrupted, describe_error
from evoinstruct.store.stages import Stage

# The training branch catches Exception, not only EvoError: whatever a library raises
# there, a re-run of the same node would raise it again, and a resumed round would crash
# the daemon on every start. Cancellation and interrupts (BaseException) still propagate.


async def train(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Fine-tune the student on the pool in a process of its own.

    A failed training ends the branch with the reason recorded on the round: the
    daemon goes on with the current generator instead of retrying forever.
    """
    deps = runtime.context
    steps = deps.config.trainer.max_steps
    nodes.emit(runtime, Stage.TRAIN, done=0, total=steps if steps > 0 else None)
    try:
        summary = await deps.trainer.train(stopping=deps.stopping)
    except Interrupted:
        raise  # stopped on request: the next start runs this node again and resumes
    except Exception as exc:
        return _branch_ended(deps, state["round"], f"training failed: {describe_error(exc)}")
    steps = summary.get("global_step") or 1
    nodes.emit(
        runtime, Stage.TRAIN, done=steps, total=steps, final=True, loss=summary.get("train_loss")
    )
    return {"trained_version": summary["version"], "notes": [f"trained {summary['version']}"]}


async def evaluate(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Held-out loss (and the optional pairwise judge) against the current generator."""
    deps = runtime.context
    version = state["trained_version"]
    try:
        evaluation = await deps.trainer.evaluate(
            deps.store, version, deps.models, deps.prompts, progress=_eval_progress(runtime)
        )
    except Exception as exc:
        reason = f"evaluating {version} failed: {describe_error(exc)}"
        return _branch_ended(deps, state["round"], reason)
    decision = evaluation.decision
    nodes.emit(runtime, Stage.EVALUATE, done=1, total=1, final=True)
    deps.store.finish_round(state["round"], {"training": f"{version}: {decision.reason}"})
    return {"promoted": decision.promote, "notes": [f"{version}: {decision.reason}"]}


async def promote(state: RoundState, runtime: Runtime[Deps]) -> dict[str, Any]:
    """The new version becomes the generator of the next round (if the student can serve it)."""
    deps = runtime.context
    version = state["trained_version"]
    reason = state.get("notes", [""])[-1]
    try:
        await deps.trainer.promote(deps.store, deps.models, version, reason)
    except Exception as exc:
        ended = f"{version} not promoted: {describe_error(exc)}"
        return _branch_ended(deps, state["round"], ended + await _restore_generator(deps))
    nodes.emit(runtime, Stage.PROMOTE, done=1, total=1, final=True)
    return {"model_version": version, "notes": [f"promoted {version}"]}


async def _restore_generator(deps: Deps) -> str:
    """A hand-off that failed half-way may have left the live student without a usable
    adapter; load the store's active version again so the next round generates as before.
    Returns what to add to the recorded reason."""
    from evoinstruct.graph.round.training import activate_student

    try:
        await activate_student(deps.store, deps.models)
    except Exception as exc:
        return f"; restoring the active generator failed too: {describe_error(exc)}"
    return ""


def _eval_progress(runtime: Runtime[Deps]) -> Any:
    """Suite answers done of the run in progress (the incumbent's, then the candidate's)."""

    def report(done: int, total: int) -> None:
        nodes.emit(runtime, Stage.EVALUATE, done=done, total=total)

    return report


def _branch_ended(deps: Deps, round: int, reason: str) -> dict[str, Any]:
    deps.store.finish_round(round, {"training": reason})
    return {"trained_version": None, "promoted": False, "notes": [reason]}
