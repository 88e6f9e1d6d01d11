"""`evoinstruct inspect`: rounds, checkpoints, one example's lineage, rejections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evoinstruct.graph.cli.common import (
    JsonOpt,
    ProjectOpt,
    console,
    open_project,
    print_json,
)

inspect_app = typer.Typer(
    help="Look into rounds, checkpoints, lineages and rejections.", no_args_is_help=True
)


@inspect_app.command("rounds")
def inspect_rounds(project: ProjectOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Counts per stage, timings and the resolved config of every round.

    Example: evoinstruct inspect rounds --json
    """
    from evoinstruct.graph.inspect import rounds_report

    with open_project(project).open_store() as store:
        rows = rounds_report(store)
    if as_json:
        print_json(rows)
        return
    table = Table(title="rounds")
    for column in (
        "round",
        "phase",
        "started",
        "finished",
        "created",
        "accepted",
        "rejected",
        "generator",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["round"]),
            r["phase"],
            r["started_at"] or "",
            r["finished_at"] or "",
            str(r["created"] or 0),
            str(r["by_status"].get("accepted", 0)),
            str(r["by_status"].get("rejected", 0)),
            r["model_version"] or "teacher",
        )
    console.print(table)
    for r in rows:
        if r.get("failed"):
            console.print(f"round {r['round']} failed: {r['failed']}", markup=False, soft_wrap=True)


@inspect_app.command("checkpoints")
def inspect_checkpoints(
    round: Annotated[int, typer.Option("--round", "-r", min=1, help="Round number.")],
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """The LangGraph checkpoint history of one round: step, node, time, what changed.

    Example: evoinstruct inspect checkpoints --round 3
    """
    import asyncio

    from evoinstruct.graph.inspect import checkpoints_report
    from evoinstruct.store.errors import InputError

    proj = open_project(project)
    with proj.open_store() as store:
        last = store.last_round()
    if last is None or round > last["number"]:
        known = f"rounds 1-{last['number']}" if last else "no rounds yet"
        raise InputError(f"there is no round {round} ({known})", field="--round")
    rows = asyncio.run(checkpoints_report(proj, round))
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"No checkpoints for round {round} (never run, or pruned).")
        return
    table = Table(title=f"checkpoints of round {round}")
    for column in ("step", "node run", "time", "what changed", "next"):
        table.add_column(column)
    for r in rows:
        changes = "; ".join(f"{k}={_short(v)}" for k, v in r["changes"].items())
        node = r["node"] or r["source"] or ""
        table.add_row(str(r["step"]), node, r["created_at"] or "", changes, ", ".join(r["next"]))
    console.print(table)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@inspect_app.command("example")
def inspect_example(
    example_id: Annotated[
        str, typer.Argument(help="Example id (from export --with-lineage or inspect).")
    ],
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """One example's lineage as a tree: ancestors, operations, scores, rewrites, rejected siblings.

    Example: evoinstruct inspect example 3f2a9c0d1e4b5a6f7081
    """
    from evoinstruct.graph.cli.lineage_view import render_tree
    from evoinstruct.graph.inspect import example_tree

    with open_project(project).open_store() as store:
        tree = example_tree(store, example_id)
    if as_json:
        print_json(tree)
    else:
        console.print(render_tree(tree))


@inspect_app.command("rejections")
def inspect_rejections(
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    samples: Annotated[int, typer.Option(help="Samples shown per group.")] = 3,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Rejections grouped by stage and reason, with samples and their evidence.

    Example: evoinstruct inspect rejections --stage select
    """
    from evoinstruct.graph.inspect import rejections_report

    with open_project(project).open_store() as store:
        groups = rejections_report(store, stage=stage, reason=reason, samples=samples)
    if as_json:
        print_json(groups)
        return
    for g in groups:
        console.print(f"[bold]{g['stage']} / {g['reason']}[/]: {g['count']}")
        for sample in g["samples"]:
            console.print(f"  - {sample['text']!r}  evidence: {sample['evidence']}", markup=False)
