"""Student model versions: registration, promotion and rollback, training manifests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evoinstruct.store import stats
from evoinstruct.store._base import StoreBase, dumps, loads, now
from evoinstruct.store.errors import InputError


class RegistryMixin(StoreBase):
    def next_model_version(self) -> str:
        rows = self._query("SELECT max(number) AS n FROM model_versions")
        return f"v{(rows[0]['n'] or 0) + 1}"

    def register_model_version(
        self,
        version: str,
        *,
        base: str,
        method: str,
        path: str,
        round: int | None,
        metrics: dict[str, Any],
        config: dict[str, Any],
    ) -> None:
        """Register a finished version; registering the same version again is a no-op."""
        number = int(version.lstrip("v")) if version.lstrip("v").isdigit() else None
        with self.transaction() as db:
            db["model_versions"].insert(
                {
                    "version": version,
                    "number": number,
                    "base": base,
                    "method": method,
                    "path": path,
                    "round": round,
                    "metrics": dumps(metrics),
                    "config": dumps(config),
                    "created_at": now(),
                },
                ignore=True,
            )

    def update_model_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        with self.transaction() as db:
            current = self.model_version(version)
            if current is None:
                raise InputError(f"no model version {version!r}", field="version")
            db["model_versions"].update(
                version, {"metrics": dumps({**current["metrics"], **metrics})}
            )

    def model_version(self, version: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM model_versions WHERE version = ?", [version])
        return self._version_row(rows[0]) if rows else None

    def model_versions(self) -> list[dict[str, Any]]:
        active = self.active_model()
        rows = self._query("SELECT * FROM model_versions ORDER BY number, created_at")
        out = [self._version_row(r) for r in rows]
        for row in out:
            row["active"] = active is not None and row["version"] == active["version"]
            row["promoted"] = bool(
                self._query(
                    "SELECT 1 FROM promotions WHERE version = ? AND action = 'promote' LIMIT 1",
                    [row["version"]],
                )
            )
        return out

    @staticmethod
    def _version_row(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "metrics": loads(row["metrics"], {}), "config": loads(row["config"], {})}

    def set_promoted(self, version: str, reason: str) -> None:
        """Make `version` the active student (the generator follows it)."""
        if self.model_version(version) is None:
            raise InputError(f"no model version {version!r}", field="version")
        if stats.active_history(self.db.conn)[-1] == version:
            return  # already active: promoting again (or a re-run node) changes nothing
        with self.transaction() as db:
            db["promotions"].insert(
                {"version": version, "action": "promote", "reason": reason, "at": now()}
            )

    def rollback(self, reason: str = "rollback by hand") -> str | None:
        """Return to the version active before the current one (None: back to the base teacher)."""
        history = stats.active_history(self.db.conn)
        previous = history[-2] if len(history) >= 2 else None
        with self.transaction() as db:
            db["promotions"].insert(
                {"version": previous, "action": "rollback", "reason": reason, "at": now()}
            )
        return previous

    def active_model(self) -> dict[str, Any] | None:
        version = stats.active_history(self.db.conn)[-1]
        return self.model_version(version) if version else None

    def promotions(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM promotions ORDER BY id")

    def record_training_manifest(
        self, version: str, ids: Sequence[str], role: str = "train"
    ) -> None:
        rows = [{"version": version, "example_id": i, "role": role} for i in ids]
        with self.transaction() as db:
            db["manifests"].insert_all(rows, replace=True, batch_size=1000)

    def training_manifest(self, version: str, role: str | None = None) -> list[str]:
        if role is None:
            rows = self._query("SELECT example_id FROM manifests WHERE version = ?", [version])
        else:
            rows = self._query(
                "SELECT example_id FROM manifests WHERE version = ? AND role = ?", [version, role]
            )
        return [r["example_id"] for r in rows]
