"""Opening the pool database: WAL, a busy timeout, and the schema's numbered migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("evoinstruct.pool")

BUSY_TIMEOUT_MS = 30_000


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["examples"].create(
        {
            "id": str,
            "instruction": str,
            "input": str,
            "output": str,
            "system": str,
            "source": str,
            "parent_id": str,
            "operation": str,
            "round": int,
            "status": str,
            "language": str,
            "model_version": str,
            "template": str,
            "depth": int,
            "created_at": str,
            "updated_at": str,
            "meta": str,
        },
        pk="id",
        not_null={"instruction", "input", "system", "source", "round", "status", "depth"},
        defaults={"input": "", "system": "", "depth": 0, "meta": "{}"},
    )
    for cols in (["status"], ["source"], ["round"], ["parent_id"], ["status", "source"]):
        db["examples"].create_index(cols)
    db["scores"].create(
        {
            "id": str,
            "example_id": str,
            "scorer": str,
            "dimension": str,
            "value": float,
            "raw_output": str,
            "explanation": str,
            "round": int,
            "created_at": str,
        },
        pk="id",
        not_null={"example_id", "scorer", "dimension"},
    )
    db["scores"].create_index(["example_id"])
    db["scores"].create_index(["scorer", "dimension"])
    db["rejections"].create(
        {
            "id": str,
            "example_id": str,
            "text": str,
            "stage": str,
            "reason": str,
            "evidence": str,
            "raw_output": str,
            "round": int,
            "created_at": str,
        },
        pk="id",
        not_null={"stage", "reason"},
    )
    db["rejections"].create_index(["stage", "reason"])
    db["rejections"].create_index(["example_id"])
    db["rejections"].create_index(["round"])
    db["rounds"].create(
        {
            "number": int,
            "phase": str,
            "started_at": str,
            "finished_at": str,
            "counts": str,
            "config": str,
            "model_version": str,
        },
        pk="number",
    )
    db["model_versions"].create(
        {
            "version": str,
            "number": int,
            "base": str,
            "method": str,
            "path": str,
            "round": int,
            "metrics": str,
            "config": str,
            "created_at": str,
        },
        pk="version",
    )
    db["promotions"].create(
        {"id": int, "version": str, "action": str, "reason": str, "at": str},
        pk="id",
    )
    db["manifests"].create(
        {"version": str, "example_id": str, "role": str}, pk=("version", "example_id")
    )
    db["response_cache"].create(
        {"key": str, "model_id": str, "value": str, "created_at": str}, pk="key"
    )
    db["daemon"].create(
        {
            "id": int,
            "pid": int,
            "round": int,
            "stage": str,
            "started_at": str,
            "heartbeat_at": str,
            "state": str,
        },
        pk="id",
    )


@migrations()
def m002_eval_suites(db: sqlite_utils.Database) -> None:
    # The held-out verifiable suite lives beside the pool, never in `examples`: nothing
    # that exports or trains from the pool can reach it.
    db["eval_suites"].create(
        {"hash": str, "created_at": str, "selected": int, "items": int, "meta": str},
        pk="hash",
        not_null={"items"},
        defaults={"meta": "{}"},
    )
    db["eval_items"].create(
        {
            "suite": str,
            "position": int,
            "key": str,
            "source": str,
            "language": str,
            "task": str,
            "prompt": str,
            "constraints": str,
        },
        pk=("suite", "position"),
        not_null={"key", "source", "prompt", "constraints"},
        foreign_keys=[("suite", "eval_suites", "hash")],
    )
    db["eval_results"].create(
        {
            "id": str,
            "suite": str,
            "label": str,
            "version": str,
            "identity": str,
            "settings": str,
            "metrics": str,
            "items": str,
            "created_at": str,
        },
        pk="id",
        not_null={"suite", "label", "identity"},
        foreign_keys=[("suite", "eval_suites", "hash")],
    )
    db["eval_results"].create_index(["suite", "label"])
    db["eval_results"].create_index(["version"])


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


# Migrations kept in their own modules register here, after the ones above: the order
# of registration is the order they are applied in.
from evoinstruct.store import counts as _counts  # noqa: E402, F401  (m003_status_counts)
from evoinstruct.store import selector_log as _selector_log  # noqa: E402, F401  (m004_selector_log)

# isort: split
from evoinstruct.store import generation_calls as _generation_calls  # noqa: E402, F401  (m005)
