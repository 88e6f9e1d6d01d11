"""Starting and stopping the daemon for a project: in the foreground, detached, or by request."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from evoinstruct.graph.daemon.command import cli_command
from evoinstruct.graph.daemon.liveness import pid_alive, with_liveness
from evoinstruct.graph.daemon.loop import (
    PIPELINE_ROLES,
    Daemon,
    DaemonOptions,
    DaemonResult,
    ProgressSink,
)
from evoinstruct.graph.project import Project
from evoinstruct.store.errors import EvoError, ModelError, ProjectError


async def run_daemon(
    project: Project,
    overrides: list[str],
    options: DaemonOptions,
    progress: ProgressSink | None = None,
    *,
    models: Any = None,
    check_models: bool = True,
) -> DaemonResult:
    """Load the config, wire the dependencies, check the models answer, hand the active
    student its adapter, run."""
    from evoinstruct.graph.round.deps import deps_for_project

    config = project.load_config(overrides)
    deps = deps_for_project(project, config, models=models)
    try:
        if deps.store.active_model() is not None:
            await _activate(deps)
        preflight = (lambda: _preflight(deps)) if check_models else None
        return await Daemon(project, deps, options, progress, preflight).run()
    finally:
        await deps.models.aclose()
        deps.store.close()


async def _activate(deps: Any) -> None:
    """Hand the active version to the student; a library error (peft, transformers) would
    otherwise reach the user as a traceback on every start."""
    from evoinstruct.graph.round.training import activate_student
    from evoinstruct.store.errors import describe_error

    try:
        await activate_student(deps.store, deps.models)
    except EvoError:
        raise
    except Exception as exc:
        version = deps.store.active_model()["version"]
        raise ModelError(
            f"cannot load the active student {version}: {describe_error(exc)}; "
            "`evoinstruct rollback` goes back to the previous version"
        ) from exc


async def _preflight(deps: Any) -> None:
    """Fail at once, in plain words, when a model the round needs cannot be reached."""
    from evoinstruct.models.check import explain

    failures = await deps.models.preflight(PIPELINE_ROLES)
    if failures:
        reasons = "; ".join(
            f"{name}: {explain(f, deps.config.models[name].for_probe())}"
            for name, f in failures.items()
        )
        raise ModelError(
            f"cannot start the round: {reasons}. `evoinstruct models check` tests every model; "
            "`evoinstruct run --no-check` starts anyway."
        )


async def check_models_answer(project: Project, overrides: list[str]) -> None:
    """The daemon's start-up check, run by `run --detach` before it lets go of the terminal."""
    from evoinstruct.graph.round.deps import deps_for_project

    deps = deps_for_project(project, project.load_config(overrides))
    try:
        await _preflight(deps)
    finally:
        await deps.models.aclose()
        deps.store.close()


def detach(project: Project, argv: list[str]) -> int:
    """Start `evoinstruct run` in a new session with its output in the project's log; returns the pid."""
    current = _running_pid(project)
    if current:
        raise ProjectError(
            f"a daemon is already running on this project (pid {current})", file=str(project.root)
        )
    args = [a for a in argv if a != "--detach"]
    log = project.log_path.open("ab")
    process = subprocess.Popen(
        cli_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(project.root),
    )
    return process.pid


def _running_pid(project: Project) -> int | None:
    from evoinstruct.store import stats

    if not project.pool_path.exists():
        return None
    conn = stats.connect_readonly(project.pool_path)
    try:
        info = with_liveness(stats.daemon_info(conn))
    finally:
        conn.close()
    return info["pid"] if info and info["running"] else None


def request_stop(project: Project, *, wait_s: float = 60.0) -> int | None:
    """Ask a running daemon to stop at its next step boundary; wait for it. Returns its pid."""
    pid = _running_pid(project)
    if pid is None:
        return None
    project.stop_path.touch()  # seen even where signals cannot reach (another user, a container)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + wait_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        raise ProjectError(
            f"daemon pid {pid} did not stop within {wait_s:.0f} s", file=str(project.root)
        )
    return pid
