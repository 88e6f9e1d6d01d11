"""The selector's index file beside the pool (`pool.selector.db`): SQL for rows derived from it.

Per accepted example (`items`, keyed by the example's rowid in the pool, whose
order breaks ties as a rebuild from the pool would): the exact-duplicate hash,
the MinHash signature (`sigs`) and its LSH band keys (`bands`), the novelty
filter's token ids (`toks`) and, per token of its prefix, a posting
(`postings`). `vocab` holds
token ids, their fixed ranks and document frequencies; `meta` the settings the
rows were computed with and the pool change-log watermark they reflect.

Why a file of its own and not tables in pool.db: it is a cache, never a source
of truth — deleting it costs one rebuild; copies and backups of the pool do
not carry it; a rebuild writes a fresh file and renames it into place, so it
never holds the pool's write lock. What it derives from (`agents.pool_index`)
is decided there; this module only stores and looks up.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_TABLES = {
    "bands": "CREATE TABLE IF NOT EXISTS bands (key INTEGER NOT NULL, ord INTEGER NOT NULL, "
    "PRIMARY KEY (key, ord)) WITHOUT ROWID",
    # (tid, n, ord): a probe reads one token's postings for a window of lengths.
    "postings": "CREATE TABLE IF NOT EXISTS postings (tid INTEGER NOT NULL, n INTEGER NOT NULL, "
    "ord INTEGER NOT NULL, pos INTEGER NOT NULL, PRIMARY KEY (tid, n, ord)) WITHOUT ROWID",
}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS items (ord INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
    "content TEXT NOT NULL, exact TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS items_exact ON items (exact, ord)",
    # Token ids and signatures in tables of their own: a novelty query reads thousands
    # of token rows, and dense small rows keep them in few pages (and in the cache).
    "CREATE TABLE IF NOT EXISTS toks (ord INTEGER PRIMARY KEY, toks BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sigs (ord INTEGER PRIMARY KEY, sig BLOB NOT NULL)",
    _TABLES["bands"],
    "CREATE TABLE IF NOT EXISTS vocab (token TEXT PRIMARY KEY, tid INTEGER NOT NULL UNIQUE, "
    "rank INTEGER NOT NULL, df INTEGER NOT NULL) WITHOUT ROWID",
    _TABLES["postings"],
)
_CACHE_KIB = 131_072  # SQLite's page cache: the bounded part of the daemon's memory this uses
_BATCH = 500
_COMPOUND = 200  # SELECTs per UNION ALL (SQLite allows 500)
_KEYS = {"bands": "key, ord", "postings": "tid, n, ord, pos"}


def sidecar_path(pool_path: str | os.PathLike[str]) -> Path:
    """`pool.db` → `pool.selector.db`, in the same folder."""
    path = Path(pool_path)
    return path.with_name(f"{path.stem}.selector.db")


def remove_file(path: Path) -> None:
    """Delete a database file and its WAL companions (a stale WAL must never meet a new file)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class IndexFile:
    """One connection to an index file; `bulk` opens a fresh file for a rebuild (no journal)."""

    def __init__(self, path: str | os.PathLike[str], *, bulk: bool = False) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        pragmas = [f"cache_size=-{_CACHE_KIB}", "busy_timeout=30000"]
        if bulk:
            # A half-written rebuild is discarded, never opened: no journal needed.
            pragmas += ["journal_mode=OFF", "synchronous=OFF"]
        else:
            # FULL: the pool's log is pruned against the watermark committed here.
            pragmas += ["journal_mode=WAL", "synchronous=FULL"]
        for pragma in pragmas:
            self.conn.execute(f"PRAGMA {pragma}")
        for statement in _SCHEMA:
            self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator[None]:
        """One atomic unit of writes (the write lock is taken up front)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def finish_bulk(self) -> None:
        """Make a bulk-built file durable, so it can be renamed into place."""
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.close()
        with open(self.path, "rb+") as fh:
            os.fsync(fh.fileno())

    # --- meta -------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def put_meta(self, **values: Any) -> None:
        self.conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    # --- items ------------------------------------------------------------------------
    def item_state(self, example_id: str) -> tuple[int, str] | None:
        """(ord, content hash) of an indexed example."""
        row = self.conn.execute(
            "SELECT ord, content FROM items WHERE id = ?", [example_id]
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def has_id(self, example_id: str) -> bool:
        return self.item_state(example_id) is not None

    def add_item(
        self, ord: int, example_id: str, content: str, exact: str, sig: bytes | None, toks: bytes
    ) -> None:
        self.conn.execute(
            "INSERT INTO items (ord, id, content, exact) VALUES (?, ?, ?, ?)",
            [ord, example_id, content, exact],
        )
        self.conn.execute("INSERT INTO toks (ord, toks) VALUES (?, ?)", [ord, toks])
        if sig is not None:
            self.conn.execute("INSERT INTO sigs (ord, sig) VALUES (?, ?)", [ord, sig])

    def take_item(self, ord: int) -> tuple[bytes | None, bytes] | None:
        """Delete an item; returns its (signature, token ids) so its keys can be deleted too."""
        toks = self.conn.execute("SELECT toks FROM toks WHERE ord = ?", [ord]).fetchone()
        if toks is None:
            return None
        sig = self.conn.execute("SELECT sig FROM sigs WHERE ord = ?", [ord]).fetchone()
        for table in ("items", "toks", "sigs"):
            self.conn.execute(f"DELETE FROM {table} WHERE ord = ?", [ord])
        return (None if sig is None else sig[0]), toks[0]

    def id_at(self, ord: int) -> str | None:
        row = self.conn.execute("SELECT id FROM items WHERE ord = ?", [ord]).fetchone()
        return None if row is None else row[0]

    def count_items(self) -> int:
        return self.conn.execute("SELECT count(*) FROM items").fetchone()[0]

    def first_with_hash(self, exact: str) -> str | None:
        """The id of the earliest (lowest ord) item with this exact-duplicate hash."""
        row = self.conn.execute(
            "SELECT id FROM items WHERE exact = ? ORDER BY ord LIMIT 1", [exact]
        ).fetchone()
        return None if row is None else row[0]

    def signatures(self, ords: Sequence[int]) -> list[tuple[int, str, bytes]]:
        """(ord, id, signature) of these items, in ord order."""
        return self._by_ord(
            "SELECT s.ord, i.id, s.sig FROM sigs AS s JOIN items AS i ON i.ord = s.ord "
            "WHERE s.ord IN ({})",
            ords,
        )

    def token_rows(self, ords: Sequence[int]) -> list[tuple[int, bytes]]:
        """(ord, token ids) of these items, in ord order."""
        return self._by_ord("SELECT ord, toks FROM toks WHERE ord IN ({})", ords)

    def _by_ord(self, sql: str, ords: Sequence[int]) -> list[Any]:
        rows: list[Any] = []
        for start in range(0, len(ords), _BATCH):
            chunk = list(ords[start : start + _BATCH])
            rows += self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
        rows.sort()
        return rows

    def iter_token_rows(self, batch: int = 5000) -> Iterator[list[tuple[int, bytes]]]:
        """Every item's (ord, token ids), in ord order, a batch at a time."""
        last = -(2**63)
        while True:
            rows = self.conn.execute(
                "SELECT ord, toks FROM toks WHERE ord > ? ORDER BY ord LIMIT ?", [last, batch]
            ).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def iter_signatures(self, batch: int = 5000) -> Iterator[list[tuple[int, str, bytes]]]:
        """Every item's (ord, id, signature) that has one, in ord order, a batch at a time."""
        last = -(2**63)
        while True:
            rows = self.conn.execute(
                "SELECT s.ord, i.id, s.sig FROM sigs AS s JOIN items AS i ON i.ord = s.ord "
                "WHERE s.ord > ? ORDER BY s.ord LIMIT ?",
                [last, batch],
            ).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    # --- LSH bands --------------------------------------------------------------------
    def add_bands(self, rows: Iterable[tuple[int, int]]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO bands (key, ord) VALUES (?, ?)", rows)

    def drop_bands(self, rows: Iterable[tuple[int, int]]) -> None:
        self.conn.executemany("DELETE FROM bands WHERE key = ? AND ord = ?", rows)

    def ords_in_bands(self, keys: Sequence[int]) -> list[int]:
        marks = ",".join("?" * len(keys))
        return [
            r[0]
            for r in self.conn.execute(
                f"SELECT DISTINCT ord FROM bands WHERE key IN ({marks})", list(keys)
            )
        ]

    # --- vocabulary -------------------------------------------------------------------
    def lookup_tokens(self, tokens: Sequence[str]) -> dict[str, tuple[int, int]]:
        """token → (id, rank) for the tokens already known."""
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(tokens), _BATCH):
            chunk = list(tokens[start : start + _BATCH])
            marks = ",".join("?" * len(chunk))
            for token, tid, rank in self.conn.execute(
                f"SELECT token, tid, rank FROM vocab WHERE token IN ({marks})", chunk
            ):
                found[token] = (tid, rank)
        return found

    def add_tokens(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """New (token, id, rank, document frequency) rows."""
        self.conn.executemany("INSERT INTO vocab (token, tid, rank, df) VALUES (?, ?, ?, ?)", rows)

    def change_df(self, tids: Iterable[int], delta: int) -> None:
        self.conn.executemany(
            "UPDATE vocab SET df = df + ? WHERE tid = ?", [(delta, t) for t in tids]
        )

    def ranks(self, tids: Sequence[int]) -> dict[int, int]:
        found: dict[int, int] = {}
        for start in range(0, len(tids), _BATCH):
            chunk = list(tids[start : start + _BATCH])
            marks = ",".join("?" * len(chunk))
            found.update(
                self.conn.execute(f"SELECT tid, rank FROM vocab WHERE tid IN ({marks})", chunk)
            )
        return found

    def rank_by_frequency(self) -> list[int]:
        """Re-rank every token rarest first (ties by id); returns rank by token id."""
        self.conn.execute(
            "UPDATE vocab SET rank = r.rk FROM (SELECT tid, row_number() OVER "
            "(ORDER BY df, tid) - 1 AS rk FROM vocab) AS r WHERE vocab.tid = r.tid"
        )
        size = self.conn.execute("SELECT coalesce(max(tid), -1) + 1 FROM vocab").fetchone()[0]
        ranks = np.zeros(size, dtype=np.int64)
        for tid, rank in self.conn.execute("SELECT tid, rank FROM vocab"):
            ranks[tid] = rank
        return ranks.tolist()

    # --- postings ---------------------------------------------------------------------
    def add_postings(self, rows: Iterable[tuple[int, int, int, int]]) -> None:
        """(token id, item length, ord, position) rows."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO postings (tid, n, ord, pos) VALUES (?, ?, ?, ?)", rows
        )

    def drop_postings(self, keys: Iterable[tuple[int, int, int]]) -> None:
        self.conn.executemany("DELETE FROM postings WHERE tid = ? AND n = ? AND ord = ?", keys)

    def stage(self, table: str, rows: Iterable[tuple[int, ...]]) -> None:
        """Append rows for `table` to a scratch table; `load_staged` swaps them in."""
        columns = _KEYS[table]
        self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} ({columns})")
        marks = ",".join("?" * (columns.count(",") + 1))
        self.conn.executemany(f"INSERT INTO temp.stage_{table} VALUES ({marks})", rows)

    def load_staged(self, table: str) -> None:
        """Replace every row of `table` (bands or postings) by the staged ones (a re-index or a rebuild)."""
        # Inserting the scratch rows sorted writes the B-tree in key order: far faster
        # than millions of inserts at random places.
        columns = _KEYS[table]
        self.stage(table, ())
        # Dropping is much faster than deleting millions of rows one by one.
        self.conn.execute(f"DROP TABLE {table}")
        self.conn.execute(_TABLES[table])
        self.conn.execute(
            f"INSERT OR IGNORE INTO {table} ({columns}) "
            f"SELECT {columns} FROM temp.stage_{table} ORDER BY {columns}"
        )
        self.conn.execute(f"DROP TABLE temp.stage_{table}")

    def postings(
        self, probes: Sequence[tuple[int, int, int, int]], m: int, threshold: float
    ) -> np.ndarray:
        """(probe, ord, length, position) rows for probes (probe, token id, shortest, longest).

        Only rows whose item still holds, after the position, the overlap a
        ROUGE-L F1 ≥ threshold with a text of m tokens needs (bound (6) of
        `agents.novelty`, item side; 1e-9 of slack against rounding).
        """
        branch = (
            "SELECT ?, ord, n, pos FROM postings WHERE tid = ? AND n BETWEEN ? AND ? "
            "AND n - pos >= ? * (? + n) / 2.0 - 1e-9"
        )
        rows: list[tuple[int, int, int, int]] = []
        for start in range(0, len(probes), _COMPOUND):
            chunk = probes[start : start + _COMPOUND]
            params: list[float] = []
            for probe in chunk:
                params += [*probe, threshold, m]
            sql = " UNION ALL ".join([branch] * len(chunk))
            rows += self.conn.execute(sql, params).fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1, 4)
