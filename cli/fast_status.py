"""`evoinstruct status --json` without typer: the command scripts and dashboards poll.

Before the `status` command reads a single row, the typer CLI imports every
command module and builds all of them, and typer 0.29 coerces each parameter
through a pydantic TypeAdapter: about 0.3 s of CPU, more than the 200 ms a
poll may take on a pool of a million examples. `run` answers exactly
`[-p P | --project P] status --json [-p P | --project P]` (in any order of the
command's own options, with EVOINSTRUCT_PROJECT as the fallback) from the
library alone, and prints what the typer command prints. Any other command
line gets None back and goes to the full CLI, so help, usage errors and the
table view stay typer's.

`main` is a console-script entry point doing just that.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ENV_PROJECT = "EVOINSTRUCT_PROJECT"
_PROJECT_FLAGS = ("-p", "--project")


def _take_project(args: Sequence[str], i: int) -> tuple[str, int] | None:
    """(value, next index) when args[i] is a project option, else None."""
    arg = args[i]
    if arg in _PROJECT_FLAGS:
        return (args[i + 1], i + 2) if i + 1 < len(args) else None
    if arg.startswith("--project="):
        return arg.partition("=")[2], i + 1
    if arg.startswith("-p") and len(arg) > 2 and not arg.startswith("--"):
        return arg[2:], i + 1
    return None


def parse(args: Sequence[str], environ: Mapping[str, str] | None = None) -> Path | None:
    """The project of a `status --json` command line, or None for any other command line.

    Precedence as in the full CLI (cli.common.inherit_project): the command's own
    --project, then the one given before the command, then EVOINSTRUCT_PROJECT, then ".".
    """
    env = os.environ if environ is None else environ
    given: dict[str, str] = {}
    i, scope, as_json = 0, "root", False
    while i < len(args):
        taken = _take_project(args, i)
        if taken is not None:
            given[scope], i = taken
        elif scope == "root" and args[i] == "status":
            scope, i = "command", i + 1
        elif scope == "command" and args[i] == "--json":
            as_json, i = True, i + 1
        else:
            return None
    if scope != "command" or not as_json:
        return None
    project = given.get("command") or given.get("root") or env.get(ENV_PROJECT) or "."
    return Path(project)


def run(args: Sequence[str], environ: Mapping[str, str] | None = None) -> int | None:
    """Answer a `status --json` command line; its exit code, or None to use the full CLI."""
    project = parse(args, environ)
    if project is None:
        return None
    from evoinstruct.cli.status import status_report
    from evoinstruct.graph.project import Project
    from evoinstruct.store.errors import EvoError

    try:
        report = status_report(Project(project.resolve()).require())
    except EvoError as exc:  # as the full CLI's main() reports library errors
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    # What cli.common.print_json writes (a test holds the two to the same bytes); that
    # module imports typer and rich, the very imports this path exists to skip.
    sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n")
    return 0


def main() -> None:
    code = run(sys.argv[1:])
    if code is None:
        from evoinstruct.cli.main import main as full_cli

        full_cli()
        return
    raise SystemExit(code)


if __name__ == "__main__":
    main()
