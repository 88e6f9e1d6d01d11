"""What every part of the store shares: the database handle, the clock, JSON columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlite_utils


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text in (None, "") else json.loads(text)


class StoreBase:
    db: sqlite_utils.Database

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One atomic unit of writes; nested use becomes a savepoint.

        The outermost level takes the write lock up front (`BEGIN IMMEDIATE`). A deferred
        BEGIN that reads and then writes must upgrade its lock, and SQLite refuses that
        upgrade at once while another writer holds it ("database is locked"), whatever the
        busy timeout; taking the lock first makes concurrent writers wait their turn.
        """
        conn = self.db.conn
        if conn.in_transaction:
            with self.db.atomic() as db:
                yield db
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def _query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))
