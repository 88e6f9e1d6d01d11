"""`evoinstruct train | evaluate | promote | rollback` and `models list`: the trainer by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from evoinstruct.graph.cli.common import (
    JsonOpt,
    ProjectOpt,
    SetOpt,
    console,
    open_project,
    print_json,
)


def train(
    project: ProjectOpt = Path("."),
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Discard a killed run instead of resuming it.")
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Optimizer steps (overrides epochs).")
    ] = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune the next student version on the pool (resumes a killed run).

    Multi-GPU: accelerate launch -m evoinstruct.trainer train --project DIR.
    Example: evoinstruct train --set trainer.base_model=Qwen/Qwen2.5-0.5B-Instruct
    """
    from evoinstruct.trainer.train import train as run_training

    proj = open_project(project)
    cfg = proj.load_config(set_ or []).trainer
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    result = run_training(cfg, proj.root, fresh=fresh)
    summary = {
        "version": result.version,
        "path": str(result.path),
        "resumed_from": result.resumed_from,
        **result.metrics,
    }
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"Trained {result.version} in {result.path}: train loss {result.metrics.get('train_loss')}, "
            f"held-out loss {result.metrics.get('heldout_loss')}"
        )


def evaluate(
    version: Annotated[str, typer.Argument(help="Version to evaluate, e.g. v2.")],
    project: ProjectOpt = Path("."),
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Held-out loss against the current generator, and the promotion gate's verdict.

    Example: evoinstruct evaluate v2
    """
    from evoinstruct.trainer.evaluate import evaluate_version

    proj = open_project(project)
    cfg = proj.load_config(set_ or []).trainer
    with proj.open_store() as store:
        evaluation = asyncio.run(evaluate_version(store, version, cfg))
    metrics = evaluation.metrics()
    if as_json:
        print_json({"version": version, **metrics})
    else:
        verdict = "would be promoted" if evaluation.decision.promote else "would not be promoted"
        console.print(f"{version} {verdict}: {evaluation.decision.reason}")


def promote(
    version: Annotated[str, typer.Argument(help="Version to make the generator.")],
    project: ProjectOpt = Path("."),
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "promoted by hand",
) -> None:
    """Make a trained version the next round's generator.

    Example: evoinstruct promote v2 --reason "won the pairwise comparison"
    """
    from evoinstruct.trainer.promote import promote as do_promote

    with open_project(project).open_store() as store:
        do_promote(store, version, reason)
    console.print(f"{version} is now the active student; the next round generates with it.")


def rollback(
    project: ProjectOpt = Path("."),
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "rollback by hand",
) -> None:
    """Return to the version that was active before the current one (or to the teacher).

    Example: evoinstruct rollback
    """
    from evoinstruct.trainer.promote import rollback as do_rollback

    with open_project(project).open_store() as store:
        row = do_rollback(store, reason)
    console.print(
        f"Active student: {row['version'] if row else 'none (the teacher generates again)'}"
    )


def models_list(project: ProjectOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Student versions with their metrics, which one is active, and which were promoted.

    Example: evoinstruct models list --json
    """
    from evoinstruct.trainer.promote import versions_table

    with open_project(project).open_store() as store:
        rows = versions_table(store)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No student versions yet: `evoinstruct train` makes the first.")
        return
    table = Table(title="student versions")
    for column in rows[0]:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*(str(v) if v is not None else "" for v in row.values()))
    console.print(table)
