"""Which examples entered or left `accepted`: a change log for the selector's persistent index.

The store stays the source of truth; the selector's index file (see
`agents.selection.pool_index`) is derived from it. Triggers on `examples` append the id
of every example that enters or leaves `accepted`, or whose text changes while
accepted, to `selector_log`, inside the transaction of the write itself: no
crash can separate a status change from its log row. The index consumes the
log up to a watermark it commits together with its own rows, reading each
logged example's *current* row, so consuming an entry twice changes nothing.

`prune_selector_log` deletes what an index has durably consumed, and
`selector_log_state` keeps how far, with a random identity of this pool: an
index file that belongs to another pool, or that is older than the pruned log,
is noticed and rebuilt instead of trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evoinstruct.store._base import StoreBase
from evoinstruct.store.records import Example
from evoinstruct.store.rows import EXAMPLE_COLUMNS, chunks, row_to_example

_LOG = "INSERT INTO selector_log (example_id) VALUES ({p}.id);"
_TEXT_CHANGED = " OR ".join(
    f"old.{c} IS NOT new.{c}" for c in ("instruction", "input", "output", "system")
)
SCHEMA = (
    # AUTOINCREMENT: a sequence number is never reused, even after pruning, so a
    # watermark can only be behind the log, never ahead of a different history.
    "CREATE TABLE selector_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, example_id TEXT NOT NULL)",
    "CREATE TABLE selector_log_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "pool TEXT NOT NULL, pruned_through INTEGER NOT NULL)",
    "INSERT INTO selector_log_state (id, pool, pruned_through) "
    "VALUES (1, lower(hex(randomblob(16))), 0)",
    f"CREATE TRIGGER selector_log_insert AFTER INSERT ON examples "
    f"WHEN new.status = 'accepted' BEGIN {_LOG.format(p='new')} END",
    f"CREATE TRIGGER selector_log_status AFTER UPDATE OF status ON examples "
    f"WHEN (old.status = 'accepted') <> (new.status = 'accepted') BEGIN {_LOG.format(p='new')} END",
    f"CREATE TRIGGER selector_log_text AFTER UPDATE OF instruction, input, output, system "
    f"ON examples WHEN old.status = 'accepted' AND new.status = 'accepted' AND ({_TEXT_CHANGED}) "
    f"BEGIN {_LOG.format(p='new')} END",
    f"CREATE TRIGGER selector_log_delete AFTER DELETE ON examples "
    f"WHEN old.status = 'accepted' BEGIN {_LOG.format(p='old')} END",
)


@dataclass(frozen=True)
class PoolChange:
    """The current state of a logged example: `example` is set when it is accepted now."""

    example_id: str
    example: Example | None


class SelectorLogMixin(StoreBase):
    def selector_log_head(self) -> int:
        """The last sequence number ever given to a log row (0 before the first)."""
        row = self.db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'selector_log'"
        ).fetchone()
        return int(row[0]) if row else 0

    def selector_log_state(self) -> tuple[str, int]:
        """(this pool's random identity, the sequence number the log is pruned through)."""
        pool, pruned = self.db.execute(
            "SELECT pool, pruned_through FROM selector_log_state WHERE id = 1"
        ).fetchone()
        return pool, int(pruned)

    def selector_changes(self, after: int, limit: int = 2000) -> tuple[int, list[PoolChange]]:
        """(last sequence number read, the current state of each example logged after `after`)."""
        logged = self.db.execute(
            "SELECT seq, example_id FROM selector_log WHERE seq > ? ORDER BY seq LIMIT ?",
            [after, limit],
        ).fetchall()
        if not logged:
            return after, []
        ids = list(dict.fromkeys(example_id for _, example_id in logged))
        rows: dict[str, dict] = {}
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(
                f"SELECT {EXAMPLE_COLUMNS} FROM examples WHERE id IN ({marks})",
                chunk,
            ):
                rows[row["id"]] = row
        changes = []
        for example_id in ids:
            row = rows.get(example_id)
            accepted = row is not None and row["status"] == "accepted"
            changes.append(PoolChange(example_id, row_to_example(row) if accepted else None))
        return logged[-1][0], changes

    def earliest_in_pool(self, ids: Sequence[str]) -> str | None:
        """Of these example ids, the first in the pool's order (rowid): the one ties go to.

        Asked at the moment of the tie: whatever a VACUUM or a dump and reload did to
        the rowids, ties follow the pool's order as it is now, as a rebuild would.
        """
        best: tuple[int, str] | None = None
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            row = self.db.execute(
                f"SELECT rowid, id FROM examples WHERE id IN ({marks}) ORDER BY rowid LIMIT 1",
                chunk,
            ).fetchone()
            if row is not None and (best is None or row[0] < best[0]):
                best = (row[0], row[1])
        return None if best is None else best[1]

    def prune_selector_log(self, through: int) -> None:
        """Drop log rows an index has durably consumed (sequence numbers ≤ `through`)."""
        with self.transaction() as db:
            db.execute("DELETE FROM selector_log WHERE seq <= ?", [through])
            db.execute(
                "UPDATE selector_log_state SET pruned_through = max(pruned_through, ?) WHERE id = 1",
                [through],
            )
