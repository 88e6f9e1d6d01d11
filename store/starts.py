"""Each start of a round, with the config it ran with: the record is what ran.

A round interrupted by a stop or a crash is resumed by a later `evoinstruct run`, perhaps
with other settings (`--set`, an edited evoinstruct.toml). Every start of a round is a row
of `round_starts`: where it began (the step), the resolved config it ran with, the active
student, and the steps it finished. `rounds.config` is the config of the latest start (what
ran the round's last steps); `inspect rounds`, the report and the dataset card show what
each start changed (`config_changes`, `describe_starts`).

The same migration gives the daemon's heartbeat row an `activity` column: what the models
are doing in the step running now (calls in flight and done, tokens), which `status` shows
before the step ends and its counts reach the round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evoinstruct.store._base import StoreBase, dumps, loads, now


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Dotted key -> [before, after] for every setting that differs between two configs."""
    old, new = _flat(before), _flat(after)
    return {
        key: [old.get(key), new.get(key)]
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }


def _shown(value: Any) -> str:
    text = dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def describe_start(start: Mapping[str, Any]) -> str:
    """One line: where a resumed start began and what it ran with differently."""
    changes = start.get("changes") or {}
    where = f"start {start['start']} at {start['step']}"
    if not changes:
        return f"{where}: same settings"
    shown = ", ".join(f"{k} {_shown(a)} -> {_shown(b)}" for k, (a, b) in list(changes.items())[:8])
    more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
    return f"{where}: {shown}{more}"


def describe_starts(starts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines for a round that ran in several starts (none for a round that ran in one)."""
    if len(starts) < 2:
        return []
    return [describe_start(s) for s in starts[1:]]


class StartsMixin(StoreBase):
    def record_round_start(
        self, number: int, config: dict[str, Any], step: str, model_version: str | None
    ) -> int:
        """A start of round `number` at `step` with `config`; returns the start's number (1, 2,
        ...). The round's own config becomes this one: it runs the round's remaining steps."""
        with self.transaction() as db:
            rows = self._query(
                "SELECT max(start) AS last FROM round_starts WHERE number = ?", [number]
            )
            start = (rows[0]["last"] or 0) + 1
            if start == 1 and step != "start":
                # A round begun before starts were recorded: its first start is the round's row.
                start += self._first_start_of_old_round(number)
            db["round_starts"].insert(
                {
                    "number": number,
                    "start": start,
                    "started_at": now(),
                    "step": step,
                    "config": dumps(config),
                    "model_version": model_version,
                    "steps": "[]",
                }
            )
            if start > 1:
                db["rounds"].update(number, {"config": dumps(config)})
        return start

    def _first_start_of_old_round(self, number: int) -> int:
        """Record the round's own row as its first start; 1 when there was one, else 0."""
        rows = self._query(
            "SELECT started_at, config, model_version FROM rounds WHERE number = ?", [number]
        )
        if not rows or not loads(rows[0]["config"], {}):
            return 0
        self.db["round_starts"].insert(
            {
                "number": number,
                "start": 1,
                "started_at": rows[0]["started_at"] or now(),
                "step": "start",
                "config": rows[0]["config"],
                "model_version": rows[0]["model_version"],
                "steps": "[]",
            }
        )
        return 1

    def record_start_step(self, number: int, start: int, step: str) -> None:
        """`step` finished in this start of the round."""
        with self.transaction() as db:
            rows = self._query(
                "SELECT steps FROM round_starts WHERE number = ? AND start = ?", [number, start]
            )
            if rows:
                steps = [*loads(rows[0]["steps"], []), step]
                db["round_starts"].update((number, start), {"steps": dumps(steps)})

    def round_starts(self, number: int) -> list[dict[str, Any]]:
        """The round's starts in order, each with its config and `changes` from the one before."""
        rows = self._query("SELECT * FROM round_starts WHERE number = ? ORDER BY start", [number])
        out: list[dict[str, Any]] = []
        previous: dict[str, Any] | None = None
        for row in rows:
            config = loads(row["config"], {})
            out.append(
                {
                    **row,
                    "config": config,
                    "steps": loads(row["steps"], []),
                    "changes": config_changes(previous, config) if previous is not None else {},
                }
            )
            previous = config
        return out

    def record_stage_counts(self, number: int, stages: dict[str, Any]) -> None:
        """The counts of the round's finished steps so far (its `stages`), before the round
        ends: `status` and costs count the tokens of a round still running."""
        with self.transaction() as db:
            rows = self._query("SELECT counts FROM rounds WHERE number = ?", [number])
            if rows:
                counts = {**loads(rows[0]["counts"], {}), "stages": stages}
                db["rounds"].update(number, {"counts": dumps(counts)})
