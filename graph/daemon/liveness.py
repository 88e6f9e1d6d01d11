"""Is a daemon running for this project? The store's heartbeat plus a check that its pid lives."""

from __future__ import annotations

import os
from typing import Any


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` runs: it exists and (where /proc tells) is not a zombie, an
    exited process its parent has not reaped yet (a supervisor that reaps late must not make
    `evoinstruct stop` wait for a daemon that is gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): existing is all we know
    return state not in ("Z", "X")


def with_liveness(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last heartbeat, with `running` true only while that process is alive."""
    if info is None:
        return None
    alive = info["state"] in ("starting", "running") and pid_alive(info["pid"])
    return {**info, "running": alive}
