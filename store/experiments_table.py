"""The experiments table (weak-to-strong runs: plan and result), a migration of its own.

Imported by `open_store_db` after the other modules' migrations, so it is applied after
them (registration order is the order of application).
"""

from __future__ import annotations

import sqlite_utils

from evoinstruct.store.db import migrations


@migrations()
def m008_experiments(db: sqlite_utils.Database) -> None:
    db["experiments"].create(
        {
            "name": str,
            "kind": str,
            "round": int,
            "created_at": str,
            "finished_at": str,
            "plan": str,
            "result": str,
        },
        pk="name",
        not_null={"kind", "created_at", "plan"},
    )
    db["experiments"].create_index(["kind", "created_at"])
