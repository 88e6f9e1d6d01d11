"""Read-only queries over a plain sqlite3 connection.

`evoinstruct status` runs these without importing sqlite-utils (which pulls in
pandas and costs 300 ms), and on a migrated pool reads the counts SQLite
triggers keep (store.counts) rather than counting a million rows; the Store
uses the same functions, so there is one definition of each count.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from evoinstruct.store.records import STATUSES


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def _grouped(conn: sqlite3.Connection, column: str) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT {column}, count(*) FROM examples GROUP BY {column} ORDER BY {column}"
    ).fetchall()
    return {str(r[0]): r[1] for r in rows}


_KEPT_TABLES = (
    "counts_status_source",
    "counts_round",
    "counts_rejections",
    "round_usage",
    "round_setups",
    "round_stage_usage",
)


def _has_counts(conn: sqlite3.Connection) -> bool:
    """Whether the pool keeps trigger-maintained counts (store.counts, migration m003)."""
    marks = ",".join("?" * len(_KEPT_TABLES))
    found = conn.execute(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({marks})",
        _KEPT_TABLES,
    ).fetchone()[0]
    return found == len(_KEPT_TABLES)


_Counts = tuple[dict[str, int], dict[str, int], dict[str, int], int]


def _kept_counts(conn: sqlite3.Connection) -> _Counts:
    """(by status, by source, by round, rejections) from the counts the triggers keep."""
    by_status: dict[str, int] = {}
    by_source: dict[str, int] = {}
    for status, source, n in conn.execute(
        "SELECT status, source, n FROM counts_status_source WHERE n != 0 ORDER BY source"
    ):
        by_status[status] = by_status.get(status, 0) + n
        by_source[source] = by_source.get(source, 0) + n
    by_round = {
        str(r): n
        for r, n in conn.execute("SELECT round, n FROM counts_round WHERE n != 0 ORDER BY round")
    }
    rejections = conn.execute("SELECT n FROM counts_rejections WHERE id = 1").fetchone()[0]
    return by_status, by_source, by_round, rejections


def _counted(conn: sqlite3.Connection) -> _Counts:
    """The same four, counted from the rows: a pool no read-write store has migrated yet."""
    rejections = conn.execute("SELECT count(*) FROM rejections").fetchone()[0]
    return (
        _grouped(conn, "status"),
        _grouped(conn, "source"),
        _grouped(conn, "round"),
        rejections,
    )


def pool_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Counts by status, source and round, read in one transaction (one consistent snapshot).

    On a migrated pool these are the counts SQLite triggers keep (store.counts), a few
    rows however large the pool; `status` opens the pool read-only and cannot migrate
    it, so an older pool is counted row by row instead.
    """
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")
    try:
        read = _kept_counts if _has_counts(conn) else _counted
        by_status, by_source, by_round, rejections = read(conn)
        rounds = conn.execute(
            "SELECT count(*) FROM rounds WHERE finished_at IS NOT NULL"
        ).fetchone()[0]
    finally:
        if own_transaction:
            conn.execute("COMMIT")
    return {**_summary(by_status, by_source, by_round, rejections), "rounds_finished": rounds}


def pool_stats_counted(conn: sqlite3.Connection) -> dict[str, Any]:
    """`pool_stats` counted from the rows, whatever the triggers keep (tests compare both)."""
    return _summary(*_counted(conn))


def _summary(
    by_status: dict[str, int], by_source: dict[str, int], by_round: dict[str, int], rejections: int
) -> dict[str, Any]:
    return {
        "total": sum(by_status.values()),
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "by_source": by_source,
        "by_round": by_round,
        "rejections": rejections,
    }


# Python's defaults (cli.costs.round_costs): a missing count is 0, missing tokens are
# prompt plus completion tokens.
_STAGE_SUMS = """
WITH stage AS (
    SELECT u.setup, coalesce(u.model_version, '') != '' AS student, s.stage AS name,
           coalesce(s.calls, 0) AS calls, coalesce(s.prompt_tokens, 0) AS p,
           coalesce(s.completion_tokens, 0) AS c, s.tokens AS t
    FROM round_stage_usage AS s JOIN round_usage AS u USING (number)
)
SELECT setup, student, name, sum(calls), sum(p), sum(c), sum(coalesce(t, p + c)),
       sum(t < p + c) FROM stage GROUP BY setup, student, name ORDER BY name
"""
_ROUND_SUMS = """
SELECT u.setup, coalesce(u.model_version, '') != '', count(*), sum(coalesce(u.accepted, 0)),
       min(u.number), s.setup
FROM round_usage AS u LEFT JOIN round_setups AS s ON s.id = u.setup
GROUP BY 1, 2 ORDER BY 5
"""


def round_usage_totals(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int] | None:
    """Rounds summed per config: (rows in the shape of `cli.costs.read_rounds`, rounds).

    One row per distinct roles-and-models config and "generated with a student or
    not" (all that decides a stage's model, label and price), its stages' calls and
    tokens and its accepted examples summed over its rounds in SQL, from the copy
    the triggers keep (store.counts). Costing these rows gives the totals costing
    every round gives (up to float rounding), while Python parses one config per
    distinct config instead of one per round (2,000 rounds: ~70 ms → a few ms).
    None on a pool without the kept tables, or when a round records fewer `tokens`
    than prompt plus completion tokens (costing then prices rounds one by one).
    """
    if not _has_counts(conn):
        return None
    stages: dict[tuple[Any, Any], dict[str, dict[str, Any]]] = {}
    for setup, student, name, calls, p, c, t, short in conn.execute(_STAGE_SUMS):
        if short:
            return None
        counters = {"calls": calls, "prompt_tokens": p, "completion_tokens": c, "tokens": t}
        stages.setdefault((setup, student), {})[name] = counters
    rows, total = [], 0
    for setup_id, student, n, accepted, first, setup in conn.execute(_ROUND_SUMS):
        roles, models = (json.loads(setup) if setup else None) or [None, None]
        rows.append(
            {
                "number": first,
                "model_version": "student" if student else None,
                "stages": stages.get((setup_id, student), {}),
                "accepted": accepted,
                "roles": roles or {},
                "models": models or {},
            }
        )
        total += n
    return rows, total


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
