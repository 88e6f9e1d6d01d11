"""The selector's pool indexes kept in SQLite beside the pool, in step with the store's change log.

Memory does not grow with the pool: what the selector needs per accepted
example is computed once, when the index first sees it accepted, and kept in
the index file (`store.selector_index`); queries read it there through
SQLite's bounded page cache. Opening rebuilds nothing unless the settings that
define the rows changed (`fingerprint`), the file is missing or belongs to
another pool: it applies the pool's change log (`store.selector_log`) from the
watermark it committed with its rows.

Consistency with the store, the source of truth: triggers log every example
entering or leaving `accepted` (or changing text while accepted) in the
write's own transaction; the index applies the logged examples' *current*
rows and moves its watermark in one transaction of its own. A crash between
the two leaves entries past the watermark, applied at the next query;
applying one twice changes nothing.

Decisions are those of the in-memory `DedupIndex` and `NoveltyIndex` built
from the accepted pool in rowid order, ties included (see `agents.selection.pool_dedup`
and `agents.selection.pool_novelty`). Rows are keyed by example id and numbered by the
file itself, never by the pool's rowids, which a VACUUM or a dump and reload
of `pool.db` may renumber: where the pool's order breaks a tie, the pool is
asked (`earliest`). Token ranks, once given, never change (a token first
seen sorts before all others), so the file is never re-ranked: growth costs
each round only the rows of what it added.

`select(commit=True)` adds accepted examples before the caller writes them
to the store; they wait in an in-memory overlay (the in-memory indexes,
holding one batch) that queries consult after the file, until the log
reports them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.agents.selection.dedup import (
    DedupIndex,
    lsh_bands,
    minhash_signature,
    signature_dtype,
)
from evoinstruct.agents.selection.novelty import NoveltyIndex
from evoinstruct.agents.selection.novelty_postings import item_postings
from evoinstruct.agents.selector import SelectorConfig, field_text
from evoinstruct.agents.text import text_hash, tokenize
from evoinstruct.store.records import Example
from evoinstruct.store.selector_index import IndexFile, pack_record, remove_file, sidecar_path
from evoinstruct.store.selector_log import PoolChange

if TYPE_CHECKING:
    from evoinstruct.store import Store

# Bump when tokenization, shingling or the file's layout changes: every index rebuilds once.
INDEX_FORMAT = 2
_BATCH = 2000
_PRUNE_EVERY = 10_000  # log rows consumed between two prunings of the pool's log


def fingerprint(config: SelectorConfig) -> dict[str, Any]:
    """The settings that define the rows (the in-memory index's re-ranking knobs are left out)."""
    return {
        "format": INDEX_FORMAT,
        "dedup_fields": list(config.dedup_fields),
        "novelty_fields": list(config.novelty_fields),
        "dedup": config.dedup.model_dump(),
        "novelty_threshold": config.novelty.threshold,
    }


def band_keys(sig: np.ndarray, bands: tuple[int, int]) -> list[int]:
    """One 32-bit key per LSH band (the band's number and values hashed).

    A key only proposes candidates: `shares_band` then checks the values, so a
    collision of two keys never adds a candidate datasketch would not propose.
    """
    b, r = bands
    return [
        int.from_bytes(
            hashlib.blake2b(
                sig[i * r : (i + 1) * r].tobytes(), digest_size=4, salt=i.to_bytes(2, "little")
            ).digest(),
            "little",
            signed=True,
        )
        for i in range(b)
    ]


def shares_band(a: np.ndarray, q: np.ndarray, bands: tuple[int, int]) -> bool:
    """Whether two signatures agree on every value of at least one band (datasketch's candidate rule)."""
    b, r = bands
    return bool((a[: b * r].reshape(b, r) == q[: b * r].reshape(b, r)).all(axis=1).any())


@dataclass
class _Features:
    content: str  # hash of the indexed texts: a changed text is re-indexed
    exact: str
    sig: np.ndarray | None
    tokens: list[str]


@dataclass
class _State:
    """The file's counters, read and written inside each of its transactions."""

    watermark: int
    next_tid: int
    next_rank: int
    alive: int

    @classmethod
    def read(cls, file: IndexFile) -> _State:
        meta = file.meta()
        return cls(**{k: meta[k] for k in cls.__dataclass_fields__})

    def write(self, file: IndexFile) -> None:
        file.put_meta(**asdict(self))


class PoolView:
    """One selector stage's view of the pool: the index file, then the overlay of examples
    accepted ahead of the store (`overlay` names which of the index's overlays)."""

    def __init__(self, index: PoolIndex, overlay: DedupIndex | NoveltyIndex) -> None:
        self.index = index
        self.overlay = overlay

    def __len__(self) -> int:
        return len(self.index) + len(self.overlay)

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        return self.index.has(item_id) or item_id in self.overlay


class PoolIndex:
    """The accepted pool's dedup and novelty rows in the index file, kept in step with the store."""

    def __init__(self, store: Store, config: SelectorConfig, path: Path | None = None) -> None:
        self.store = store
        self.config = config
        self.path = Path(path) if path is not None else sidecar_path(store.path)
        self.bands = lsh_bands(config.dedup)
        self.work: Counter[str] = Counter()  # examples indexed / removed, rebuilds, re-indexes
        self.rebuilt_because: str | None = None
        self.overlay_dedup = DedupIndex(config.dedup)
        self.overlay_novelty = NoveltyIndex(config.novelty)
        self._fingerprint = fingerprint(config)
        self.file = self._open()
        self._watermark = _State.read(self.file).watermark
        self._pruned = store.selector_log_state()[1]
        self.sync()
        if self._out_of_step():
            self.file.close()
            self._rebuild("count differs from the pool")
            self.file = IndexFile(self.path)
            self._watermark = _State.read(self.file).watermark
            self.sync()
        self._prune()

    def close(self) -> None:
        self.file.close()

    def __len__(self) -> int:
        return _State.read(self.file).alive

    def has(self, example_id: str) -> bool:
        return self.file.item_state(example_id) is not None

    def earliest(self, example_ids: list[str]) -> str:
        """Of several indexed examples, the one first in the pool's order (ties go to it).

        Should the pool hold none of them any more (deleted since the last sync, which
        the next query applies), the smallest id answers.
        """
        if len(example_ids) == 1:
            return example_ids[0]
        return self.store.earliest_in_pool(example_ids) or min(example_ids)

    # --- following the store ---------------------------------------------------------
    def sync(self) -> None:
        """Apply the pool's logged changes past the watermark (one cheap query when there are none)."""
        if self.store.selector_log_head() <= self._watermark:
            return
        settled: set[str] = set()
        while True:
            with self.file.write():
                state = _State.read(self.file)
                last, changes = self.store.selector_changes(state.watermark, _BATCH)
                for change in changes:
                    self._apply(change, state)
                    settled.add(change.example_id)
                state.watermark = last
                state.write(self.file)
            self._watermark = last
            if not changes:
                break
        for example_id in settled:  # the store has spoken: the file answers for them now
            self.overlay_dedup.remove(example_id)
            self.overlay_novelty.remove(example_id)
        if self._watermark - self._pruned >= _PRUNE_EVERY:
            self._prune()

    def _apply(self, change: PoolChange, state: _State) -> None:
        current = self.file.item_state(change.example_id)
        if change.example is None:
            if current is not None:
                self._remove(current[0], state)
            return
        texts = self._texts(change.example)
        if current is not None and current[1] == _content(*texts):
            return  # already indexed as it is (an entry consumed twice)
        if current is not None:
            self._remove(current[0], state)
        self._add(change.example.id, self._features(*texts), state)

    def _texts(self, example: Example) -> tuple[str, str]:
        """The (dedup, novelty) texts of an example."""
        return (
            field_text(example, self.config.dedup_fields),
            field_text(example, self.config.novelty_fields),
        )

    def _features(self, dedup_text: str, novelty_text: str) -> _Features:
        return _Features(
            _content(dedup_text, novelty_text),
            text_hash(dedup_text),
            minhash_signature(dedup_text, self.config.dedup),
            tokenize(novelty_text),
        )

    def _add(self, example_id: str, f: _Features, state: _State) -> None:
        distinct = list(dict.fromkeys(f.tokens))
        known = self.file.lookup_tokens(distinct)
        new = []
        for token in distinct:
            if token not in known:
                # A token first seen now sorts before all others: existing prefixes stay valid.
                known[token] = (state.next_tid, state.next_rank)
                new.append((token, state.next_tid, state.next_rank, 0))
                state.next_tid += 1
                state.next_rank -= 1
        self.file.add_tokens(new)
        self.file.change_df([known[t][0] for t in distinct], +1)
        tids = [known[t][0] for t in f.tokens]
        rank = dict(known.values())
        sig = None if f.sig is None else f.sig.tobytes()
        ord = self.file.add_item(example_id, f.content, f.exact, sig, array("i", tids).tobytes())
        if f.sig is not None:
            self.file.add_bands((key, ord) for key in band_keys(f.sig, self.bands))
        self.file.add_postings(_rows(tids, ord, rank.__getitem__, self._tau))
        state.alive += 1
        self.work["indexed"] += 1

    def _remove(self, ord: int, state: _State) -> None:
        taken = self.file.take_item(ord)
        if taken is None:
            return
        sig, toks = taken
        if sig is not None:
            values = np.frombuffer(sig, dtype=self._sig_dtype)
            self.file.drop_bands((key, ord) for key in band_keys(values, self.bands))
        tids = memoryview(toks).cast("i").tolist()
        distinct = list(set(tids))
        rank = self.file.ranks(distinct)
        # Ranks never change, so these are the rows that were posted.
        self.file.drop_postings(
            (tid, n, slack, ord)
            for tid, n, slack, _ in item_postings(tids, rank.__getitem__, self._tau)
        )
        self.file.change_df(distinct, -1)
        state.alive -= 1
        self.work["removed"] += 1

    @property
    def _tau(self) -> float:
        return self.config.novelty.threshold

    @property
    def _sig_dtype(self) -> np.dtype:
        return signature_dtype(self.config.dedup)

    def _post_all(self, file: IndexFile, ranks: list[int]) -> None:
        for rows in file.iter_token_rows():
            postings = []
            for ord, toks in rows:
                tids = memoryview(toks).cast("i").tolist()
                postings += _rows(tids, ord, ranks.__getitem__, self._tau)
            file.stage("postings", postings)
        file.load_staged("postings")

    def _prune(self) -> None:
        if self._watermark > self._pruned:
            self.store.prune_selector_log(self._watermark)
            self._pruned = self._watermark

    def _out_of_step(self) -> bool:
        """A last guard (e.g. a restored older pool): the file must hold every accepted example."""
        return self.store.count_examples(status="accepted") != len(self)

    # --- opening and rebuilding -------------------------------------------------------
    def _open(self) -> IndexFile:
        reason = self._stale_reason()
        if reason is not None:
            self._rebuild(reason)
        return IndexFile(self.path)

    def _stale_reason(self) -> str | None:
        if not self.path.exists():
            return "no index file"
        try:
            file = IndexFile(self.path)
            try:
                meta = file.meta()
            finally:
                file.close()
        except sqlite3.DatabaseError:
            return "unreadable index file"
        pool, pruned = self.store.selector_log_state()
        if meta.get("fingerprint") != self._fingerprint:
            return "index settings changed"
        if meta.get("pool") != pool:
            return "index file of another pool"
        watermark = meta.get("watermark", -1)
        if watermark > self.store.selector_log_head() or watermark < pruned:
            return "index file out of step with the pool's log"
        return None

    def _rebuild(self, reason: str) -> None:
        """Index every accepted example into a fresh file, then rename it into place."""
        building = self.path.with_name(self.path.name + ".building")
        remove_file(building)
        head = self.store.selector_log_head()  # rows read below reflect at least this
        pool = self.store.selector_log_state()[0]
        file = IndexFile(building, bulk=True)
        with file.write():
            vocab, df = self._load_items(file)
            order = sorted(range(len(df)), key=lambda t: (df[t], t))
            ranks = [0] * len(df)
            for r, tid in enumerate(order):
                ranks[tid] = r
            file.add_tokens((tok, tid, ranks[tid], df[tid]) for tok, tid in vocab.items())
            file.load_staged("bands")
            self._post_all(file, ranks)
            alive = file.count_items()
            file.put_meta(fingerprint=self._fingerprint, pool=pool, rebuilt_because=reason)
            _State(head, len(vocab), -1, alive).write(file)
        file.finish_bulk()
        remove_file(self.path)
        os.replace(building, self.path)
        self.rebuilt_because = reason
        self.work["rebuilds"] += 1

    def _load_items(self, file: IndexFile) -> tuple[dict[str, int], list[int]]:
        vocab: dict[str, int] = {}
        df: list[int] = []
        for ord, example in enumerate(self.store.iter_examples(status="accepted"), start=1):
            f = self._features(*self._texts(example))
            tids = [vocab.setdefault(t, len(vocab)) for t in f.tokens]
            df.extend([0] * (len(vocab) - len(df)))
            for tid in set(tids):
                df[tid] += 1
            sig = None if f.sig is None else f.sig.tobytes()
            toks = array("i", tids).tobytes()
            file.add_item(example.id, f.content, f.exact, sig, toks, ord=ord)
            if f.sig is not None:
                file.stage("bands", [(key, ord) for key in band_keys(f.sig, self.bands)])
            self.work["indexed"] += 1
        return vocab, df


def _rows(
    tids: list[int], ord: int, rank: Callable[[int], int], threshold: float
) -> list[tuple[int, ...]]:
    """An item's posting rows as the file stores them (`agents.selection.novelty_postings`)."""
    return [
        (tid, n, slack, ord, pack_record(tid, ord, n, slack, sketch))
        for tid, n, slack, sketch in item_postings(tids, rank, threshold)
    ]


def _content(dedup_text: str, novelty_text: str) -> str:
    """Hash of the indexed texts: an accepted example whose text changed is re-indexed."""
    return hashlib.blake2b(f"{dedup_text}\x00{novelty_text}".encode(), digest_size=16).hexdigest()
