"""Diversity selection: Deita's repr filter over embeddings and InsTag's complexity-first sampling.

* `repr_filter` (METHODS 2.2): visit examples by score, best first; accept one
  only if its cosine similarity to every example accepted so far (and to any
  reference vectors, e.g. the pool's) is ≤ 0.9; stop at the budget.
* `instag_sample` (METHODS 2.4): visit examples by tag count, most first;
  take one only if it adds a tag the selected set lacks; when a pass ends
  short of the budget, reset the tag set and pass again over the rest. The
  selector first resolves rare tags (`instag.resolve_rare`) against the
  accepted pool's tag counts plus the batch's, so rarity is a pool-wide fact.
* `hashed_tfidf` is the embedding used when no embedder is configured:
  character n-grams (2–4 by default, over the NFKC-casefolded text, so it
  works for Chinese, where character bigrams are word-like) hashed with a
  stable 64-bit polynomial hash into `dim` buckets, sublinear TF (1 + ln tf)
  times smoothed IDF (ln((1+N)/(1+df)) + 1) computed over the texts of the
  same call, rows L2-normalized. It measures surface overlap, not meaning: two paraphrases
  in different words look diverse to it. Vectors from different calls are
  not comparable (the IDF differs): embed candidates and references together.

Ties in scores or tag counts keep the input order, so results are deterministic.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

RarePolicy = Literal["merge", "drop", "keep"]


class DiversityConfig(BaseModel):
    """Diversity selection settings (METHODS 2.2 and 2.4)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["repr", "instag", "none"] = Field(
        "repr",
        description="'repr': Deita's embedding filter; 'instag': tag-coverage sampling; 'none': rank only.",
    )
    max_cosine: float = Field(
        0.9,
        ge=-1.0,
        le=1.0,
        description="Repr filter: accept only if cosine similarity to every accepted example is at most this.",
    )
    tfidf_dim: int = Field(
        4096,
        ge=64,
        # Every 512 texts are counted in a 512 x dim table: 256 MiB at the cap.
        le=65536,
        description="Buckets of the fallback hashed character n-gram TF-IDF embedding.",
    )
    tfidf_ngram_min: int = Field(
        2, ge=1, description="Shortest character n-gram of the fallback embedding."
    )
    tfidf_ngram_max: int = Field(
        4, ge=1, description="Longest character n-gram of the fallback embedding."
    )
    min_tag_count: int = Field(
        2,
        ge=1,
        description="InsTag sampling: a tag seen fewer times in the accepted pool plus this batch is rare.",
    )
    rare_policy: RarePolicy = Field(
        "merge",
        description="InsTag sampling, rare tags: merge into the nearest frequent tag if similar enough, "
        "else keep; drop: remove them; keep: leave them.",
    )
    merge_min_similarity: float = Field(
        0.5, ge=0, le=1, description="Character-bigram Jaccard needed to merge a rare tag."
    )

    @model_validator(mode="after")
    def _ngram_range(self) -> DiversityConfig:
        # An empty range embeds every text as zeros, and the repr filter would pass them all.
        if self.tfidf_ngram_min > self.tfidf_ngram_max:
            raise ValueError(
                f"tfidf_ngram_min ({self.tfidf_ngram_min}) is above tfidf_ngram_max ({self.tfidf_ngram_max})"
            )
        return self


@dataclass
class DiversityResult:
    """Selected ids in selection order; the others as not diverse (with evidence) or over budget."""

    selected: list[str] = field(default_factory=list)
    not_diverse: dict[str, dict] = field(default_factory=dict)
    over_budget: list[str] = field(default_factory=list)


def hashed_tfidf(
    texts: Sequence[str], dim: int = 4096, ngram_range: tuple[int, int] = (2, 4)
) -> np.ndarray:
    """L2-normalized hashed character n-gram TF-IDF rows (float32, shape len(texts) × dim).

    Vectorized over all texts at once: the selector embeds thousands of reference texts a
    round, and a per-n-gram Python loop took 6.8 s for 2,000 of them at a 1M pool.
    """
    lo, hi = ngram_range
    n_docs = len(texts)
    out = np.zeros((n_docs, dim), dtype=np.float32)
    if not n_docs:
        return out
    normalized = [_normalized_text(t) for t in texts]
    found = [
        _term_counts(normalized[i : i + _CHUNK], lo, hi, dim) for i in range(0, n_docs, _CHUNK)
    ]
    rows = np.concatenate([r + i * _CHUNK for i, (r, _, _) in enumerate(found)])
    buckets = np.concatenate([b for _, b, _ in found])
    tf = np.concatenate([t for _, _, t in found])
    df = np.bincount(buckets, minlength=dim)
    idf = np.log((1 + n_docs) / (1 + df)) + 1.0
    out[rows, buckets] = (1.0 + np.log(tf)) * idf[buckets]
    return normalize_rows(out)


# Texts counted at a time: one chunk's dense count table is _CHUNK × dim int64 (16 MiB at
# the default dim), so memory stays flat however many texts come.
_CHUNK = 512


def _term_counts(
    normalized: Sequence[str], lo: int, hi: int, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, bucket, count) of every bucket a text's n-grams fall in, rows within the chunk."""
    points, lengths = _codepoints(normalized)
    keys = [_gram_keys(points, lengths, n, dim) for n in range(lo, hi + 1)]
    keys.append(_short_text_keys(normalized, lo, dim))
    counts = np.bincount(np.concatenate(keys), minlength=len(normalized) * dim)
    present = np.flatnonzero(counts)
    rows, buckets = np.divmod(present, dim)
    return rows, buckets, counts[present]


