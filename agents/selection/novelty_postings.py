"""What an accepted example posts in the persistent ROUGE-L index, and the sketch a probe tests.

An item of n token ids, its elements sorted by (rank, occurrence) as in
`agents.selection.novelty` (bound (4)), posts one row per distinct token of its prefix
(5): (token, n, slack, sketch), where slack = n − j for j the position of the
token's first occurrence, and the sketch is a 128-bit set of hashed token
ids of the elements *after* position j. The file keeps each row's fields
again as one fixed-size binary record (`store.selector_index.RECORD`), so
that a probe reads thousands of rows as one string instead of thousands of
Python tuples.

A row met at the item's smallest shared element u (position i in the
candidate, j in the item) has every other shared element after i in the
candidate and after j in the item, so

    overlap ≤ 1 + #{candidate elements after i whose bit is in the sketch}   (7)

(a shared token's bit is always set; a collision only loosens the bound).
Bound (6)'s item side, n − j ≥ τ(m+n)/2, is a lower bound on the slack, so
the file answers it with an index range instead of reading the rows.

Ranks never change once given (a token first seen sorts before all others),
so an item's rows are a function of its token ids and the ranks of the file:
they are computed the same way when the item is added and when it leaves,
and the pool growing never rewrites the rows it has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from evoinstruct.agents.selection.novelty import min_overlap

_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: consecutive token ids spread over the bits
_MASK64 = (1 << 64) - 1


def token_bit(tid: int) -> int:
    """The sketch bit of a token id (0..127)."""
    return ((tid * _GOLDEN) & _MASK64) >> 57


def item_postings(
    tids: Sequence[int], rank: Callable[[int], int], threshold: float
) -> list[tuple[int, int, int, int]]:
    """(token id, n, slack, sketch) per distinct token of the prefix; the sketch is a 128-bit int."""
    n = len(tids)
    if n == 0:
        return []
    ordered = sorted(tids, key=rank)
    end = n - min_overlap(n, threshold) + 1
    after = [0] * end  # after[j]: the bits of the elements past position j
    bits = 0
    for j in range(n - 1, -1, -1):
        if j < end:
            after[j] = bits
        bits |= 1 << (((ordered[j] * _GOLDEN) & _MASK64) >> 57)  # token_bit, inlined
    rows = []
    prev = None
    for j in range(end):
        tid = ordered[j]
        if tid != prev:
            rows.append((tid, n, n - j, after[j]))
            prev = tid
    return rows
