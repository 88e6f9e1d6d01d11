"""ROUGE-L novelty: the indexed filter decides exactly as the exhaustive rouge_score reference."""

from __future__ import annotations

import random

import pytest

from evoinstruct.agents.selection.novelty import (
    NoveltyConfig,
    NoveltyIndex,
    lcs_length,
    min_overlap,
    novelty_exhaustive,
    rouge_l_f1,
)
from evoinstruct.agents.text import tokenize

EN_WORDS = "write a poem story about the sea sky city list five ways to explain how why it works for kids".split()
ZH_CHARS = list("请写一首关于春天的诗解释为什么天空是蓝色列出五种方法")


def _dp_lcs(a: list, b: list) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _random_items(n: int, seed: int, dup_rate: float = 0.35) -> list[tuple[str, str]]:
    """Short English, Chinese and mixed instructions; dup_rate of them are edited copies."""
    rng = random.Random(seed)
    items: list[tuple[str, str]] = []
    for i in range(n):
        if items and rng.random() < dup_rate:
            tokens = tokenize(rng.choice(items)[1])
            for _ in range(rng.randint(1, 3)):
                op, pos = rng.randrange(3), rng.randrange(max(1, len(tokens)))
                word = rng.choice(EN_WORDS + ZH_CHARS)
                if op == 0 and len(tokens) > 1:
                    tokens.pop(pos)
                elif op == 1 and tokens:
                    tokens[pos] = word
                else:
                    tokens.insert(pos, word)
            text = " ".join(tokens)
        else:
            kind = rng.random()
            length = rng.randint(1, 14)
            if kind < 0.4:
                text = " ".join(rng.choice(EN_WORDS) for _ in range(length))
            elif kind < 0.8:
                text = "".join(rng.choice(ZH_CHARS) for _ in range(length)) + "。"
            else:
                text = " ".join(rng.choice(EN_WORDS + ZH_CHARS) for _ in range(length))
        items.append((f"x{i:04d}", text))
    return items


def test_bit_parallel_lcs_matches_dynamic_programming() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a = [rng.randrange(6) for _ in range(rng.randint(0, 80))]
        b = [rng.randrange(6) for _ in range(rng.randint(0, 80))]
        assert lcs_length(a, b) == _dp_lcs(a, b)


def test_chinese_paraphrase_scores_char_level_like_rouge_score() -> None:
    from rouge_score import rouge_scorer

    from evoinstruct.agents.selection.novelty import RougeTokenizerAdapter

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizerAdapter())
    a, b = "请写一首关于春天的诗", "写一首描写春天的诗歌"
    # LCS 写一首…春天的诗 = 7 of 10 characters each: F1 = 2·7/20 = 0.7, not above 0.7.
    ta, tb = tokenize(a), tokenize(b)
    assert lcs_length(ta, tb) == 7
    f = rouge_l_f1(7, len(tb), len(ta))
    assert f == scorer.score(a, b)["rougeL"].fmeasure
    index = NoveltyIndex.build([("a", a)])
    assert index.best_match(b) is None  # F1 == 0.7 is kept: only > 0.7 rejects
    c = "请写一首关于夏天的诗"  # one character differs: 9/10
    assert index.best_match(c) == (pytest.approx(0.9), "a")


def test_overlap_bound_of_the_proof_holds_for_every_length() -> None:
    # Whenever rouge_score's float F1 exceeds τ, the LCS reaches t(|x|) on both sides.
    for tau in (0.3, 0.5, 0.7, 0.8, 0.9, 1.0):
        for m in range(1, 70):
            for n in range(1, 70):
                for lcs in range(1, min(m, n) + 1):
                    if rouge_l_f1(lcs, m, n) > tau:
                        assert lcs >= min_overlap(m, tau) and lcs >= min_overlap(n, tau), (
                            tau,
                            m,
                            n,
                            lcs,
                        )


