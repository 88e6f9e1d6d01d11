"""ROUGE-L novelty against the accepted pool in the index file (`agents.selection.pool_index`).

The prefix filter of `NoveltyIndex` (read the proof in `agents.selection.novelty`) with
the postings in SQLite, searched for the best match with a rising threshold:

* The candidate's prefix tokens are probed in rank order, a few at a time.
  A probe reads, per item length n its window allows (bound (1), and bound
  (6) candidate side, m − i ≥ τ(m+n)/2), the rows whose slack n − j reaches
  τ(m+n)/2 (bound (6), item side): an index range per length, or one range
  over all lengths for a token with few postings.
* Bound (7) of `agents.selection.novelty_postings` (the sketch of the item's elements
  after the probed one) is true for the row at the item's smallest shared
  element u, and for a later row only counts fewer shared elements than there
  are. So every row is judged as if it were at u: an item that can score
  ≥ τ passes through its row at u, which the probe of u reads, and a later
  row lets through at most an item that is then verified for nothing.
* What passes is verified in the order of the score bound (7) allows: bound
  (3) on the item's tokens, then exact ROUGE-L.
* Every bound is derived from F ≥ τ, and holds for any τ' ≥ τ. Once a match of
  score F* is found, only items scoring ≥ F* can change the answer (a higher
  score, or an equal one earlier in the pool), so the search goes on with τ'
  = F*: the candidate's prefix shortens to its first m − t'(m) + 1 elements
  (lemma (5) at τ', whose item-side prefix lies within the posted one), and
  windows, slacks and bounds tighten. An item passed over was shown to score
  < τ' when it was met, and τ' only rises: nothing it skipped can win.

A near copy is usually found by the first probes and the bound-first order,
and what follows reads little. Among equal best scores the pool decides
(`PoolIndex.earliest`: the lowest rowid, asked of the pool, as a rebuild in
rowid order would); then the overlay of examples accepted ahead of the store,
which wins only a strictly higher score.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from evoinstruct.agents.selection.novelty import (
    _EPS,
    NoveltyDecision,
    NoveltyIndex,
    _lcs_masks,
    min_overlap,
    prefix_firsts,
    rouge_l_f1,
)
from evoinstruct.agents.selection.novelty_postings import token_bit
from evoinstruct.agents.selection.pool_index import PoolView
from evoinstruct.agents.text import tokenize

if TYPE_CHECKING:
    from evoinstruct.agents.selection.pool_index import PoolIndex
    from evoinstruct.store.selector_index import IndexFile


class PoolNovelty(PoolView):
    """The novelty filter's view of the pool, read from SQLite (see the module docstring)."""

    overlay: NoveltyIndex

    def __init__(self, index: PoolIndex) -> None:
        super().__init__(index, index.overlay_novelty)
        self.config = index.config.novelty
        self._tau = self.config.threshold

    def add(self, item_id: str, text: str) -> None:
        """Hold an example accepted ahead of the store until the store's log reports it."""
        self.index.sync()
        self._hold(item_id, tokenize(text))

    def best_match(self, text: str, exclude: str | None = None) -> tuple[float, str] | None:
        """(ROUGE-L F1, id) of the most similar reference text if above the threshold, else None."""
        self.index.sync()
        return self._best(tokenize(text), exclude)

    def filter(
        self, items: Iterable[tuple[str, str]], *, commit: bool = True
    ) -> list[NoveltyDecision]:
        """`NoveltyIndex.filter`'s sequential semantics; with commit the accepted join the overlay."""
        self.index.sync()
        scratch = None if commit else NoveltyIndex(self.config)
        decisions = []
        for item_id, text in items:
            tokens = tokenize(text)
            best = self._best(tokens, item_id)
            if scratch is not None:
                local = scratch.match_tokens(tokens)
                if local is not None and (best is None or local[0] > best[0]):
                    best = local
            if best is None:
                if scratch is None:
                    self._hold(item_id, tokens)
                else:
                    scratch.add_tokens(item_id, tokens)
                decisions.append(NoveltyDecision(item_id, True))
            else:
                decisions.append(NoveltyDecision(item_id, False, best[0], best[1]))
        return decisions

    def _hold(self, item_id: str, tokens: Sequence[str]) -> None:
        if not self.index.has(item_id):
            self.overlay.add_tokens(item_id, tokens)

    def _best(self, tokens: Sequence[str], exclude: str | None) -> tuple[float, str] | None:
        found = self._file_best(tokens, exclude)
        overlay = self.overlay
        if len(overlay):
            # The file's items were added first: the overlay wins only a strictly higher score.
            local = overlay.match_tokens(tokens, exclude)
            if local is not None and (found is None or local[0] > found[0]):
                found = local
        return found

    def _file_best(self, tokens: Sequence[str], exclude: str | None) -> tuple[float, str] | None:
        m = len(tokens)
        if m == 0:
            return None
        file = self.index.file
        distinct = set(tokens)
        if len(distinct) > 500:  # SQLite's variable limit is far above; long texts go in parts
            vocab = {}
            for part in _parts(list(distinct), 500):
                vocab.update(file.token_stats(part))
        else:
            vocab = file.token_stats(list(distinct))
        masks: dict[int, int] = {}
        known: list[int] = []
        bit = 1
        for tok in tokens:
            hit = vocab.get(tok)
            if hit is not None:
                masks[hit[0]] = masks.get(hit[0], 0) | bit
                known.append(hit[0])
            bit <<= 1
        if not known:
            return None
        rank = {tid: r for tid, r, _ in vocab.values()}.__getitem__
        df = {tid: d for tid, _, d in vocab.values()}
        skip = file.item_state(exclude) if exclude is not None else None
        search = _Search(self._tau, tokens, masks, known, sorted(known, key=rank))
        if skip is not None:
            search.verified.add(skip[0])
        probes = prefix_firsts(known, rank, self._tau, m - len(known))
        start = 0
        for size in _BATCHES:
            # Lemma (5) at τ' = the best score so far: the prefix ends at m − t'(m).
            end = m - min_overlap(m, search.best)
            batch = [(tid, i, df[tid]) for tid, i in probes[start : start + size] if i <= end]
            if not batch:
                break
            search.probe(batch, file)
            start += size
        if not search.tied:
            return None
        return search.best, self.index.earliest(file.ids_at(search.tied))


