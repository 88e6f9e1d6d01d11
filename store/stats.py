"""Read-only queries over a plain sqlite3 connection.

`evoinstruct status` runs these without importing sqlite-utils (which pulls in
pandas and costs 300 ms), so it answers in well under 200 ms on a large pool;
the Store uses the same functions, so there is one definition of each count.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from evoinstruct.store.records import STATUSES


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def _grouped(conn: sqlite3.Connection, column: str) -> dict[str, int]:
    rows = conn.execute(f"SELECT {column}, count(*) FROM examples GROUP BY {column}").fetchall()
    return {str(r[0]): r[1] for r in rows}


def pool_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Counts by status, source and round, read in one transaction (one consistent snapshot)."""
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")
    try:
        by_status = _grouped(conn, "status")
        by_source = _grouped(conn, "source")
        by_round = _grouped(conn, "round")
        rounds = conn.execute(
            "SELECT count(*) FROM rounds WHERE finished_at IS NOT NULL"
        ).fetchone()[0]
        rejections = conn.execute("SELECT count(*) FROM rejections").fetchone()[0]
    finally:
        if own_transaction:
            conn.execute("COMMIT")
    return {
        "total": sum(by_status.values()),
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "by_source": by_source,
        "by_round": by_round,
        "rounds_finished": rounds,
        "rejections": rejections,
    }


def active_history(conn: sqlite3.Connection) -> list[str | None]:
    """The stack of active student versions, replaying promotions and rollbacks."""
    stack: list[str | None] = [None]
    for version, action in conn.execute("SELECT version, action FROM promotions ORDER BY id"):
        if action == "promote":
            stack.append(version)
        elif len(stack) > 1:
            stack.pop()
    return stack


def daemon_info(conn: sqlite3.Connection) -> dict[str, Any] | None:
    cursor = conn.execute("SELECT * FROM daemon WHERE id = 1")
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([c[0] for c in cursor.description], row, strict=True))
