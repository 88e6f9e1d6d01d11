"""What every CLI module shares: the common options, opening the project, printing JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from graph.project import Project

console = Console()

ProjectOpt = Annotated[
    Path,
    typer.Option(
        "--project", "-p", envvar="EVOINSTRUCT_PROJECT", help="Project directory.", show_default="."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def open_project(path: Path) -> Project:
    """The project at `path`; a clear error when it was never initialised."""
    from graph.project import Project

    return Project(path.resolve()).require()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
