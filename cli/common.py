"""What every CLI module shares: the common options, opening the project, printing JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from evoinstruct.graph.project import Project

console = Console()


def inherit_project(ctx: typer.Context, param: typer.CallbackParam, value: Path) -> Path:
    """The project a command runs on: its own --project, else the one given before it, else env.

    `evoinstruct --project P status` parses P on the root context before `status` parses its
    own options, so reading it here keeps one precedence for every command (own --project, then
    the global one, then EVOINSTRUCT_PROJECT, then "."), without touching os.environ or the
    default_map: click ranks an environment variable above a default_map entry, which would let
    a stale EVOINSTRUCT_PROJECT beat a --project typed on the command line.
    """
    source = ctx.get_parameter_source(param.name or "project")
    # By name: ParameterSource lives in whichever click typer runs on (vendored or not).
    if source is not None and source.name == "COMMANDLINE":
        return value
    root = ctx.find_root()
    given = root.params.get("project") if root is not ctx else None
    return value if given is None else Path(given)


ProjectOpt = Annotated[
    Path,
    typer.Option(
        "--project",
        "-p",
        envvar="EVOINSTRUCT_PROJECT",
        help="Project directory.",
        show_default=".",
        callback=inherit_project,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def open_project(path: Path) -> Project:
    """The project at `path`; a clear error when it was never initialised."""
    from evoinstruct.graph.project import Project

    return Project(path.resolve()).require()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
