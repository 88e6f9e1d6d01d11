"""Is a daemon running for this project? The store's heartbeat plus a check that its pid lives."""

from __future__ import annotations

import os
from typing import Any


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def with_liveness(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last heartbeat, with `running` true only while that process is alive."""
    if info is None:
        return None
    alive = info["state"] in ("starting", "running") and pid_alive(info["pid"])
    return {**info, "running": alive}
