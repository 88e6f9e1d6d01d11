"""The suite's parts in the store: a migration adding them to `eval_items`."""

from __future__ import annotations

import sqlite_utils

from evoinstruct.store.db import migrations


@migrations()
def m006_eval_item_parts(db: sqlite_utils.Database) -> None:
    # Which part of the suite an item belongs to (in-distribution, held-out phrasing,
    # held-out type, ifeval) and the phrasing that describes each of its constraints;
    # items of suites stored before have neither.
    db["eval_items"].add_column("part", str)
    db["eval_items"].add_column("phrasings", str)
