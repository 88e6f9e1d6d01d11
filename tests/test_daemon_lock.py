"""A second daemon on one project is refused, naming the daemon that really holds it."""

from __future__ import annotations

import asyncio
import os

import pytest
from filelock import FileLock

from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.store.errors import ProjectError


@pytest.fixture
def deps(scripted_deps):
    return scripted_deps


def _refusal(deps) -> str:
    with FileLock(str(deps.project.lock_path)), pytest.raises(ProjectError) as refused:
        asyncio.run(Daemon(deps.project, deps, DaemonOptions(rounds=1)).run())
    return str(refused.value)


def test_a_stale_heartbeat_is_not_named_as_the_running_daemon(deps) -> None:
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: no process has it
    deps.store.heartbeat(pid=dead_pid, round=3, stage="select", state="running")
    message = _refusal(deps)
    assert "already running" in message and str(dead_pid) not in message
    assert "starting" in message


def test_the_lock_holder_is_named(deps) -> None:
    deps.store.heartbeat(pid=os.getpid(), round=1, stage="plan", state="starting")
    assert f"pid {os.getpid()}" in _refusal(deps)


def test_an_exited_process_not_yet_reaped_is_not_alive() -> None:
    """`evoinstruct stop` polls the daemon's pid: a zombie (exited, its parent not yet
    reaping it) must count as stopped, or stop would wait its whole timeout."""
    import subprocess
    import sys
    import time

    from evoinstruct.graph.daemon.liveness import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 60  # a hang guard: exiting takes a moment
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(child.pid)  # exited, and not reaped: a zombie
        assert child.returncode is None
    finally:
        child.wait()
    assert pid_alive(os.getpid())
