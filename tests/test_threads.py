"""Idle OpenMP threads sleep in every process that may run torch or CTranslate2 (models.threads)."""

from __future__ import annotations

import os

import pytest

from evoinstruct.models.threads import WAIT_POLICY_VARIABLE, sleep_idle_threads


def test_passive_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAIT_POLICY_VARIABLE, raising=False)
    assert sleep_idle_threads() == "PASSIVE"
    assert os.environ[WAIT_POLICY_VARIABLE] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY_VARIABLE, "ACTIVE")
    assert sleep_idle_threads() == "ACTIVE"
    assert os.environ[WAIT_POLICY_VARIABLE] == "ACTIVE"


def test_the_cli_entry_sets_it_before_any_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from evoinstruct.cli.main import main

    monkeypatch.delenv(WAIT_POLICY_VARIABLE, raising=False)
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert os.environ[WAIT_POLICY_VARIABLE] == "PASSIVE"


def test_the_trainer_entry_sets_it_before_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    from evoinstruct.trainer.__main__ import main

    monkeypatch.delenv(WAIT_POLICY_VARIABLE, raising=False)
    with pytest.raises(SystemExit):
        main(["--no-such-flag"])
    assert os.environ[WAIT_POLICY_VARIABLE] == "PASSIVE"


def test_ctranslate2_is_imported_through_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ctranslate2")
    from evoinstruct.models.ct2_engine import require_ctranslate2

    monkeypatch.delenv(WAIT_POLICY_VARIABLE, raising=False)
    require_ctranslate2()
    assert os.environ[WAIT_POLICY_VARIABLE] == "PASSIVE"


def test_no_entry_point_loads_an_openmp_library_before_the_policy_is_set() -> None:
    """The policy is read once, when torch's or CTranslate2's OpenMP loads: importing the CLI
    or the trainer's entry must not load either, and the in-process backend sets the policy
    on import, before any of its functions imports torch (library use, `langgraph dev`)."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "import evoinstruct.cli.main, evoinstruct.trainer.__main__\n"
        "print(sorted(m for m in ('torch', 'ctranslate2') if m in sys.modules))\n"
        f"print(os.environ.get({WAIT_POLICY_VARIABLE!r}))\n"
        "import evoinstruct.models.transformers_backend\n"
        f"print(os.environ.get({WAIT_POLICY_VARIABLE!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["[]", "None", "PASSIVE"]
