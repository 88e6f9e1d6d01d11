"""`evoinstruct inspect`: rounds, checkpoints of a round, an example's lineage, rejections."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

from evoinstruct.cli.costs import Price, from_store_row, round_costs
from evoinstruct.graph.project import Project
from evoinstruct.graph.round.threads import run_config
from evoinstruct.store.stages import Stage


def rounds_report(store: Any, prices: Mapping[str, Price] | None = None) -> list[dict[str, Any]]:
    """Per round: phase, timings, counts per stage, notes, and the resolved config it ran with
    (its last start's; `starts` says where each start began and what it changed).

    `failed` is why a round was closed as failed (phase "failed"); `step_failure` is the
    step that failed last, how many starts in a row, and its error and traceback. `usage`
    is calls, tokens and cost per stage, attributed to the role's model (cli.costs);
    `cost` is None where no model has a price.
    """
    out = []
    rows = store.rounds()
    priced = round_costs([from_store_row(r) for r in rows], prices or {})
    for row, cost in zip(rows, priced, strict=True):
        counts = row["counts"]
        out.append(
            {
                "round": row["number"],
                "phase": row["phase"],
                "started_at": row["started_at"],
                "finished_at": row["finished_at"],
                "model_version": row["model_version"],
                "created": counts.get("created"),
                "by_status": counts.get("by_status", {}),
                "stages": counts.get("stages", {}),
                "rejections": counts.get("rejections", {}),
                "training": counts.get("training"),
                "failed": counts.get("failed"),
                "step_failure": counts.get("step_failure"),
                "tokens": cost.tokens,
                "cost": cost.cost,
                "unpriced_tokens": cost.unpriced_tokens,
                "cost_per_accepted": cost.cost_per_accepted,
                "usage": [dataclasses.asdict(s) for s in cost.stages],
                "config": row["config"],
                "starts": _starts(store, row["number"]),
            }
        )
    return out


def _starts(store: Any, number: int) -> list[dict[str, Any]]:
    """Each start of the round: where it began, the steps it finished, and what its config
    changed from the start before (`config` above is the last start's)."""
    return [
        {k: start[k] for k in ("start", "started_at", "step", "steps", "model_version", "changes")}
        for start in store.round_starts(number)
    ]


async def checkpoints_report(project: Project, round: int) -> list[dict[str, Any]]:
    """The LangGraph history of one round's thread, oldest first: step, node, time, what changed."""
    from evoinstruct.graph.round.build import build_graph
    from evoinstruct.graph.round.checkpoints import open_checkpointer

    async with open_checkpointer(project.checkpoints_path) as saver:
        graph = build_graph().compile(checkpointer=saver)
        history = [s async for s in graph.aget_state_history(run_config(round))]
    rows: list[dict[str, Any]] = []
    previous: Any = None
    for snapshot in reversed(history):
        metadata = snapshot.metadata or {}
        before = previous.values if previous is not None else {}
        changed = sorted(k for k, v in snapshot.values.items() if before.get(k) != v)
        delta = {k: _delta(before.get(k), snapshot.values[k]) for k in changed}
        rows.append(
            {
                "step": metadata.get("step"),
                "source": metadata.get("source"),
                "node": ", ".join(previous.next)
                if previous is not None and previous.next
                else None,
                "created_at": snapshot.created_at,
                "checkpoint_id": snapshot.config["configurable"].get("checkpoint_id"),
                "next": list(snapshot.next),
                "round": metadata.get("round"),
                "changed": changed,
                "changes": {k: snapshot.values[k] for k in changed if k != "notes"},
                "delta": delta,
            }
        )
        previous = snapshot
    return rows


def _delta(old: Any, new: Any) -> Any:
    """What a step changed in one value: the entries of a dict that differ (per-stage counts
    accumulate, so the step's own stage is what is new), the items appended to a list."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {k: _delta(old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if isinstance(old, list) and isinstance(new, list) and new[: len(old)] == old:
        return new[len(old) :]
    return new


def rejections_report(
    store: Any, *, stage: str | None, reason: str | None, samples: int = 3
) -> list[dict[str, Any]]:
    """Rejections grouped by stage and reason, largest first, with a few samples each."""
    counts = Counter(
        {
            (group_stage, group_reason): n
            for group_stage, reasons in store.rejection_counts(stage=stage).items()
            for group_reason, n in reasons.items()
            if reason is None or group_reason == reason
        }
    )
    out = []
    for (group_stage, group_reason), n in counts.most_common():
        picked = store.rejections(stage=group_stage, reason=group_reason, limit=samples)
        out.append(
            {
                "stage": group_stage,
                "reason": group_reason,
                "count": n,
                "samples": [_sample(store, r) for r in picked],
            }
        )
    return out


def _sample(store: Any, row: dict[str, Any]) -> dict[str, Any]:
    """One rejection as shown: what was rejected, and for a rejected evolution its parent.

    An evolution that failed never became an example, so its rejection is recorded on
    the parent (with the operation in the evidence) and the rewrite, truncated or not,
    is the raw output: that is the text to show, not the parent's.
    """
    evidence = row["evidence"]
    raw = (row["raw_output"] or "")[:300] or None
    sample = {
        "example_id": row["example_id"],
        "text": _text_of(store, row),
        "evidence": evidence,
        "raw_output": raw,
        "round": row["round"],
        "parent": None,
    }
    if row["stage"] == Stage.EVOLVE and isinstance(evidence, dict) and "operation" in evidence:
        sample["parent"], sample["text"] = sample["text"], raw
    return sample


def _text_of(store: Any, row: dict[str, Any]) -> str | None:
    if row["text"]:
        return row["text"][:300]
    if row["example_id"]:
        example = store.get(row["example_id"])
        return example.instruction[:300] if example else None
    return None


def example_tree(store: Any, example_id: str) -> dict[str, Any]:
    """The lineage with each node's rejected siblings, for the tree view."""
    tree = store.lineage(example_id)
    parent = tree["example"]["parent_id"]
    siblings = store.children(parent) if parent else []
    tree["rejected_siblings"] = [
        {
            "id": s.id,
            "instruction": s.instruction,
            "operation": s.operation,
            "rejections": store.rejections(example_id=s.id),
        }
        for s in siblings
        if s.id != example_id and s.status == "rejected"
    ]
    return tree
