"""Opening the pool database: WAL, a busy timeout, and the schema's numbered migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from evoinstruct.store.migrations import migrations

BUSY_TIMEOUT_MS = 30_000


def open_store_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the pool database with WAL and all migrations applied."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    with db.ensure_autocommit_on():
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
    migrations.apply(db)
    return db
