"""Rounds of the evolution loop and the daemon's heartbeat."""

from __future__ import annotations

from typing import Any

from evoinstruct.store import stats
from evoinstruct.store._base import StoreBase, dumps, loads, now


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

    def finish_round(self, number: int, counts: dict[str, Any], *, phase: str = "finished") -> None:
        """Close a round, merging `counts` into its notes. `phase="failed"` (with a `failed`
        note) closes a round the daemon gave up on: it is done, and never resumed."""
        with self.transaction() as db:
            current = self.round(number) or {}
            db["rounds"].update(
                number,
                {
                    "phase": phase,
                    "finished_at": current.get("finished_at") or now(),
                    "counts": dumps({**current.get("counts", {}), **counts}),
                },
            )

    # --- consecutive failures of one step ------------------------------------------------
    # The process that fails a step dies of it, so the count lives with the round (a
    # `step_failure` note: step, attempts, error, traceback) and survives the restart.
    def record_step_failure(
        self, number: int, step: str, error: str, traceback: str | None = None
    ) -> int:
        """One more failure of `step` in a row (a different step starts again at 1); the count."""
        with self.transaction() as db:
            counts = (self.round(number) or {}).get("counts", {})
            previous = counts.get("step_failure") or {}
            attempts = previous.get("attempts", 0) + 1 if previous.get("step") == step else 1
            counts["step_failure"] = {
                "step": step,
                "attempts": attempts,
                "error": error,
                "traceback": traceback,
            }
            db["rounds"].update(number, {"counts": dumps(counts)})
        return attempts

    def step_failure(self, number: int) -> dict[str, Any] | None:
        """The step of this round that failed last, with how many starts in a row it failed."""
        return ((self.round(number) or {}).get("counts") or {}).get("step_failure")

    def clear_step_failure(self, number: int) -> None:
        """The step went through: the next failure counts from one again."""
        with self.transaction() as db:
            counts = (self.round(number) or {}).get("counts", {})
            if counts.pop("step_failure", None) is not None:
                db["rounds"].update(number, {"counts": dumps(counts)})

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
    def heartbeat(
        self,
        *,
        pid: int,
        round: int | None,
        stage: str,
        state: str = "running",
        activity: dict[str, Any] | None = None,
    ) -> None:
        """The daemon is alive, where it is, and (`activity`) what its models are doing."""
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
                    "activity": None if activity is None else dumps(activity),
                },
                replace=True,
            )

    def daemon_info(self) -> dict[str, Any] | None:
        return stats.daemon_info(self.db.conn)