def test_batch_is_sequential_and_rejection_names_most_similar() -> None:
    index = NoveltyIndex.build(
        [("p1", "Write a poem about the sea."), ("p2", "请解释天空为什么是蓝色的。")]
    )
    decisions = index.filter(
        [
            ("c1", "Write a poem about the sea"),  # copy of p1
            ("c2", "List five ways to save water at home."),
            ("c3", "List five ways to save water at school."),  # near c2, accepted just before
            ("c4", "请解释一下天空为什么是蓝色的"),  # near p2
        ]
    )
    verdicts = [(d.id, d.accepted, d.most_similar) for d in decisions]
    assert verdicts == [
        ("c1", False, "p1"),
        ("c2", True, None),
        ("c3", False, "c2"),
        ("c4", False, "p2"),
    ]
    assert decisions[0].score == 1.0 and decisions[2].score > 0.7
    assert "c2" in index and len(index) == 3


def test_filter_without_commit_leaves_index_unchanged() -> None:
    index = NoveltyIndex.build([("p", "Write a poem about the sea.")])
    decisions = index.filter(
        [("a", "Tell a joke about cats."), ("b", "Tell a joke about cats!")], commit=False
    )
    assert [d.accepted for d in decisions] == [True, False]
    assert decisions[1].most_similar == "a"
    assert len(index) == 1 and "a" not in index


def test_own_id_removed_and_empty_texts() -> None:
    index = NoveltyIndex.build([("p", "Write a poem about the sea.")])
    # re-checking an indexed example does not reject it as a copy of itself
    assert index.filter([("p", "Write a poem about the sea.")], commit=False)[0].accepted
    assert index.best_match("write a poem about the sea", exclude="p") is None
    index.remove("p")
    assert index.best_match("Write a poem about the sea.") is None and len(index) == 0
    assert index.filter([("e", "")])[0].accepted
    assert index.filter([("f", "!!!")])[0].accepted


@pytest.mark.parametrize(
    ("seed", "threshold", "reindex_min"),
    [(0, 0.7, 256), (1, 0.7, 8), (2, 0.5, 16), (3, 0.85, 256)],
)
def test_fast_filter_matches_exhaustive_reference(
    seed: int, threshold: float, reindex_min: int
) -> None:
    items = _random_items(320, seed)
    pool, candidates = items[:80], items[80:]
    config = NoveltyConfig(threshold=threshold, reindex_min=reindex_min)
    expected = novelty_exhaustive(pool, candidates, threshold)
    index = NoveltyIndex.build(pool, config)
    got = index.filter(candidates)
    assert got == expected  # verdicts, best scores (bit for bit) and most similar ids
    rejected = sum(not d.accepted for d in expected)
    assert 0.1 * len(candidates) < rejected < 0.9 * len(candidates)  # the test exercises both
    # growing the index one item at a time (new tokens ranked first, re-indexing) decides the same
    grown = NoveltyIndex(config)
    for item_id, text in pool:
        grown.add(item_id, text)
    assert grown.filter(candidates, commit=False) == expected


def _brute_force(
    items: list[tuple[str, str]], threshold: float
) -> list[tuple[str, bool, float | None, str | None]]:
    """Every pair, same LCS and float expression as the index: checks the shortlist bounds at scale."""
    kept: list[tuple[str, list[str]]] = []
    out = []
    for item_id, text in items:
        tokens = tokenize(text)
        best_f, best_id = threshold, None
        for ref_id, ref in kept:
            lcs = lcs_length(ref, tokens) if tokens and ref else 0
            f = rouge_l_f1(lcs, len(tokens), len(ref))
            if f > best_f:
                best_f, best_id = f, ref_id
        if best_id is None:
            kept.append((item_id, tokens))
            out.append((item_id, True, None, None))
        else:
            out.append((item_id, False, best_f, best_id))
    return out


@pytest.mark.parametrize(("seed", "threshold"), [(11, 0.7), (12, 0.6), (13, 0.9)])
def test_shortlist_loses_nothing_on_a_larger_repetitive_set(seed: int, threshold: float) -> None:
    items = _random_items(1500, seed=seed, dup_rate=0.25)
    index = NoveltyIndex(NoveltyConfig(threshold=threshold, reindex_min=32))
    got = [(d.id, d.accepted, d.score, d.most_similar) for d in index.filter(items)]
    assert got == _brute_force(items, threshold)
