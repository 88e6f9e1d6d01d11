"""Experiments run on a project (weak-to-strong supervision): their plan and their result.

An experiment is planned once (what it uses, fixed before any model runs, so a resumed
run does the same), then finished with its result. Nothing here is pool data: exports
and training read `examples` only.
"""

from __future__ import annotations

from typing import Any

from evoinstruct.store._base import StoreBase, dumps, loads, now


class ExperimentsMixin(StoreBase):
    def start_experiment(
        self, name: str, kind: str, plan: dict[str, Any], *, round: int | None = None
    ) -> bool:
        """Record a planned experiment; False (and the first plan kept) when it exists."""
        with self.transaction() as db:
            if self._query("SELECT 1 FROM experiments WHERE name = ?", [name]):
                return False
            db["experiments"].insert(
                {
                    "name": name,
                    "kind": kind,
                    "round": round,
                    "created_at": now(),
                    "finished_at": None,
                    "plan": dumps(plan),
                    "result": None,
                }
            )
        return True

    def finish_experiment(self, name: str, result: dict[str, Any]) -> None:
        """Store an experiment's result (again: the newer one replaces it)."""
        with self.transaction() as db:
            if not self._query("SELECT 1 FROM experiments WHERE name = ?", [name]):
                raise KeyError(f"no experiment {name!r}")
            db["experiments"].update(name, {"finished_at": now(), "result": dumps(result)})

    def experiment(self, name: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM experiments WHERE name = ?", [name])
        return self._experiment_row(rows[0]) if rows else None

    def experiments(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Experiments (of one kind when given), oldest first."""
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = self._query(f"SELECT * FROM experiments {where} ORDER BY created_at, rowid", params)
        return [self._experiment_row(r) for r in rows]

    @staticmethod
    def _experiment_row(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "plan": loads(row["plan"], {}), "result": loads(row["result"])}
