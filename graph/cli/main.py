"""The `evoinstruct` command line: each command parses, calls one library function, prints.

Exit codes: 0 success; 2 bad input or usage (one line naming file, line and field);
1 a failure at run time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

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
from evoinstruct.store.errors import EvoError
from evoinstruct.store.seeds import FORMATS_HELP

app = typer.Typer(
    help="Grow and clean an instruction-tuning pool with agents, and train a student on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
seed_app = typer.Typer(help="Seed the pool with your own task prompts.", no_args_is_help=True)
app.add_typer(seed_app, name="seed")
inspect_app = typer.Typer(
    help="Look into rounds, checkpoints, lineages and rejections.", no_args_is_help=True
)
app.add_typer(inspect_app, name="inspect")


def _click_exceptions() -> ModuleType:
    """The exceptions module of the click that typer itself runs on.

    typer >= 0.29 vendors click as `typer._click`; older releases import the click package. An
    installed standalone click is no evidence of either, so ask typer rather than `import click`.
    """
    import typer.core

    engine = getattr(typer.core, "_click", None) or typer.core.click  # type: ignore[attr-defined]
    return engine.exceptions


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("evoinstruct")
    except PackageNotFoundError:  # run from a source tree that was never pip-installed
        number = "unknown"
    sys.stdout.write(f"evoinstruct {number}\n")
    raise typer.Exit()


def _takes_project(command: Any) -> bool:
    """Whether `command` (or every command of a group) has a --project to inherit into."""
    if any(param.name == "project" for param in command.params):
        return True
    commands = getattr(command, "commands", None) or {}
    return bool(commands) and all(_takes_project(sub) for sub in commands.values())


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
    project: Annotated[
        Path | None,
        typer.Option(
            "--project",
            "-p",
            help="Project directory for the command that follows (its own --project wins).",
            show_default=False,
        ),
    ] = None,
) -> None:
    # Commands read this through cli_common.inherit_project while parsing their own options.
    if project is None or ctx.invoked_subcommand is None:
        return
    command = ctx.command.get_command(ctx, ctx.invoked_subcommand)  # type: ignore[attr-defined]
    if command is not None and not _takes_project(command):
        # Ignoring it would, for `evoinstruct -p P init`, quietly create the project in ".".
        raise _click_exceptions().UsageError(
            f"'{ctx.invoked_subcommand}' does not take --project", ctx
        )


@app.command()
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
    from evoinstruct.store.seeds import add_seed_file, read_seed_file

    proj = open_project(project)
    for file in files:  # Read every file first, so one bad file writes nothing at all.
        read_seed_file(file, format)
    reports = []
    with proj.open_store() as store:
        for file in files:
            reports.append(add_seed_file(store, file, format))
    if as_json:
        print_json([r.__dict__ for r in reports])
        return
    for r in reports:
        console.print(
            f"{r.path}: {r.format}, {r.records} records, {r.examples} examples: "
            f"{r.inserted} new, {r.duplicates} already in the pool; "
            f"{r.accepted} with an answer, {r.waiting_for_output} waiting for one"
        )


def status_report(proj) -> dict[str, Any]:
    """What `status --json` prints; plain sqlite3 reads, so it is fast on a large pool."""
    from evoinstruct.graph.daemon.liveness import with_liveness
    from evoinstruct.store import stats

    conn = stats.connect_readonly(proj.pool_path)
    try:
        pool = stats.pool_stats(conn)
        active = stats.active_history(conn)[-1]
        daemon = stats.daemon_info(conn)
    finally:
        conn.close()
    return {
        "examples": {
            "total": pool["total"],
            "by_status": pool["by_status"],
            "by_source": pool["by_source"],
            "by_round": pool["by_round"],
        },
        "rounds": pool["rounds_finished"],
        "rejections": pool["rejections"],
        "active_model": active,
        "daemon": with_liveness(daemon),
    }


@app.command()
def status(project: ProjectOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Pool counts by status, source and round; the active model; the daemon.

    Example: evoinstruct status --json
    """
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


@app.command()
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