# A window per length costs a B-tree seek, a row in a wider window a comparison: a
# token with at most this many postings per length of its window is read in one range.
_SEEK_ROWS = 16

_MASK64 = (1 << 64) - 1

# Items whose tokens are read first, the likeliest by their score bound; then 4x as many.
_FIRST_READ = 8

# Probes read per round trip: the rarest first, alone, so that a near copy found there
# shortens and tightens the rest (a rising τ'), then the others together.
_BATCHES = (2, 1 << 30)


class _Search:
    """One candidate's search for its best match in the file (see the module docstring)."""

    def __init__(
        self,
        tau: float,
        tokens: Sequence[str],
        masks: dict[int, int],
        known: list[int],
        ordered: list[int],
    ) -> None:
        self.best = tau  # τ': a match must reach it (exceed it while none is found)
        self.tied: list[int] = []  # ords of the items scoring `best`
        self.m = m = len(tokens)
        self.masks = masks
        self.verified: set[int] = set()  # items whose score is known (and the candidate)
        # The sketch bits of the known elements in rank order; the never-indexed tokens
        # sort before them (and match nothing).
        self.bits = [token_bit(t) for t in ordered]
        self.unknown = m - len(known)
        counts = Counter(known)
        self.q_tids = np.array(sorted(counts), dtype=np.int64)
        self.q_counts = np.array([counts[t] for t in self.q_tids.tolist()], dtype=np.int64)

    def probe(self, batch: list[tuple[int, int, int]], file: IndexFile) -> None:
        """Read the postings of (token id, position, document frequency) probes, then verify."""
        records = file.probe(self._windows(batch))
        if not len(records):
            return
        tids = np.array([tid for tid, _, _ in batch], dtype=np.int64)
        sorter = np.argsort(tids)
        k = sorter[np.searchsorted(tids, records["tid"], sorter=sorter)]  # which probe
        m, tau = self.m, self.best
        n = records["n"].astype(np.int64)
        slack = records["slack"].astype(np.int64)
        need = tau * (m + n) / 2.0 - _EPS
        # Bound (7), each record judged as if at its item's smallest shared element u:
        # true for the record at u, an undercount for a later one. An item that can
        # reach τ' passes through its record at u, read in this batch or an earlier one.
        past = np.zeros(len(records), dtype=np.int64)
        sketches = records["sketch"]
        for layer in self._after_masks(batch):
            past += np.bitwise_count(sketches & layer[k]).sum(axis=1, dtype=np.int64)
        overlap = 1 + np.minimum(past, slack - 1)
        # Bound (6) item side too: a window over several lengths asks the least slack of
        # its shortest.
        keep = (slack >= need) & (overlap >= need)
        if not keep.any():
            return
        ords = records["ord"][keep].astype(np.int64)
        ceiling = 2.0 * overlap[keep] / (m + n[keep])
        # One entry per item, with its highest bound; items verified before are done.
        order = np.argsort(-ceiling, kind="stable")
        ords, ceiling = ords[order], ceiling[order]
        _, first = np.unique(ords, return_index=True)
        first.sort()
        ords, ceiling = ords[first], ceiling[first]
        if self.verified:
            fresh = np.fromiter((o not in self.verified for o in ords.tolist()), bool, len(ords))
            ords, ceiling = ords[fresh], ceiling[fresh]
        self._verify_best_first(ords, ceiling, file)

    def _after_masks(self, batch: list[tuple[int, int, int]]) -> list[np.ndarray]:
        """Per probe of the batch, the bits of the candidate's elements after its position, as
        (probes, 2) uint64 layers: layer r holds the bits found at least r + 1 times there,
        so summing a sketch's popcount over the layers counts those elements."""
        wanted = {i: p for p, (_, i, _) in enumerate(batch)}
        layers = [[[0, 0] for _ in batch]]
        current: list[int] = []  # the layers of the suffix walked so far, as 128-bit ints
        seen: Counter[int] = Counter()
        # Walk the elements from the last one back, noting the suffix at each probe.
        for pos in range(self.m - 1, self.unknown - 1, -1):
            p = wanted.get(pos)
            if p is not None:
                while len(layers) < len(current):
                    layers.append([[0, 0] for _ in batch])
                for r, bits in enumerate(current):
                    layers[r][p] = [bits & _MASK64, bits >> 64]
            bit = self.bits[pos - self.unknown]
            r = seen[bit]
            seen[bit] += 1
            if r == len(current):
                current.append(0)
            current[r] |= 1 << bit
        return [np.array(rows, dtype=np.uint64) for rows in layers]

    def _verify_best_first(self, ords: np.ndarray, ceiling: np.ndarray, file: IndexFile) -> None:
        """Verify items sorted by the score bound (7) allows, a few first: once a high score
        is found, the items whose bound falls below it are never read."""
        start, size = 0, _FIRST_READ
        while start < len(ords):
            # Sorted by the bound: the first below the best score so far ends the search.
            end = min(start + size, int(np.searchsorted(-ceiling, _EPS - self.best, "right")))
            if end <= start:
                return
            self._verify(file.tokens(ords[start:end].tolist()))
            start, size = end, size * 4

    def _windows(self, batch: list[tuple[int, int, int]]) -> np.ndarray:
        """[token id, least n, most n, least slack] windows of the lengths bounds (1) and (6) allow.

        The lengths form one interval. A token with few postings is read over all of it
        at once (slack checked on the records); a frequent one per length, each with its
        own least slack, so that no row below it is read.
        """
        m, tau = self.m, self.best
        alpha = tau / (2.0 - tau)
        ns = np.arange(max(1, math.floor(alpha * m) - 1), math.ceil(m / alpha) + 2)
        need = tau * (m + ns) / 2.0 - _EPS
        least = np.maximum(1, np.ceil(need)).astype(np.int64)
        fits = (2.0 * np.minimum(m, ns) >= tau * (m + ns) - _EPS) & (least <= ns)
        ns, need, least = ns[fits].tolist(), need[fits].tolist(), least[fits].tolist()
        out: list[list[int]] = []
        for tid, i, df in batch:
            cut = bisect.bisect_right(need, m - i)  # bound (6), candidate side: m − i ≥ need
            if not cut:
                continue
            if df <= _SEEK_ROWS * cut:
                out.append([tid, ns[0], ns[cut - 1], least[0]])
            else:
                out += [[tid, n, n, s] for n, s in zip(ns[:cut], least[:cut], strict=False)]
        return np.array(out, dtype=np.int64).reshape(-1, 4)

    def _verify(self, items: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Bound (3) with the exact multiset overlap for all items at once, then ROUGE-L."""
        ords, lengths, flat = items
        self.verified.update(ords.tolist())
        if not len(ords):
            return
        m, q_tids, width = self.m, self.q_tids, len(self.q_tids)
        owner = np.repeat(np.arange(len(ords)), lengths)
        at = np.minimum(np.searchsorted(q_tids, flat), width - 1)
        shared = q_tids[at] == flat
        pairs, counts = np.unique(owner[shared] * width + at[shared], return_counts=True)
        common = np.minimum(counts, self.q_counts[pairs % width])
        overlap = np.bincount(pairs // width, weights=common, minlength=len(ords))
        starts = np.cumsum(lengths) - lengths
        # Likeliest first: a high score found early lets the bound skip more of the rest.
        for j in np.argsort(-overlap, kind="stable").tolist():
            n = int(lengths[j])
            if overlap[j] < self.best * (m + n) / 2.0 - _EPS:
                continue
            toks = flat[starts[j] : starts[j] + n].tolist()
            f = rouge_l_f1(_lcs_masks(self.masks, m, toks), m, n)
            ord = int(ords[j])
            if f > self.best:
                self.best, self.tied = f, [ord]
            elif f == self.best and self.tied:
                self.tied.append(ord)


def _parts(items: list[str], size: int) -> list[list[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
