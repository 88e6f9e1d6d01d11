"""The `evoinstruct` command line: each command parses, calls one library function, prints.

Exit codes: 0 success; 2 bad input or usage (one line naming file, line and field);
1 a failure at run time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from evoinstruct.cli.commands import browse as browse_cmds
from evoinstruct.cli.commands import filter as filter_cmds
from evoinstruct.cli.commands import inspect as inspect_cmds
from evoinstruct.cli.commands import pool
from evoinstruct.cli.commands import report as report_cmds
from evoinstruct.cli.commands import run as run_cmds
from evoinstruct.cli.commands import train as train_cmds
from evoinstruct.cli.commands.models import models_app
from evoinstruct.models.threads import sleep_idle_threads
from evoinstruct.store.errors import EvoError

app = typer.Typer(
    help="Grow and clean an instruction-tuning pool with agents, and train a student on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


# Every command lives in the module of its room; this is where they are assembled.
app.command()(pool.init)
app.add_typer(pool.seed_app, name="seed")
app.command()(pool.status)
app.command()(pool.export)
app.command()(run_cmds.run)
app.command()(run_cmds.stop)
app.add_typer(inspect_cmds.inspect_app, name="inspect")
app.command()(report_cmds.report)
app.command()(run_cmds.demo)
app.command("filter")(filter_cmds.filter_cli)
app.command()(train_cmds.train)
app.command()(train_cmds.evaluate)
app.command("eval")(train_cmds.eval_suite)
app.command()(train_cmds.promote)
app.command()(train_cmds.rollback)
models_app.command("list")(train_cmds.models_list)
app.add_typer(models_app, name="models")
app.command()(browse_cmds.browse)


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
    sleep_idle_threads()  # before a command imports torch or ctranslate2 (models.threads)
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
