"""Rounds of the evolution loop and the daemon's heartbeat."""

from __future__ import annotations

from typing import Any

from store import stats
from store._base import StoreBase, dumps, loads, now


class RunsMixin(StoreBase):
    def start_round(
        self, number: int, config: dict[str, Any], model_version: str | None = None
    ) -> None:
        """Record that a round began; starting it again (a resume) keeps the first record."""
        with self.transaction() as db:
            db["rounds"].insert(
                {
                    "number": number,
                    "phase": "started",
                    "started_at": now(),
                    "finished_at": None,
                    "counts": dumps({}),
                    "config": dumps(config),
                    "model_version": model_version,
                },
                ignore=True,
            )

    def set_round_phase(
        self, number: int, phase: str, counts: dict[str, Any] | None = None
    ) -> None:
        with self.transaction() as db:
            update: dict[str, Any] = {"phase": phase}
            if counts is not None:
                current = self.round(number) or {}
                update["counts"] = dumps({**current.get("counts", {}), **counts})
            db["rounds"].update(number, update)

    def finish_round(self, number: int, counts: dict[str, Any]) -> None:
        with self.transaction() as db:
            current = self.round(number) or {}
            db["rounds"].update(
                number,
                {
                    "phase": "finished",
                    "finished_at": current.get("finished_at") or now(),
                    "counts": dumps({**current.get("counts", {}), **counts}),
                },
            )

    def round(self, number: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM rounds WHERE number = ?", [number])
        return self._round_row(rows[0]) if rows else None

    def rounds(self) -> list[dict[str, Any]]:
        return [self._round_row(r) for r in self._query("SELECT * FROM rounds ORDER BY number")]

    def last_round(self) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM rounds ORDER BY number DESC LIMIT 1")
        return self._round_row(rows[0]) if rows else None

    @staticmethod
    def _round_row(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "counts": loads(row["counts"], {}), "config": loads(row["config"], {})}

    # --- daemon heartbeat -------------------------------------------------------------
    def heartbeat(self, *, pid: int, round: int | None, stage: str, state: str = "running") -> None:
        with self.transaction() as db:
            current = self.daemon_info()
            started = current["started_at"] if current and current["pid"] == pid else now()
            db["daemon"].insert(
                {
                    "id": 1,
                    "pid": pid,
                    "round": round,
                    "stage": stage,
                    "started_at": started,
                    "heartbeat_at": now(),
                    "state": state,
                },
                replace=True,
            )

    def daemon_info(self) -> dict[str, Any] | None:
        return stats.daemon_info(self.db.conn)
