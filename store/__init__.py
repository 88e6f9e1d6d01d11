"""The SQLite pool: schema, idempotent writes, lineage, rounds, model versions, seeds, export.

`Store` and `open_store` load lazily: importing `store.errors` or `store.stats`
must not pull in sqlite-utils (and with it pandas), so `evoinstruct status`
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evoinstruct.store.pool import AddResult
    from evoinstruct.store.store import Store, open_store

__all__ = ["AddResult", "Store", "open_store"]


def __getattr__(name: str) -> Any:
    if name in ("Store", "open_store"):
        from evoinstruct.store import store as _store

        return getattr(_store, name)
    if name == "AddResult":
        from evoinstruct.store.pool import AddResult

        return AddResult
    raise AttributeError(name)