def _normalized_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _codepoints(normalized: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All texts' code points in one array, and each text's length."""
    lengths = np.fromiter((len(t) for t in normalized), dtype=np.int64, count=len(normalized))
    joined = "".join(normalized).encode("utf-32-le")
    return np.frombuffer(joined, dtype=np.uint32).astype(np.uint64), lengths


def _gram_keys(points: np.ndarray, lengths: np.ndarray, n: int, dim: int) -> np.ndarray:
    """doc × dim + bucket for every character n-gram of every text."""
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    offset = np.arange(len(points), dtype=np.int64) - starts[doc]
    valid = offset <= (lengths[doc] - n)  # the n-gram ends inside its own text
    padded = np.concatenate((points, np.zeros(n, dtype=np.uint64)))
    windows = [padded[j : j + len(points)] for j in range(n)]
    buckets = _bucket(windows, n, dim)
    return doc[valid] * dim + buckets[valid]


def _short_text_keys(normalized: Sequence[str], shortest: int, dim: int) -> np.ndarray:
    """A text shorter than the smallest n-gram is one gram: the text itself."""
    keys = []
    for row, chars in enumerate(normalized):
        if 0 < len(chars) < shortest:
            points = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
            bucket = _bucket([points[j : j + 1] for j in range(len(points))], len(points), dim)
            keys.append(row * dim + int(bucket[0]))
    return np.asarray(keys, dtype=np.int64)


_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime


def _bucket(windows: Sequence[np.ndarray], n: int, dim: int) -> np.ndarray:
    """Stable hash of each n-gram (code point windows) into [0, dim): a polynomial over the
    code points, salted with n, finished with splitmix64 so every bit mixes."""
    h = np.full(len(windows[0]), np.uint64(n), dtype=np.uint64)
    for column in windows:
        h = h * _MULTIPLIER + column
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return (h % np.uint64(dim)).astype(np.int64)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def rank_order(scores: Sequence[float | None]) -> list[int]:
    """Indices by score, highest first; None scores last; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))


def repr_filter(
    ids: Sequence[str],
    embeddings: np.ndarray,
    scores: Sequence[float | None],
    *,
    max_cosine: float = 0.9,
    budget: int | None = None,
    reference: np.ndarray | None = None,
    reference_ids: Sequence[str] | None = None,
) -> DiversityResult:
    """Deita's repr filter: greedy by score, cosine to every accepted (and reference) ≤ max_cosine."""
    vectors = normalize_rows(embeddings)
    if len(vectors) != len(ids) or len(scores) != len(ids):
        raise ValueError("ids, embeddings and scores must have the same length")
    result = DiversityResult()
    ref_best = np.full(len(ids), -np.inf, dtype=np.float32)
    ref_arg = np.zeros(len(ids), dtype=np.int64)
    if reference is not None and len(reference):
        ref = normalize_rows(reference)
        sims = vectors @ ref.T
        ref_best, ref_arg = sims.max(axis=1), sims.argmax(axis=1)
        reference_ids = (
            list(reference_ids)
            if reference_ids is not None
            else [f"reference:{i}" for i in range(len(ref))]
        )
    accepted = np.empty((min(len(ids), budget or len(ids)), vectors.shape[1]), dtype=np.float32)
    accepted_ids: list[str] = []
    for i in rank_order(scores):
        if budget is not None and len(accepted_ids) >= budget:
            result.over_budget.append(ids[i])
            continue
        if ref_best[i] > max_cosine:
            result.not_diverse[ids[i]] = {
                "most_similar": reference_ids[int(ref_arg[i])],
                "cosine": round(float(ref_best[i]), 4),
            }
            continue
        k = len(accepted_ids)
        if k:
            sims = accepted[:k] @ vectors[i]
            j = int(sims.argmax())
            if sims[j] > max_cosine:
                result.not_diverse[ids[i]] = {
                    "most_similar": accepted_ids[j],
                    "cosine": round(float(sims[j]), 4),
                }
                continue
        accepted[k] = vectors[i]
        accepted_ids.append(ids[i])
    result.selected = accepted_ids
    return result


def instag_sample(
    ids: Sequence[str], tags: Sequence[Sequence[str]], budget: int | None = None
) -> DiversityResult:
    """InsTag complexity-first diverse sampling over per-example tag lists."""
    if len(tags) != len(ids):
        raise ValueError("ids and tags must have the same length")
    tag_sets = [set(t) for t in tags]
    order = sorted(range(len(ids)), key=lambda i: (-len(tag_sets[i]), i))
    picked: list[int] = []
    taken: set[int] = set()
    full = budget is not None and budget <= 0
    while not full:
        covered: set[str] = set()
        before = len(picked)
        for i in order:
            if i in taken or not (tag_sets[i] - covered):
                continue
            picked.append(i)
            taken.add(i)
            covered |= tag_sets[i]
            if budget is not None and len(picked) >= budget:
                full = True
                break
        if len(picked) == before:  # nothing left that has a tag
            break
    result = DiversityResult(selected=[ids[i] for i in picked])
    for i in order:
        if i in taken:
            continue
        if full and tag_sets[i]:
            result.over_budget.append(ids[i])
        else:
            result.not_diverse[ids[i]] = {"tags": sorted(tag_sets[i]), "reason": "no tags"}
    return result
