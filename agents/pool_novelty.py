"""ROUGE-L novelty against the accepted pool in the index file (`agents.pool_index`).

The same prefix filter as `NoveltyIndex` (read the proof in `agents.novelty`),
with the postings in SQLite: a candidate's prefix tokens are probed in rank
order for items of a length window that contains every length bound (1)
allows, the first row met per item gives its smallest shared element, bounds
(1) and (6) are applied to it exactly as in memory, then bound (3) and exact
ROUGE-L on the shortlist. Ranks live in the file: fixed between re-indexings,
a token first seen later sorting before all others, so every stored prefix
stays the one its ranks define. Decisions equal the in-memory index's built
from the accepted pool in rowid order: among equal best scores the lowest
rowid wins, then the overlay of examples accepted ahead of the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from evoinstruct.agents.novelty import (
    _EPS,
    NoveltyDecision,
    NoveltyIndex,
    _lcs_masks,
    prefix_firsts,
    rouge_l_f1,
)
from evoinstruct.agents.pool_index import PoolView
from evoinstruct.agents.text import tokenize

if TYPE_CHECKING:
    from evoinstruct.agents.pool_index import PoolIndex


def length_window(m: int, threshold: float) -> tuple[int, int]:
    """Item lengths n that may satisfy bound (1) 2·min(m, n) ≥ τ(m+n), widened by one each side."""
    alpha = threshold / (2.0 - threshold)
    return max(1, math.floor(alpha * m) - 1), math.ceil(m / alpha) + 1


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
        vocab = self.index.file.lookup_tokens(list(set(tokens)))
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
        shortlist = self._shortlist(known, dict(vocab.values()), m)
        half, tau = self._tau / 2.0, self._tau
        qset = frozenset(known)
        q_excess = m - len(set(tokens))
        skip = self.index.file.item_state(exclude) if exclude is not None else None
        best_f, best_ord = tau, -1
        for ord, blob in self.index.file.token_rows(shortlist):  # ascending ord
            if skip is not None and ord == skip[0]:
                continue
            toks = memoryview(blob).cast("i").tolist()
            n = len(toks)
            distinct = set(toks)
            # Overlap bound (3), as in NoveltyIndex._match.
            if len(qset & distinct) + min(n - len(distinct), q_excess) < half * (m + n) - _EPS:
                continue
            f = rouge_l_f1(_lcs_masks(masks, m, toks), m, n)
            if f > best_f:  # strict: among equal scores the earliest (lowest rowid) wins
                best_f, best_ord = f, ord
        best_id = self.index.file.id_at(best_ord) if best_ord >= 0 else None
        return None if best_id is None else (best_f, best_id)

    def _shortlist(self, known: list[int], rank: dict[int, int], m: int) -> list[int]:
        """Items passing the prefix (5), length (1) and positional (6) bounds, in ord order."""
        tau = self._tau
        firsts = prefix_firsts(known, rank.__getitem__, tau, m - len(known))
        shortest, longest = length_window(m, tau)
        probes = []
        for k, (tid, i) in enumerate(firsts):
            # Bound (6), candidate side: m − i ≥ τ(m+n)/2 caps n for this probe.
            cap = min(longest, math.floor(2.0 * (m - i) / tau - m) + 1)
            if cap >= shortest:
                probes.append((k, tid, shortest, cap))
        table = self.index.file.postings(probes, m, tau)
        if not len(table):
            return []
        # Probes run in rank order: an item's lowest probe is its smallest shared element,
        # whose positions bound (6) takes, as in NoveltyIndex._shortlist.
        table = table[np.lexsort((table[:, 0], table[:, 1]))]
        ords, first = np.unique(table[:, 1], return_index=True)
        n, j = table[first, 2], table[first, 3]
        i = np.array([pos for _, pos in firsts], dtype=np.int64)[table[first, 0]]
        ok = (np.minimum(m, n) * 2.0 >= tau * (m + n) - _EPS) & (
            np.minimum(m - i, n - j) >= tau * (m + n) / 2.0 - _EPS
        )
        return ords[ok].tolist()
