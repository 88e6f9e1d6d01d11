"""The selector's index file beside the pool (`pool.selector.db`): SQL for rows derived from it.

Per accepted example (`items`, keyed by the example's id; `ord` is the
file's own number for it, which keeps the other tables' keys small): the
exact-duplicate hash, the MinHash signature (`sigs`) and its LSH band keys
(`bands`), the novelty filter's token ids (`toks`) and, per token of its
prefix, a posting with its slack and sketch (`postings`, see
`agents.selection.novelty_postings`). `vocab` holds token ids, their fixed ranks and
document frequencies; `meta` the settings the rows were computed with and
the pool change-log watermark they reflect. Nothing here depends on the
pool's rowids: a VACUUM, or a dump and reload, that renumbers them leaves
the file valid (the pool's order, which breaks ties, is asked of the pool).

Why a file of its own and not tables in pool.db: it is a cache, never a source
of truth — deleting it costs one rebuild; copies and backups of the pool do
not carry it; a rebuild writes a fresh file and renames it into place, so it
never holds the pool's write lock. What it derives from (`agents.selection.pool_index`)
is decided there; this module only stores and looks up.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_TABLES = {
    "bands": "CREATE TABLE IF NOT EXISTS bands (key INTEGER NOT NULL, ord INTEGER NOT NULL, "
    "PRIMARY KEY (key, ord)) WITHOUT ROWID",
    # (tid, n, slack, ord): a probe reads, per item length n of its window, the rows
    # whose slack reaches what that length needs (one range each, no row read in vain);
    # rec holds the same fields and the sketch as one binary record.
    "postings": "CREATE TABLE IF NOT EXISTS postings (tid INTEGER NOT NULL, n INTEGER NOT NULL, "
    "slack INTEGER NOT NULL, ord INTEGER NOT NULL, rec BLOB NOT NULL, "
    "PRIMARY KEY (tid, n, slack, ord)) WITHOUT ROWID",
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
# A posting's fields and its 128-bit sketch as the fixed-size record a probe reads back.
RECORD = np.dtype(
    [("tid", "<u4"), ("ord", "<u4"), ("n", "<u4"), ("slack", "<u4"), ("sketch", "<u8", (2,))]
)
_RECORD = struct.Struct("<IIIIQQ")
_MASK64 = (1 << 64) - 1
_CACHE_KIB = 131_072  # SQLite's page cache: the bounded part of the daemon's memory this uses
_BATCH = 500
# One statement for any number of windows (a JSON array), so SQLite compiles it once;
# json_each runs first and each window is one range of the primary key. The records
# come back as one string: group_concat appends each value's bytes, and the count
# beside it checks that none was cut (a blob passes through it as text of its bytes).
# A window is one integer (token id, least n, most n, least slack in 27/12/12/12
# bits): reading fields out of a JSON array per row costs three times the rest.
_PROBE = (
    "SELECT count(*), CAST(group_concat(p.rec, '') AS BLOB) FROM json_each(?) AS w "
    "CROSS JOIN postings AS p ON p.tid = w.value >> 36 "
    "AND p.n BETWEEN (w.value >> 24) & 4095 AND (w.value >> 12) & 4095 "
    "AND p.slack >= w.value & 4095"
)
# Texts of thousands of tokens, or a vocabulary past 2^27 tokens, do not fit in one.
_PROBE_WIDE = (
    "SELECT count(*), CAST(group_concat(p.rec, '') AS BLOB) FROM json_each(?) AS w "
    "CROSS JOIN postings AS p ON p.tid = w.value ->> 0 "
    "AND p.n BETWEEN w.value ->> 1 AND w.value ->> 2 AND p.slack >= w.value ->> 3"
)
_TOKENS = (
    "SELECT group_concat(t.ord), group_concat(length(t.toks)), "
    "CAST(group_concat(t.toks, '') AS BLOB) FROM json_each(?) AS w "
    "CROSS JOIN toks AS t ON t.ord = w.value"
)
_KEYS = {"bands": "key, ord", "postings": "tid, n, slack, ord, rec"}


def pack_record(tid: int, ord: int, n: int, slack: int, sketch: int) -> bytes:
    """One posting as `RECORD` bytes (the sketch a 128-bit int)."""
    return _RECORD.pack(tid, ord, n, slack, sketch & _MASK64, sketch >> 64)


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

    def add_item(
        self,
        example_id: str,
        content: str,
        exact: str,
        sig: bytes | None,
        toks: bytes,
        ord: int | None = None,
    ) -> int:
        """Store an item under `ord` (the next free number when None); returns its ord."""
        ord = self.conn.execute(
            "INSERT INTO items (ord, id, content, exact) VALUES (?, ?, ?, ?)",
            [ord, example_id, content, exact],
        ).lastrowid
        self.conn.execute("INSERT INTO toks (ord, toks) VALUES (?, ?)", [ord, toks])
        if sig is not None:
            self.conn.execute("INSERT INTO sigs (ord, sig) VALUES (?, ?)", [ord, sig])
        return ord

    def take_item(self, ord: int) -> tuple[bytes | None, bytes] | None:
        """Delete an item; returns its (signature, token ids) so its keys can be deleted too."""
        toks = self.conn.execute("SELECT toks FROM toks WHERE ord = ?", [ord]).fetchone()
        if toks is None:
            return None
        sig = self.conn.execute("SELECT sig FROM sigs WHERE ord = ?", [ord]).fetchone()
        for table in ("items", "toks", "sigs"):
            self.conn.execute(f"DELETE FROM {table} WHERE ord = ?", [ord])
        return (None if sig is None else sig[0]), toks[0]

    def ids_at(self, ords: Sequence[int]) -> list[str]:
        """The example ids of these items, in ord order."""
        return [r[1] for r in self._by_ord("SELECT ord, id FROM items WHERE ord IN ({})", ords)]

    def count_items(self) -> int:
        return self.conn.execute("SELECT count(*) FROM items").fetchone()[0]

    def ids_with_hash(self, exact: str) -> list[str]:
        """The ids of the items with this exact-duplicate hash."""
        return [r[0] for r in self.conn.execute("SELECT id FROM items WHERE exact = ?", [exact])]

    def signatures(self, ords: Sequence[int]) -> list[tuple[int, str, bytes]]:
        """(ord, id, signature) of these items, in ord order."""
        return self._by_ord(
            "SELECT s.ord, i.id, s.sig FROM sigs AS s JOIN items AS i ON i.ord = s.ord "
            "WHERE s.ord IN ({})",
            ords,
        )

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

    def token_stats(self, tokens: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """token → (id, rank, document frequency) for the tokens already known."""
        marks = ",".join("?" * len(tokens))
        return {
            token: (tid, rank, df)
            for token, tid, rank, df in self.conn.execute(
                f"SELECT token, tid, rank, df FROM vocab WHERE token IN ({marks})", list(tokens)
            )
        }

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

    # --- postings ---------------------------------------------------------------------
    def add_postings(self, rows: Iterable[tuple[int, int, int, int, bytes]]) -> None:
        """(token id, item length, slack, ord, record) rows."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO postings (tid, n, slack, ord, rec) VALUES (?, ?, ?, ?, ?)", rows
        )

    def drop_postings(self, keys: Iterable[tuple[int, int, int, int]]) -> None:
        """(token id, item length, slack, ord) keys."""
        self.conn.executemany(
            "DELETE FROM postings WHERE tid = ? AND n = ? AND slack = ? AND ord = ?", keys
        )

    def stage(self, table: str, rows: Iterable[tuple[int, ...]]) -> None:
        """Append rows for `table` to a scratch table; `load_staged` swaps them in."""
        columns = _KEYS[table]
        self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} ({columns})")
        marks = ",".join("?" * (columns.count(",") + 1))
        self.conn.executemany(f"INSERT INTO temp.stage_{table} VALUES ({marks})", rows)

    def load_staged(self, table: str) -> None:
        """Replace every row of `table` (bands or postings) by the staged ones (a rebuild)."""
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

    def probe(self, windows: np.ndarray) -> np.ndarray:
        """The `RECORD`s of the postings in (token id, least n, most n, least slack) windows."""
        if not len(windows):
            return np.zeros(0, dtype=RECORD)
        top = windows.max(axis=0)
        if top[0] < 1 << 27 and top[1:].max() < 4096:
            packed = windows[:, 0] << 36 | windows[:, 1] << 24 | windows[:, 2] << 12 | windows[:, 3]
            count, blob = self.conn.execute(_PROBE, [json.dumps(packed.tolist())]).fetchone()
        else:
            count, blob = self.conn.execute(_PROBE_WIDE, [json.dumps(windows.tolist())]).fetchone()
        records = np.frombuffer(blob or b"", dtype=RECORD)
        if len(records) != count:
            raise sqlite3.DatabaseError(f"{count} postings read as {len(records)} records")
        return records

    def tokens(self, ords: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ords, lengths, every token id end to end) of these items, as three arrays."""
        if not len(ords):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.int32)
        found, sizes, blob = self.conn.execute(_TOKENS, [json.dumps(list(ords))]).fetchone()
        if found is None:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.int32)
        got = np.fromstring(found, dtype=np.int64, sep=",")
        lengths = np.fromstring(sizes, dtype=np.int64, sep=",") // 4
        flat = np.frombuffer(blob, dtype=np.int32)
        if len(flat) != lengths.sum() or len(got) != len(lengths):
            raise sqlite3.DatabaseError("token rows read short")
        return got, lengths, flat
