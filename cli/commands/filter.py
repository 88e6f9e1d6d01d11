"""`evoinstruct filter IN -o OUT`: clean an existing data set with the critic, rewriter and selector.

`filter_command` loads the config (the project's evoinstruct.toml when
`--project` has one, else the defaults, then `--set`), builds the models with
the work store as their response cache, runs `graph.filter_pipeline.run_filter`
and prints a summary. `filter_cli` is the typer command the root CLI registers:
`app.command("filter")(cli_filter.filter_cli)`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from evoinstruct.cli.common import inherit_project
from evoinstruct.cli.filtering.steps import DEFAULT_STEPS, STEPS
from evoinstruct.store.seeds import FORMATS_HELP

if TYPE_CHECKING:
    from evoinstruct.cli.filtering.report import FilterReport

console = Console()
err_console = Console(stderr=True)


def _load(project_root: Path | None, overrides: list[str]):
    """The run config and the prompt override directory (None without a project)."""
    from evoinstruct.graph.config import load_config
    from evoinstruct.graph.project import CONFIG_NAME, Project

    if project_root is not None and (Path(project_root) / CONFIG_NAME).is_file():
        project = Project(Path(project_root).resolve())
        return project.load_config(overrides), project.prompts_dir
    return load_config(None, overrides), None


def _progress(kind: str, event: dict[str, Any]) -> None:
    """One line on stderr per finished stage (stdout stays for the summary or JSON)."""
    from evoinstruct.cli.progress import ProgressView

    if kind == "event" and event.get("final"):
        summary = ProgressView.summary(event)
        err_console.print(f"{event['stage']}: {event.get('done')}/{event.get('total')} {summary}")


def _summary(report: FilterReport) -> None:
    console.print(
        f"Kept {report.kept_count} of {report.input_count} examples "
        f"({report.dropped_count} dropped"
        + (f", {report.rewritten_count} rewritten" if report.rewritten_count else "")
        + f"); steps: {','.join(report.steps)}"
        + ("; resumed" if report.resumed else "")
    )
    if report.counts:
        table = Table(title="dropped by stage and reason")
        for column in ("stage", "reason", "n"):
            table.add_column(column, justify="right" if column == "n" else "left")
        for stage, reasons in report.counts.items():
            for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
                table.add_row(stage, reason, str(n))
        console.print(table)
    if report.unscored_thresholds:
        console.print(
            "Thresholds left out, no chosen step scores them: "
            + ", ".join(report.unscored_thresholds),
            markup=False,
        )
    console.print(f"Wrote {report.out_path} ({report.format})", markup=False)
    console.print(f"Rejection report: {report.report_path}", markup=False)
    console.print(f"Work store (resume, response cache): {report.work_dir}", markup=False)
    if report.unfinished:
        reasons = ", ".join(f"{r} {n}" for r, n in report.unfinished.items())
        console.print(
            f"[yellow]{report.unfinished_count} examples are unfinished ({reasons}); "
            "run the same command again to retry them.[/]"
        )


def filter_command(
    input: Path,
    out: Path,
    steps: str | None,
    budget: int | None,
    fmt: str | None,
    work_dir: Path | None,
    project_root: Path | None,
    overrides: list[str],
    as_json: bool,
    *,
    eval_files: list[Path] | None = None,
    input_format: str | None = None,
) -> int:
    """Run the filter and print what it did; 0 when every example was decided, 1 when some are unfinished.

    Bad input (steps, format, files, config) raises InputError (exit code 2 in `main`).
    """
    from evoinstruct.cli.filtering.pipeline import parse_steps, run_filter
    from evoinstruct.models.factory import ModelSet
    from evoinstruct.prompts.library import PromptLibrary

    chosen = parse_steps(steps)
    config, prompts_dir = _load(project_root, list(overrides))
    if eval_files:
        decontam = config.selector.decontam
        decontam.eval_files = [*decontam.eval_files, *(str(p) for p in eval_files)]
    fmt = fmt or ("parquet" if Path(out).suffix.lower() == ".parquet" else "alpaca")
    report = asyncio.run(
        run_filter(
            input,
            out,
            config=config,
            models=lambda store: ModelSet(config.models, config.roles, cache=store),
            steps=chosen,
            budget=budget,
            fmt=fmt,
            work_dir=work_dir,
            progress=None if as_json else _progress,
            input_format=input_format,
            prompts=PromptLibrary(config.project.language, override_dir=prompts_dir),
        )
    )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        _summary(report)
    return 1 if report.unfinished else 0


def filter_cli(
    input: Annotated[Path, typer.Argument(help="Data set to clean (any format `seed add` reads).")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Where to write the kept examples.")],
    steps: Annotated[
        str | None,
        typer.Option(
            "--steps",
            help=f"Comma-separated, from {','.join(STEPS)} (default {','.join(DEFAULT_STEPS)}).",
        ),
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", help="Keep at most this many examples.")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="alpaca|sharegpt|openai|parquet (default: from OUT's suffix)."
        ),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option("--input-format", help=f"{FORMATS_HELP}."),
    ] = None,
    eval_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval-file", help="Evaluation data for the decontaminate step (repeatable)."
        ),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option("--work-dir", help="Work store for resuming (default: OUT.work/)."),
    ] = None,
    project: Annotated[
        Path,
        typer.Option(
            "--project",
            "-p",
            envvar="EVOINSTRUCT_PROJECT",
            help="Project whose config to use.",
            callback=inherit_project,
        ),
    ] = Path("."),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Clean an existing data set the AlpaGasus or Deita way; re-running resumes.

    Example: evoinstruct filter alpaca_data.json -o clean.jsonl --steps dedup,judge,diversity --budget 9000
    """
    code = filter_command(
        input,
        out,
        steps,
        budget,
        format,
        work_dir,
        project,
        list(set_ or []),
        as_json,
        eval_files=list(eval_file or []),
        input_format=input_format,
    )
    if code:
        raise typer.Exit(code)
