"""`status --json` without typer (cli.fast_status) answers as the full CLI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evoinstruct.cli import fast_status
from evoinstruct.store import open_store
from evoinstruct.store.records import ExampleDraft
from tests.cli_helpers import run_cli

ENV = {"EVOINSTRUCT_PROJECT": "from-env"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status", "--json"], "from-env"),
        (["-p", "root", "status", "--json"], "root"),
        (["--project", "root", "status", "--json"], "root"),
        (["--project=root", "status", "--json"], "root"),
        (["-proot", "status", "--json"], "root"),
        (["status", "--json", "-p", "own"], "own"),
        (["status", "-p", "own", "--json"], "own"),
        (["-p", "root", "status", "--json", "--project", "own"], "own"),  # its own wins
        (["-p", "status", "status", "--json"], "status"),  # an option's value, not the command
    ],
)
def test_parse_status_json_command_lines(argv: list[str], expected: str) -> None:
    assert fast_status.parse(argv, ENV) == Path(expected)


def test_without_a_project_anywhere_it_is_the_current_directory() -> None:
    assert fast_status.parse(["status", "--json"], {}) == Path(".")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status"],  # the table view is typer's and rich's
        ["status", "--help"],
        ["status", "--json", "--help"],
        ["--version"],
        ["-p"],
        ["status", "--json", "-p"],  # a missing value is typer's usage error
        ["--json", "status"],  # --json is not a root option
        ["status", "--json", "extra"],
        ["status", "--jsonx"],
        ["stop", "--json"],
        ["inspect", "status", "--json"],
        ["status", "status", "--json"],
    ],
)
def test_any_other_command_line_goes_to_the_full_cli(argv: list[str]) -> None:
    assert fast_status.parse(argv, ENV) is None
    assert fast_status.run(argv, ENV) is None


def test_it_prints_what_the_typer_command_prints(project_dir: Path, capsys) -> None:
    with open_store(project_dir / "pool.db") as store:
        store.add_candidates([ExampleDraft("Name a river.", output="Nile", source="seed")], 0)
    typer_out = run_cli(capsys, "status", "--json", "-p", project_dir).out
    assert fast_status.run(["-p", str(project_dir), "status", "--json"]) == 0
    fast_out = capsys.readouterr().out
    assert fast_out == typer_out
    assert '"accepted": 1' in fast_out


def test_a_directory_that_is_no_project_is_the_same_error(tmp_path: Path, capsys) -> None:
    typer_result = run_cli(capsys, "status", "--json", "-p", tmp_path)
    code = fast_status.run(["status", "--json", "-p", str(tmp_path)])
    captured = capsys.readouterr()
    assert (code, captured.err, captured.out) == (typer_result.code, typer_result.err, "")
    assert code == 2 and "not an evoinstruct project" in captured.err


def test_as_a_program_it_never_imports_typer(project_dir: Path) -> None:
    code = (
        "import sys; from evoinstruct.cli import fast_status as f; "
        f"sys.argv = ['evoinstruct', '-p', {str(project_dir)!r}, 'status', '--json']; "
        "code = f.run(sys.argv[1:]); "
        "assert 'typer' not in sys.modules and 'pydantic' not in sys.modules, 'imported'; "
        "sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"total": 0' in done.stdout
