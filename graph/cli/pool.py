"""The pool commands: init, seed add, status, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from evoinstruct.graph.cli.common import (
    JsonOpt,
    ProjectOpt,
    console,
    open_project,
    print_json,
)
from evoinstruct.store.seeds import FORMATS_HELP

seed_app = typer.Typer(help="Seed the pool with your own task prompts.", no_args_is_help=True)


def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the project in.")] = Path(
        "."
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing evoinstruct.toml.")] = False,
) -> None:
    """Create a project: a commented evoinstruct.toml and example seeds in English and Chinese.

    Example: evoinstruct init my-project
    """
    from evoinstruct.graph.project import init_project

    project = init_project(directory, force=force)
    console.print(f"Created {project.config_path}")
    console.print(f"Example seeds in {project.root / 'seeds'}; add them with:")
    seeds = project.root / "seeds"
    # Commands print whole, never wrapped, so they can be copied.
    console.print(
        f"  evoinstruct seed add {seeds / 'seed_tasks_en.jsonl'} {seeds / 'seed_tasks_zh.jsonl'} "
        f"--project {project.root}",
        soft_wrap=True,
        markup=False,
    )
    console.print(
        "Then point [models.teacher] in evoinstruct.toml at your model server and run:",
        markup=False,
    )
    console.print(
        f"  evoinstruct models check --project {project.root}", soft_wrap=True, markup=False
    )


@seed_app.command("add")
def seed_add(
    files: Annotated[list[Path], typer.Argument(help="Seed files to import.")],
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"{FORMATS_HELP} (default: detect)."),
    ] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Import task prompts; each file is read whole before anything is written.

    Example: evoinstruct seed add seeds/seed_tasks_zh.jsonl --format selfinstruct
    """
    from evoinstruct.store.seeds import import_seeds, read_seed_file

    proj = open_project(project)
    # Read every file whole first, so one bad file writes nothing at all; then write them
    # in one transaction, from what was read (a file changed in between is not read twice).
    seed_files = [read_seed_file(file, format) for file in files]
    with proj.open_store() as store, store.transaction():
        reports = [import_seeds(store, seeds) for seeds in seed_files]
    if as_json:
        print_json([r.__dict__ for r in reports])
        return
    for r in reports:
        console.print(
            f"{r.path}: {r.format}, {r.records} records, {r.examples} examples: "
            f"{r.inserted} new, {r.duplicates} already in the pool; "
            f"{r.accepted} with an answer, {r.waiting_for_output} waiting for one"
        )


def status(project: ProjectOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Pool counts by status, source and round; the active model; the daemon.

    Example: evoinstruct status --json
    """
    from evoinstruct.graph.status import status_report

    report = status_report(open_project(project))
    if as_json:
        print_json(report)
        return
    ex = report["examples"]
    table = Table(title=f"Pool: {ex['total']} examples, {report['rounds']} rounds finished")
    table.add_column("by status")
    table.add_column("n", justify="right")
    table.add_column("by source")
    table.add_column("n", justify="right")
    statuses = list(ex["by_status"].items())
    sources = list(ex["by_source"].items())
    for i in range(max(len(statuses), len(sources))):
        s = statuses[i] if i < len(statuses) else ("", "")
        o = sources[i] if i < len(sources) else ("", "")
        table.add_row(s[0], str(s[1]), o[0], str(o[1]))
    console.print(table)
    rounds = ", ".join(f"{k}: {v}" for k, v in ex["by_round"].items())
    console.print(f"Examples by round: {rounds or 'none'}")
    console.print(f"Rejections recorded: {report['rejections']}")
    console.print(f"Active student: {report['active_model'] or 'none (the teacher generates)'}")
    daemon = report["daemon"]
    if daemon and daemon.get("running"):
        console.print(
            f"Daemon: running, pid {daemon['pid']}, round {daemon['round']}, stage {daemon['stage']}, "
            f"last heartbeat {daemon['heartbeat_at']}"
        )
    else:
        console.print("Daemon: not running")


def export(
    out: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (.json, .jsonl, .parquet).")
    ],
    format: Annotated[
        str, typer.Option("--format", "-f", help="alpaca|sharegpt|openai|parquet.")
    ] = "alpaca",
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Statuses to include, or 'all' (default accepted)."),
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Sources to include.")
    ] = None,
    round: Annotated[
        int | None, typer.Option("--round", help="Only examples created in this round.")
    ] = None,
    min_score: Annotated[
        list[str] | None,
        typer.Option("--min-score", help="DIM=X: keep examples scoring at least X on DIM."),
    ] = None,
    with_lineage: Annotated[
        bool, typer.Option("--with-lineage", help="Add id, parent, operation, round, scores.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Export the pool for LLaMA-Factory, TRL or `datasets`.

    Example: evoinstruct export --format sharegpt -o data.jsonl --min-score accuracy=4.5
    """
    from evoinstruct.store.export import ExportFilter, parse_min_score
    from evoinstruct.store.export import export as run_export

    filt = ExportFilter(
        statuses=list(status or ["accepted"]),
        sources=list(source or []),
        round=round,
        min_scores=parse_min_score(list(min_score or [])),
    )
    with open_project(project).open_store() as store:
        n = run_export(store, format, out, filt, with_lineage=with_lineage)
    console.print(f"Wrote {n} examples to {out} ({format})")


# --- the daemon -------------------------------------------------------------------------
