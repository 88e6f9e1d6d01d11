"""Exact and near-duplicate queries against the accepted pool in the index file (`agents.selection.pool_index`).

Decides as `DedupIndex` built from the accepted pool in rowid order would:

* exact: the same normalized-text hash; the twin named is the earliest
  (lowest rowid, asked of the pool) accepted example with it, None when that
  is `exclude`;
* near: the LSH bands datasketch picks for these settings (`lsh_bands`), so
  the same candidates — each stored band key is a 32-bit hash, and a proposed
  item must agree on every value of one band (`shares_band`), so a key
  collision adds nothing; then the same Jaccard estimate (equal signature
  values / num_perm), threshold and tie rule (highest, then smallest id).

Examples accepted by `select(commit=True)` and not yet in the store's log are
asked in the in-memory overlay too; the file's items come first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from evoinstruct.agents.selection.dedup import DedupIndex, minhash_signature
from evoinstruct.agents.selection.pool_index import PoolView, band_keys, shares_band
from evoinstruct.agents.text import text_hash

if TYPE_CHECKING:
    from evoinstruct.agents.selection.pool_index import PoolIndex


class PoolDedup(PoolView):
    """The dedup stages' view of the pool, read from SQLite (see the module docstring)."""

    overlay: DedupIndex

    def __init__(self, index: PoolIndex) -> None:
        super().__init__(index, index.overlay_dedup)
        self.config = index.config.dedup

    def add(self, item_id: str, text: str) -> None:
        """Hold an example accepted ahead of the store until the store's log reports it."""
        self.index.sync()
        if not self.index.has(item_id):
            self.overlay.add(item_id, text)

    def exact(self, text: str, exclude: str | None = None) -> str | None:
        """Id of the earliest indexed text with the same normalized form (never `exclude`)."""
        self.index.sync()
        twins = self.index.file.ids_with_hash(text_hash(text))
        found = self.index.earliest(twins) if twins else None
        if found is None:
            found = self.overlay.exact(text)
        return None if found == exclude else found

    def near(self, text: str, exclude: str | None = None) -> tuple[str, float] | None:
        """Most similar indexed text with estimated Jaccard ≥ threshold (ties: smallest id)."""
        self.index.sync()
        sig = minhash_signature(text, self.config)
        if sig is None:
            return None
        matches = self._file_matches(sig, exclude)
        overlay = self.overlay
        if len(overlay):
            found = overlay.near(text, exclude)
            if found is not None:
                matches.append(found)
        return min(matches, key=lambda m: (-m[1], m[0])) if matches else None

    def _file_matches(self, sig: np.ndarray, exclude: str | None) -> list[tuple[str, float]]:
        bands = self.index.bands
        file = self.index.file
        matches = []
        for _, other_id, blob in file.signatures(file.ords_in_bands(band_keys(sig, bands))):
            other = np.frombuffer(blob, dtype=sig.dtype)
            # A shared 32-bit key without shared values is a hash collision, not a candidate.
            if other_id == exclude or not shares_band(other, sig, bands):
                continue
            sim = float(np.count_nonzero(other == sig)) / sig.size
            if sim >= self.config.jaccard_threshold:
                matches.append((other_id, sim))
        return matches


@dataclass(frozen=True)
class LshCheck:
    """How the file's LSH candidates compare with the banding rule applied to every item."""

    probes: int
    candidates: int  # (probe, item) pairs the file proposed
    mismatches: int  # probes whose candidate set differs from the exhaustive one


def file_candidates(index: PoolIndex, sig: np.ndarray) -> set[str]:
    """Ids the index file proposes for a signature: band keys looked up, values verified."""
    file, bands = index.file, index.bands
    return {
        other_id
        for _, other_id, blob in file.signatures(file.ords_in_bands(band_keys(sig, bands)))
        if shares_band(np.frombuffer(blob, dtype=sig.dtype), sig, bands)
    }


def check_lsh(index: PoolIndex, texts: Sequence[str]) -> LshCheck:
    """Compare the file's candidates for `texts` with one scan of every stored signature.

    The scan applies datasketch's rule (a candidate agrees with the probe on all
    values of at least one band) to every item, so it needs no in-memory LSH and
    runs on a pool of any size: one pass over the file for all probes.
    """
    index.sync()
    sigs = [s for s in (minhash_signature(t, index.config.dedup) for t in texts) if s is not None]
    b, r = index.bands
    width = r * sigs[0].itemsize if sigs else 0
    wanted: list[dict[bytes, list[int]]] = [{} for _ in range(b)]
    for p, sig in enumerate(sigs):
        raw = sig.tobytes()
        for i in range(b):
            wanted[i].setdefault(raw[i * width : (i + 1) * width], []).append(p)
    exhaustive: list[set[str]] = [set() for _ in sigs]
    for rows in index.file.iter_signatures():
        for _, item_id, blob in rows:
            for i in range(b):
                for p in wanted[i].get(blob[i * width : (i + 1) * width], ()):
                    exhaustive[p].add(item_id)
    proposed = [file_candidates(index, sig) for sig in sigs]
    return LshCheck(
        probes=len(sigs),
        candidates=sum(len(c) for c in proposed),
        mismatches=sum(a != e for a, e in zip(proposed, exhaustive, strict=True)),
    )
