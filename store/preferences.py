"""Verified preference pairs: answers to one constrained prompt that pass and fail its checkers.

The responder's rejection sampling draws several answers to a prompt with verifiable
constraints and checks each one; an answer that passes every constraint and one that
fails at least one make a pair (SPaR, Tülu 3) with no judge involved. Which answers
may form a pair is decided in `agents.preference`; this module only keeps them.

A pair belongs to the example whose prompt was answered (`example_id`), so whatever
the pool decides about that example (accepted, rejected, held out, kept from the
suite) decides about its pairs too: training and export read pairs through their
example. The id is a hash of the example id and both answers, so writing a pair twice
(a re-run batch, a cached answer) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from evoinstruct.store._base import StoreBase, dumps, loads, now
from evoinstruct.store.ids import stable_hash
from evoinstruct.store.records import Example, PreferencePair
from evoinstruct.store.rows import EXAMPLE_COLUMNS, chunks, row_to_example

TABLE = "preference_pairs"
PAIR_COLUMNS = (
    "id, example_id, round, chosen, rejected, chosen_repaired, rejected_failed, "
    "rejected_truncated, model_version, created_at"
)


def pair_id(example_id: str, chosen: str, rejected: str) -> str:
    """The content-hash id of a pair: the same prompt and answers always get the same id."""
    return stable_hash(["preference_pair", example_id, chosen, rejected])[:20]


def _row_to_pair(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "chosen_repaired": loads(row["chosen_repaired"], []),
        "rejected_failed": loads(row["rejected_failed"], []),
        "rejected_truncated": bool(row["rejected_truncated"]),
    }


class PreferencesMixin(StoreBase):
    def add_preference_pairs(self, pairs: Sequence[PreferencePair], round: int) -> int:
        """Insert verified pairs made in `round`; a pair already stored is left as it is.
        Returns how many were new."""
        rows: dict[str, dict[str, Any]] = {}
        for pair in pairs:
            pid = pair_id(pair.example_id, pair.chosen, pair.rejected)
            rows.setdefault(
                pid,
                {
                    "id": pid,
                    "example_id": pair.example_id,
                    "round": round,
                    "chosen": pair.chosen,
                    "rejected": pair.rejected,
                    "chosen_repaired": dumps(list(pair.chosen_repaired)),
                    "rejected_failed": dumps(list(pair.rejected_failed)),
                    "rejected_truncated": int(pair.rejected_truncated),
                    "model_version": pair.model_version,
                    "created_at": now(),
                },
            )
        if not rows:
            return 0
        with self.transaction() as db:
            before = self.count_preference_pairs()
            db[TABLE].insert_all(rows.values(), ignore=True, batch_size=500)
            return self.count_preference_pairs() - before

    def count_preference_pairs(self) -> int:
        return self.db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]

    def preference_pairs_of(self, example_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The pairs of these examples, by example in the order given, then by id."""
        found: dict[str, list[dict[str, Any]]] = {}
        for chunk in chunks(list(dict.fromkeys(example_ids))):
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(
                f"SELECT {PAIR_COLUMNS} FROM {TABLE} WHERE example_id IN ({marks}) ORDER BY id",
                chunk,
            ):
                found.setdefault(row["example_id"], []).append(_row_to_pair(row))
        return [pair for eid in dict.fromkeys(example_ids) for pair in found.get(eid, [])]

    def preference_pairs_by_id(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Pairs for `ids`, in that order; unknown ids are skipped."""
        by_id: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(
                f"SELECT {PAIR_COLUMNS} FROM {TABLE} WHERE id IN ({marks})", chunk
            ):
                by_id[row["id"]] = _row_to_pair(row)
        return [by_id[i] for i in ids if i in by_id]

    def iter_preference_pairs(
        self,
        *,
        status: Sequence[str] | None = None,
        source: Sequence[str] | None = None,
        round: int | None = None,
        batch: int = 1000,
    ) -> Iterator[tuple[dict[str, Any], Example]]:
        """(pair, its example) for every pair whose example matches the filters, oldest
        pair first; `round` is the round the pair was drawn in."""
        clauses, params = [], []
        for column, values in (("e.status", status), ("e.source", source)):
            if values:
                clauses.append(f"AND {column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if round is not None:
            clauses.append("AND p.round = ?")
            params.append(round)
        where = " ".join(clauses)
        pair_cols = ", ".join(f"p.{c.strip()} AS p_{c.strip()}" for c in PAIR_COLUMNS.split(","))
        example_cols = ", ".join(f"e.{c.strip()}" for c in EXAMPLE_COLUMNS.split(","))
        last = 0
        while True:
            rows = self._query(
                f"SELECT p.rowid AS _rowid, {pair_cols}, {example_cols} FROM {TABLE} p "
                f"JOIN examples e ON e.id = p.example_id WHERE p.rowid > ? {where} "
                "ORDER BY p.rowid LIMIT ?",
                [last, *params, batch],
            )
            for row in rows:
                pair = {k[2:]: v for k, v in row.items() if k.startswith("p_")}
                yield _row_to_pair(pair), row_to_example(row)
            if len(rows) < batch:
                return
            last = rows[-1]["_rowid"]