@app.command()
def run(
    rounds: Annotated[
        int,
        typer.Option("--rounds", "-n", help="Rounds to run (after resuming an unfinished one)."),
    ] = 1,
    forever: Annotated[bool, typer.Option("--forever", help="Run rounds until stopped.")] = False,
    max_seconds: Annotated[
        float | None,
        typer.Option("--max-seconds", help="Stop at the next step boundary after this long."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; log to daemon.log.")
    ] = False,
    no_check: Annotated[
        bool,
        typer.Option("--no-check", help="Start without first checking that the models answer."),
    ] = False,
    project: ProjectOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Run the evolution daemon: resume an unfinished round, then run new ones.

    Ctrl-C or SIGTERM stops at the next step boundary (exit 0); a second Ctrl-C forces.
    Example: evoinstruct run --rounds 3 --set loop.generate_calls=4
    """
    import asyncio

    from evoinstruct.graph.cli.progress import ProgressView
    from evoinstruct.graph.daemon.loop import DaemonOptions
    from evoinstruct.graph.daemon.runner import check_models_answer, run_daemon
    from evoinstruct.graph.daemon.runner import detach as start_detached

    proj = open_project(project)
    proj.load_config(set_ or [])  # a bad config fails here, before anything starts
    if detach:
        if not no_check:
            # Fail here, where the user is looking, rather than in the log of a dead daemon.
            asyncio.run(check_models_answer(proj, list(set_ or [])))
        args = ["run", "--project", str(proj.root), "--rounds", str(rounds)]
        args += ["--forever"] if forever else []
        args += ["--max-seconds", str(max_seconds)] if max_seconds is not None else []
        args += ["--no-check"] if no_check else []
        for item in set_ or []:
            args += ["--set", item]
        pid = start_detached(proj, args)
        console.print(f"Daemon started, pid {pid}; log: {proj.log_path}")
        console.print("Follow it with `evoinstruct status`; stop it with `evoinstruct stop`.")
        return
    options = DaemonOptions(rounds=rounds, forever=forever, max_seconds=max_seconds)
    with ProgressView() as view:
        result = asyncio.run(
            run_daemon(proj, list(set_ or []), options, view, check_models=not no_check)
        )
    done = ", ".join(map(str, result.rounds_run)) or "none"
    console.print(
        f"Rounds finished: {done}" + ("; stopped on request" if result.stopped_by_signal else "")
    )


@app.command()
def stop(
    project: ProjectOpt = Path("."),
    wait: Annotated[float, typer.Option(help="Seconds to wait for the daemon to exit.")] = 120.0,
) -> None:
    """Ask a running daemon to stop at its next step boundary, and wait for it.

    Example: evoinstruct stop --project my-project
    """
    from evoinstruct.graph.daemon.runner import request_stop

    pid = request_stop(open_project(project), wait_s=wait)
    console.print("No daemon is running." if pid is None else f"Daemon pid {pid} stopped.")


# --- inspection ---------------------------------------------------------------------------


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
    round: Annotated[int, typer.Option("--round", "-r", help="Round number.")],
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """The LangGraph checkpoint history of one round: step, node, time, what changed.

    Example: evoinstruct inspect checkpoints --round 3
    """
    import asyncio

    from evoinstruct.graph.inspect import checkpoints_report

    rows = asyncio.run(checkpoints_report(open_project(project), round))
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


@app.command()
def report(
    project: ProjectOpt = Path("."),
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory (default <project>/reports)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write PNG plots and one self-contained HTML page about the pool, the rounds and the students.

    Example: evoinstruct report -o /tmp/report
    """
    from evoinstruct.graph.cli.report import report_command

    raise typer.Exit(report_command(project, out, as_json))


# --- the offline demo ---------------------------------------------------------------------

DEMO_INTRO = (
    "[bold]evoinstruct demo[/]: the whole loop on this machine, offline, in a few minutes. "
    "Two tiny llama-shaped models are built here with random weights; the teacher is warmed up "
    "for a few steps on the 16 example seeds so that it learns to stop. [bold]They write nonsense.[/] "
    "Watch what every stage does with it: the filters, the store, the checkpoints, a LoRA training "
    "of the student, its evaluation and promotion, and a round with the student generating.\n"
)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the demo project.")
    ] = Path("demo-project"),
    force: Annotated[
        bool, typer.Option("--force", help="Start over in a non-empty directory.")
    ] = False,
) -> None:
    """Run the whole loop offline on tiny local models: seeds, rounds, training, promotion.

    Example: evoinstruct demo --dir demo-project --force
    """
    import asyncio
    import time

    from evoinstruct.graph.cli.progress import ProgressView
    from evoinstruct.graph.demo import run_demo

    console.print(DEMO_INTRO)
    started = time.monotonic()
    with ProgressView() as view:
        result = asyncio.run(run_demo(directory, view, force=force))
    root = result.project.root
    with result.project.open_store() as store:
        stats = store.pool_stats()
        rejections = store.rejections()
    console.print(
        f"\n[bold]Done in {time.monotonic() - started:.0f} s[/]: rounds {', '.join(map(str, result.rounds))}."
    )
    console.print(
        f"Pool: {stats['total']} examples — by status {stats['by_status']}, by source {stats['by_source']}."
    )
    counts: dict[tuple[str, str], int] = {}
    for row in rejections:
        counts[(row["stage"], row["reason"])] = counts.get((row["stage"], row["reason"]), 0) + 1
    console.print("What the filters did with the nonsense:")
    for (stage, reason), n in sorted(counts.items(), key=lambda kv: -kv[1])[:10]:
        console.print(f"  {stage:>9} {reason}: {n}")
    for version in result.versions:
        gate = (version["metrics"].get("evaluation") or {}).get("gate") or {}
        console.print(f"Student {version['version']}: {gate.get('reason', 'not evaluated')}")
    console.print(f"Active student (the generator now): {result.active or 'none'}")
    console.print("\nLook at what it made:")
    for command in (
        "status",
        "inspect rounds",
        "inspect rejections",
        "inspect checkpoints --round 4",
        "models list",
        "report",
        "export --format sharegpt -o demo.jsonl --with-lineage",
    ):
        console.print(f"  evoinstruct {command} --project {root}", soft_wrap=True, markup=False)


