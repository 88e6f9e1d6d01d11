"""Projects wired to a loopback teacher, and daemons run as real subprocesses."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evoinstruct.graph.daemon.command import cli_command

ROOT = Path(__file__).resolve().parents[1]


def configure_for_server(
    project: Path, url: str, *, api_key_env: str = "EVO_TEST_KEY", extra: str = ""
) -> None:
    """Point every role at the loopback server; small rounds so a test stays fast."""
    config = project / "evoinstruct.toml"
    config.write_text(
        f"""
[models.teacher]
backend = "openai"
base_url = "{url}"
model = "tiny"
api_key_env = "{api_key_env}"
max_concurrency = 4
timeout_s = 10
max_retries = 2

[models.student]
backend = "transformers"
path = "unused-in-this-test"

[loop]
generate_calls = 2
evolve_per_round = 4
batch_size = 8
keep_checkpoints = 2
{extra}
""",
        encoding="utf-8",
    )


def start_daemon(
    project: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """`python -m evoinstruct.cli.main run ...` in its own process, as a user would start it."""
    full_env = {**os.environ, **(env or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the process exit
    return subprocess.Popen(
        cli_command("run", "--project", str(project), *args),
        cwd=str(ROOT),
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds; `timeout` only guards a hang (never the synchronization)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def heartbeat(project: Path) -> dict[str, Any] | None:
    """The daemon's heartbeat row in pool.db (pid, round, stage, state, heartbeat_at), if any."""
    conn = sqlite3.connect(project / "pool.db", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM daemon WHERE id = 1").fetchone()
        return None if row is None else dict(row)
    except sqlite3.OperationalError:  # no daemon table yet: nothing has started
        return None
    finally:
        conn.close()


def wait_for_heartbeat(
    process: subprocess.Popen,
    project: Path,
    reached: Callable[[dict[str, Any]], bool],
    *,
    what: str,
    stall_s: float = 120.0,
    log: Path | None = None,
) -> bool:
    """Poll the heartbeat of `process` until `reached(row)` (True) or the process exits (False).

    Only rows written by this process count: a killed daemon's last row stays behind. The
    wait is bounded by progress, not by time: it fails once the heartbeat has not changed
    for `stall_s` seconds, with the row it was stuck at and the end of the daemon's log.
    """
    seen: dict[str, Any] | None = None
    stalled_at = time.monotonic() + stall_s
    while process.poll() is None:
        row = heartbeat(project)
        if row is not None and row["pid"] != process.pid:
            row = None
        # Progress is a new round or stage: a running step renews heartbeat_at by itself.
        if row is not None:
            row = {k: v for k, v in row.items() if k != "heartbeat_at"}
        if row != seen:
            seen, stalled_at = row, time.monotonic() + stall_s
        if row is not None and reached(row):
            return True
        if time.monotonic() > stalled_at:
            process.kill()
            process.wait()
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(
                f"waiting for {what}: the daemon (pid {process.pid}) made no progress in "
                f"{stall_s:.0f} s; its last heartbeat was {seen}\n{tail}"
            )
        time.sleep(0.02)  # poll interval
    return False
