"""The held-out verifiable suite and the results of running models on it.

A suite is a list of prompts with verifiable constraints, identified by a hash
of its content; once stored it never changes (adding prompts stores a new
suite). Results are keyed by the suite's hash, who answered (a label such as
"v2", "base" or "teacher", plus the exact model identity) and the generation
settings, so a result is reused only for the very same question. None of
this is pool data: exports and training read `examples` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evoinstruct.store._base import StoreBase, dumps, loads, now


class EvalsMixin(StoreBase):
    def save_eval_suite(
        self,
        suite_hash: str,
        items: Sequence[dict[str, Any]],
        meta: dict[str, Any],
        *,
        current: bool = True,
    ) -> bool:
        """Store a suite and make it the current one; False when it was stored before.

        Storing a suite that exists only selects it again (its items and results stay).
        With `current=False` the suite is stored beside the others and never becomes
        the current one (a suite of an IFEval file alone, which the gate does not use).
        """
        with self.transaction() as db:
            # A counter, not a timestamp: two selections within one clock tick stay ordered;
            # 0 marks a suite that is never current.
            rows = self._query("SELECT coalesce(max(selected), 0) + 1 AS n FROM eval_suites")
            selected = rows[0]["n"] if current else 0
            if self._query("SELECT 1 FROM eval_suites WHERE hash = ?", [suite_hash]):
                if current:
                    db["eval_suites"].update(suite_hash, {"selected": selected})
                return False
            db["eval_suites"].insert(
                {
                    "hash": suite_hash,
                    "created_at": now(),
                    "selected": selected,
                    "items": len(items),
                    "meta": dumps(meta),
                }
            )
            db["eval_items"].insert_all(
                (
                    {
                        "suite": suite_hash,
                        "position": i,
                        "key": str(item["key"]),
                        "source": item["source"],
                        "language": item.get("language"),
                        "task": item.get("task"),
                        "prompt": item["prompt"],
                        "constraints": dumps(item["constraints"]),
                        "part": item.get("part"),
                        "phrasings": dumps(item.get("phrasings") or []),
                    }
                    for i, item in enumerate(items)
                ),
                batch_size=500,
            )
        return True

    def eval_suite(self, suite_hash: str | None = None) -> dict[str, Any] | None:
        """A stored suite with its items in order (the current one when no hash is given)."""
        if suite_hash is None:
            rows = self._query(
                "SELECT * FROM eval_suites WHERE selected > 0 ORDER BY selected DESC LIMIT 1"
            )
        else:
            rows = self._query("SELECT * FROM eval_suites WHERE hash = ?", [suite_hash])
        if not rows:
            return None
        suite = {**rows[0], "meta": loads(rows[0]["meta"], {})}
        items = self._query(
            "SELECT * FROM eval_items WHERE suite = ? ORDER BY position", [suite["hash"]]
        )
        suite["items"] = [
            {
                **r,
                "constraints": loads(r["constraints"], []),
                "phrasings": loads(r.get("phrasings"), []),
            }
            for r in items
        ]
        return suite

    def eval_suites(self) -> list[dict[str, Any]]:
        """Every stored suite (without items), oldest first."""
        rows = self._query("SELECT * FROM eval_suites ORDER BY created_at, rowid")
        return [{**r, "meta": loads(r["meta"], {})} for r in rows]

    def record_eval_result(
        self,
        result_id: str,
        *,
        suite: str,
        label: str,
        identity: str,
        version: str | None,
        settings: dict[str, Any],
        metrics: dict[str, Any],
        items: Sequence[dict[str, Any]],
    ) -> None:
        """Store (or replace) one model's result on a suite."""
        with self.transaction() as db:
            db["eval_results"].insert(
                {
                    "id": result_id,
                    "suite": suite,
                    "label": label,
                    "version": version,
                    "identity": identity,
                    "settings": dumps(settings),
                    "metrics": dumps(metrics),
                    "items": dumps(list(items)),
                    "created_at": now(),
                },
                replace=True,
            )

    def eval_result(self, result_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM eval_results WHERE id = ?", [result_id])
        return self._result_row(rows[0]) if rows else None

    def eval_results(
        self, suite: str | None = None, *, with_items: bool = False
    ) -> list[dict[str, Any]]:
        """Stored results, oldest first (of one suite when given); items only when asked."""
        columns = (
            "*"
            if with_items
            else "id, suite, label, version, identity, settings, metrics, created_at"
        )
        where, params = ("WHERE suite = ?", [suite]) if suite else ("", [])
        rows = self._query(
            f"SELECT {columns} FROM eval_results {where} ORDER BY created_at, rowid", params
        )
        return [self._result_row(r) for r in rows]

    @staticmethod
    def _result_row(row: dict[str, Any]) -> dict[str, Any]:
        out = {**row, "settings": loads(row["settings"], {}), "metrics": loads(row["metrics"], {})}
        if "items" in row:
            out["items"] = loads(row["items"], [])
        return out