# --- the trainer by hand, models -------------------------------------------------------------

from evoinstruct.graph.cli import filter as cli_filter  # noqa: E402  (kept beside their registration)
from evoinstruct.graph.cli import train as cli_train  # noqa: E402
from evoinstruct.graph.cli.models import models_app  # noqa: E402

app.command("filter")(cli_filter.filter_cli)
app.command()(cli_train.train)
app.command()(cli_train.evaluate)
app.command()(cli_train.promote)
app.command()(cli_train.rollback)
models_app.command("list")(cli_train.models_list)
app.add_typer(models_app, name="models")


def _usage_line(exc: Any) -> str:
    """One line, git-style: what was wrong, then where the help for it is."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)  # None for some parser errors: then there is no command path
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message = message.removesuffix(".")
        message += f" (see '{ctx.command_path} {ctx.help_option_names[0]}')"
    return f"error: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point: library and usage errors become one line on stderr and their exit code."""
    errors = _click_exceptions()
    try:
        # prog_name fixed so messages name `evoinstruct` also when called in-process by tests.
        code = app(args=argv, prog_name="evoinstruct", standalone_mode=False)
    except EvoError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(exc.exit_code) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        sys.stderr.write("aborted\n")
        raise SystemExit(1) from None
    except errors.ClickException as exc:
        no_args_help = getattr(errors, "NoArgsIsHelpError", None)
        if no_args_help is not None and isinstance(exc, no_args_help):
            # Carries the help text; typer's rich help has already printed it to stdout.
            if exc.format_message().strip():
                exc.show()
        elif isinstance(exc, errors.UsageError):
            sys.stderr.write(_usage_line(exc))
        else:
            sys.stderr.write(f"error: {' '.join(exc.format_message().split())}\n")
        raise SystemExit(exc.exit_code) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
