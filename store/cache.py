"""The response cache: a resumed round never pays twice for a model call it already made."""

from __future__ import annotations

from typing import Any

from evoinstruct.store._base import StoreBase, dumps, loads, now


class CacheMixin(StoreBase):
    def cache_get(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT value FROM response_cache WHERE key = ?", [key])
        return loads(rows[0]["value"]) if rows else None

    def cache_put(self, key: str, value: dict[str, Any], model_id: str | None = None) -> None:
        with self.transaction() as db:
            db["response_cache"].insert(
                {"key": key, "model_id": model_id, "value": dumps(value), "created_at": now()},
                replace=True,
            )
