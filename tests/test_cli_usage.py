"""Usage errors, --version, help and the global --project, through the installed console script.

These run `evoinstruct` as a user does, in a subprocess: the bug they guard against (usage
errors printed as tracebacks) lived in the entry point's exception handling, which an
in-process runner can paper over.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.cli_helpers import CliResult

EVOINSTRUCT = Path(sys.executable).with_name("evoinstruct")


def evoinstruct(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    assert EVOINSTRUCT.is_file(), f"console script not installed at {EVOINSTRUCT}"
    # A project set in the developer's shell must not leak into what these tests see.
    base = {k: v for k, v in os.environ.items() if k != "EVOINSTRUCT_PROJECT"}
    proc = subprocess.run(
        [str(EVOINSTRUCT), *map(str, args)],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("args", "expected", "help_hint"),
    [
        (["nosuchcmd"], "No such command 'nosuchcmd'", "evoinstruct --help"),
        (["status", "--bogus"], "No such option: --bogus", "evoinstruct status --help"),
        (["run", "--rounds", "abc"], "'--rounds'", "evoinstruct run --help"),
        (["inspect", "checkpoints"], "Missing option '--round'", "evoinstruct inspect checkpoints"),
        (["seed", "add"], "Missing argument", "evoinstruct seed add --help"),
        (["-p", ".", "init"], "'init' does not take --project", "evoinstruct --help"),
    ],
    ids=[
        "unknown-command",
        "unknown-option",
        "malformed-value",
        "missing-option",
        "missing-arg",
        "global-project-unused",
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], expected: str, help_hint: str
) -> None:
    result = evoinstruct(*args, cwd=tmp_path)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err + result.out
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert expected in lines[0] and help_hint in lines[0]
    assert result.out == ""
    assert not (tmp_path / "evoinstruct.toml").exists()  # the rejected `init` did nothing


def test_version(tmp_path: Path) -> None:
    result = evoinstruct("--version", cwd=tmp_path)
    assert result.code == 0 and result.err == ""
    assert result.out == f"evoinstruct {version('evoinstruct')}\n"


def test_help_still_works(tmp_path: Path) -> None:
    top = evoinstruct("--help", cwd=tmp_path)
    assert top.code == 0 and "Usage: evoinstruct" in top.out
    assert "--version" in top.out and "--project" in top.out
    sub = evoinstruct("inspect", "checkpoints", "--help", cwd=tmp_path)
    assert sub.code == 0 and "--round" in sub.out
    # No command at all: the help, not a traceback; exit 2 as click's no_args_is_help gives.
    bare = evoinstruct(cwd=tmp_path)
    assert bare.code == 2 and "Usage: evoinstruct" in bare.out + bare.err
    assert "Traceback" not in bare.out + bare.err


def test_project_before_the_command(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # the working directory is not the project
    elsewhere.mkdir()
    assert evoinstruct("init", tmp_path / "proj", cwd=elsewhere).code == 0
    proj = tmp_path / "proj"
    seeds = proj / "seeds" / "seed_tasks_en.jsonl"
    added = evoinstruct("-p", proj, "seed", "add", seeds, cwd=elsewhere)
    assert added.code == 0, added.err

    before = evoinstruct("--project", proj, "status", "--json", cwd=elsewhere)
    after = evoinstruct("status", "--json", "--project", proj, cwd=elsewhere)
    assert before.code == after.code == 0, before.err + after.err
    assert before.json() == after.json()
    assert before.json()["examples"]["total"] == 8

    # The command's own --project wins over the global one; the global one over the env var.
    own_wins = evoinstruct("-p", elsewhere, "status", "--json", "-p", proj, cwd=elsewhere)
    assert own_wins.code == 0 and own_wins.json() == after.json()
    env = {"EVOINSTRUCT_PROJECT": str(elsewhere)}
    beats_env = evoinstruct("-p", proj, "status", "--json", cwd=elsewhere, env=env)
    assert beats_env.code == 0 and beats_env.json() == after.json()
    from_env = evoinstruct("status", "--json", cwd=tmp_path, env={"EVOINSTRUCT_PROJECT": str(proj)})
    assert from_env.code == 0 and from_env.json() == after.json()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--rounds", "-1"], "'--rounds'"),
        (["run", "--max-seconds", "-5"], "'--max-seconds'"),
        (["inspect", "checkpoints", "--round", "0"], "'--round'"),
        (["inspect", "checkpoints", "--round", "999"], "there is no round 999"),
    ],
    ids=["negative-rounds", "negative-seconds", "round-zero", "round-unknown"],
)
def test_impossible_numbers_are_refused(tmp_path: Path, args: list[str], expected: str) -> None:
    """Values a command cannot honour are usage errors, not a silent exit 0."""
    assert evoinstruct("init", tmp_path / "p", cwd=tmp_path).code == 0
    result = evoinstruct(*args, "-p", tmp_path / "p", cwd=tmp_path)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.err
    assert "Traceback" not in result.err
