"""Exact and near-duplicate detection over the whole pool, incremental as it grows.

Exact: a hash of the normalized text (`agents.text.dedup_form`). Near: MinHash
signatures of token k-gram shingles (word k-grams for Latin text, character
k-grams for CJK, both from `agents.text.tokenize`) in a datasketch MinHashLSH
index; a candidate is a near duplicate when its estimated Jaccard similarity
with an indexed text is at least the threshold (METHODS 2.6: 0.8).

`DedupIndex` lives in memory and is never the source of truth: the store is.
`DedupIndex.build(store_items)` builds it from (id, text) pairs; `add` keeps
it current as examples are accepted. Signatures are kept as uint32 arrays
(num_perm × 4 bytes per text) so a match can report its estimated Jaccard.
The daemon keeps the same rows in SQLite instead (`agents.selection.pool_dedup`), with
the bands `lsh_bands` reports and the signatures of `minhash_signature`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.text import shingles, text_hash, tokenize
from evoinstruct.store.errors import ConfigError

if TYPE_CHECKING:
    from datasketch import MinHash

_SCHEME = "affine32"


def _datasketch() -> ModuleType:
    # Imported on first use: datasketch's package import pulls in its LSH family and
    # scipy (0.75-0.9 s here), which a daemon's start must not wait for before its first
    # model call.
    import datasketch

    return datasketch


class DedupConfig(BaseModel):
    """Near-duplicate settings (METHODS 2.6)."""

    model_config = ConfigDict(extra="forbid")

    jaccard_threshold: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Estimated Jaccard similarity at or above which a text is a near duplicate.",
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations per signature.")
    shingle_size: int = Field(
        3, ge=1, le=10, description="Tokens per shingle (words for Latin text, characters for CJK)."
    )
    seed: int = Field(1, description="MinHash seed; fixed so signatures are reproducible.")
    recall_weight: float = Field(
        0.95,
        gt=0.0,
        lt=1.0,
        description="Weight of false negatives when MinHashLSH picks its bands (candidates are verified, so recall is favoured).",
    )


def lsh_bands(config: DedupConfig) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH picks for these settings.

    The persistent index bands signatures the same way, so both propose the
    very same candidates.
    """
    # LSH only proposes candidates; each is verified on its estimated Jaccard, so
    # the bands are tuned for recall (0.95: ~95% of pairs at J = 0.8 found,
    # ~99% at 0.85) at the price of a few more signature comparisons.
    return _optimal_bands(config.jaccard_threshold, config.num_perm, config.recall_weight)


@lru_cache(maxsize=16)
def _optimal_bands(threshold: float, num_perm: int, recall_weight: float) -> tuple[int, int]:
    # Cached: the optimisation integrates ~700 (b, r) pairs, and every select call
    # builds a scratch index.
    weights = (1.0 - recall_weight, recall_weight)
    try:
        lsh = _datasketch().MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    except ValueError as err:  # e.g. a threshold so high that fewer than 2 bands fit
        raise ConfigError(f"near-dedup settings unusable: {err}", field="dedup") from err
    return lsh.b, lsh.r


@lru_cache(maxsize=16)
def _template(num_perm: int, seed: int) -> MinHash:
    return _datasketch().MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME)


def signature_dtype(config: DedupConfig) -> np.dtype:
    """The dtype of `minhash_signature`'s values, to read stored signatures back."""
    return _template(config.num_perm, config.seed).hashvalues.dtype


def minhash_signature(text: str, config: DedupConfig) -> np.ndarray | None:
    """MinHash hash values (uint32) of the text's shingles; None for a text with no tokens."""
    grams = shingles(tokenize(text), config.shingle_size)
    if not grams:
        return None
    m = _datasketch().MinHash(
        permutations=_template(config.num_perm, config.seed).permutations, scheme=_SCHEME
    )
    m.update_batch([g.encode("utf-8") for g in sorted(grams)])
    return m.hashvalues.copy()


@dataclass(frozen=True)
class DuplicateMatch:
    """An indexed text the query duplicates: exact (similarity 1.0) or near (estimated Jaccard)."""

    kind: str  # "exact" or "near"
    duplicate_of: str
    similarity: float


class DedupIndex:
    """Exact-hash map plus MinHash LSH over (id, text) pairs."""

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        self._lsh = _datasketch().MinHashLSH(
            num_perm=self.config.num_perm, params=lsh_bands(self.config)
        )
        self._template = _template(self.config.num_perm, self.config.seed)
        self._by_hash: dict[str, str] = {}
        self._hash_of: dict[str, str] = {}
        self._signatures: dict[str, np.ndarray] = {}

    @classmethod
    def build(
        cls, items: Iterable[tuple[str, str]], config: DedupConfig | None = None
    ) -> DedupIndex:
        """Rebuild from the store's (id, text) pairs."""
        index = cls(config)
        for item_id, text in items:
            index.add(item_id, text)
        return index

    def __len__(self) -> int:
        return len(self._hash_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._hash_of

    def signature(self, text: str) -> np.ndarray | None:
        """MinHash hash values of the text's shingles; None for a text with no tokens."""
        return minhash_signature(text, self.config)

    def add(self, item_id: str, text: str) -> None:
        """Index a text; adding an id already present is a no-op (idempotent)."""
        if item_id in self._hash_of:
            return
        key = text_hash(text)
        self._hash_of[item_id] = key
        # The first id wins: later exact copies point at the one already kept.
        self._by_hash.setdefault(key, item_id)
        sig = self.signature(text)
        if sig is not None:
            self._signatures[item_id] = sig
            self._lsh.insert(item_id, self._as_minhash(sig), check_duplication=False)

    def remove(self, item_id: str) -> None:
        """Forget an id (e.g. an example rejected after it was tentatively added)."""
        key = self._hash_of.pop(item_id, None)
        if key is None:
            return
        if self._by_hash.get(key) == item_id:
            del self._by_hash[key]
            # Another indexed copy of the same text keeps the hash covered.
            for other, other_key in self._hash_of.items():
                if other_key == key:
                    self._by_hash[key] = other
                    break
        if self._signatures.pop(item_id, None) is not None:
            self._lsh.remove(item_id)

    def exact(self, text: str, exclude: str | None = None) -> str | None:
        """Id of an indexed text with the same normalized form, if any (never `exclude`)."""
        found = self._by_hash.get(text_hash(text))
        return None if found == exclude else found

    def near(self, text: str, exclude: str | None = None) -> tuple[str, float] | None:
        """Most similar indexed text with estimated Jaccard ≥ threshold (ties: smallest id).

        `exclude` (the candidate's own id, when it is already indexed) never matches.
        """
        sig = self.signature(text)
        if sig is None or not self._signatures:
            return None
        best: tuple[str, float] | None = None
        for other in sorted(self._lsh.query(self._as_minhash(sig))):
            if other == exclude:
                continue
            sim = float(np.count_nonzero(self._signatures[other] == sig)) / sig.size
            if sim >= self.config.jaccard_threshold and (best is None or sim > best[1]):
                best = (other, sim)
        return best

    def query(self, text: str, exclude: str | None = None) -> DuplicateMatch | None:
        """Exact match first, then the best near match."""
        exact = self.exact(text, exclude)
        if exact is not None:
            return DuplicateMatch("exact", exact, 1.0)
        near = self.near(text, exclude)
        if near is not None:
            return DuplicateMatch("near", near[0], near[1])
        return None

    def _as_minhash(self, sig: np.ndarray) -> MinHash:
        return _datasketch().MinHash(
            hashvalues=sig, permutations=self._template.permutations, scheme=_SCHEME
        )
