"""Deita's repr filter, InsTag sampling and the hashed TF-IDF fallback embedding."""

from __future__ import annotations

import math
import unicodedata
from collections import Counter

import numpy as np
import pytest

from evoinstruct.agents.selection.diversity import (
    hashed_tfidf,
    instag_sample,
    rank_order,
    repr_filter,
)


def _unit(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def test_repr_filter_greedy_by_score_with_cosine_bound() -> None:
    # a and a2 have cosine ≈ 0.995; b is orthogonal to both; c has cosine 0.8 with a.
    vectors = _unit([1, 0, 0], [1, 0.1, 0], [0, 0, 1], [0.8, 0.6, 0])
    ids = ["a", "a2", "b", "c"]
    result = repr_filter(ids, vectors, [3.0, 5.0, 1.0, 2.0])
    assert result.selected == ["a2", "c", "b"]  # a2 first (higher score); a is too close to it
    assert result.not_diverse == {
        "a": {"most_similar": "a2", "cosine": pytest.approx(0.995, abs=1e-3)}
    }
    assert result.over_budget == []


def test_repr_filter_budget_ties_and_missing_scores() -> None:
    vectors = np.eye(4, dtype=np.float32)
    result = repr_filter(["w", "x", "y", "z"], vectors, [None, 2.0, 2.0, 9.0], budget=2)
    assert result.selected == ["z", "x"]  # tie between x and y keeps input order
    assert result.over_budget == ["y", "w"]  # None scores rank last
    assert rank_order([None, 1.0, 3.0, 1.0]) == [2, 1, 3, 0]


def test_repr_filter_against_reference_vectors() -> None:
    result = repr_filter(
        ["n", "m"],
        _unit([1, 0], [0, 1]),
        [1.0, 1.0],
        reference=_unit([0.99, 0.05]),
        reference_ids=["pool-1"],
    )
    assert result.selected == ["m"]
    assert result.not_diverse["n"]["most_similar"] == "pool-1"


def test_repr_filter_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        repr_filter(["a"], np.eye(2, dtype=np.float32), [1.0])


def test_hashed_tfidf_fallback_english_and_chinese() -> None:
    texts = [
        "Write a poem about the sea at night.",
        "Write a poem about the sea at night!",
        "Explain how vaccines train the immune system.",
        "请写一首关于春天的诗，描写花开和细雨。",
        "请写一首关于春天的诗，描写花开与细雨。",
        "解释为什么天空是蓝色的。",
        "",
    ]
    vectors = hashed_tfidf(texts, dim=2048)
    assert vectors.shape == (7, 2048) and vectors.dtype == np.float32
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.9 and sims[0, 2] < 0.4
    assert sims[3, 4] > 0.7 and sims[3, 5] < 0.4
    assert np.allclose(np.linalg.norm(vectors[:6], axis=1), 1.0, atol=1e-5)
    assert not vectors[6].any()
    assert np.array_equal(vectors, hashed_tfidf(texts, dim=2048))  # deterministic


def _reference_tfidf(texts: list[str], dim: int, lo: int, hi: int) -> np.ndarray:
    """The embedding written out gram by gram: what the vectorized one must equal."""
    mask = (1 << 64) - 1

    def bucket(gram: str) -> int:
        h = len(gram)
        for ch in gram:
            h = (h * 0x100000001B3 + ord(ch)) & mask
        h ^= h >> 30
        h = (h * 0xBF58476D1CE4E5B9) & mask
        h ^= h >> 27
        h = (h * 0x94D049BB133111EB) & mask
        h ^= h >> 31
        return h % dim

    counts = []
    for text in texts:
        chars = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
        grams = Counter(
            bucket(chars[i : i + n]) for n in range(lo, hi + 1) for i in range(len(chars) - n + 1)
        )
        if not grams and chars:
            grams[bucket(chars)] = 1
        counts.append(grams)
    df = Counter(b for grams in counts for b in grams)
    out = np.zeros((len(texts), dim), dtype=np.float64)
    for row, grams in enumerate(counts):
        for b, tf in grams.items():
            out[row, b] = (1 + math.log(tf)) * (math.log((1 + len(texts)) / (1 + df[b])) + 1)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


@pytest.mark.parametrize("chunk", [512, 3])
def test_hashed_tfidf_equals_the_gram_by_gram_definition(monkeypatch, chunk: int) -> None:
    import evoinstruct.agents.selection.diversity as diversity

    monkeypatch.setattr(diversity, "_CHUNK", chunk)  # IDF spans chunks: counted texts at once
    texts = [
        "Write a poem about the sea at night.",
        "  Ｆｕｌｌ-width   ＡＢＣ and  spaces  ",
        "请写一首关于春天的诗，描写花开和细雨。",
        "混合 mixed 文本 text 🙂 emoji",
        "a",
        "好",
        "",
        "ab ab ab ab ab",
    ]
    for lo, hi in [(2, 4), (1, 3), (3, 3)]:
        fast = hashed_tfidf(texts, dim=512, ngram_range=(lo, hi))
        assert np.allclose(fast, _reference_tfidf(texts, 512, lo, hi), atol=1e-6)


def test_instag_complexity_first_with_passes() -> None:
    ids = ["a", "b", "c", "d", "e"]
    tags = [["math"], ["math", "code", "proof"], ["code"], ["poetry", "math"], []]
    result = instag_sample(ids, tags, budget=4)
    # pass 1 by tag count: b (3 new tags), d (adds poetry); a and c add nothing new.
    # pass 2 after the reset: a, then c (code is new again in this pass).
    assert result.selected == ["b", "d", "a", "c"]
    assert result.not_diverse == {"e": {"tags": [], "reason": "no tags"}}
    short = instag_sample(ids, tags, budget=1)
    assert short.selected == ["b"] and short.over_budget == ["d", "a", "c"]
    unlimited = instag_sample(ids, tags)
    assert sorted(unlimited.selected) == ["a", "b", "c", "d"]
    assert instag_sample(ids, tags, budget=0).selected == []


def test_an_empty_ngram_range_is_refused() -> None:
    from pydantic import ValidationError

    from evoinstruct.agents.selection.diversity import DiversityConfig

    with pytest.raises(ValidationError, match="tfidf_ngram_min"):
        DiversityConfig(tfidf_ngram_min=5, tfidf_ngram_max=3)
