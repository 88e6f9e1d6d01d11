"""Tokenization and normalization shared by every selection filter (English and Chinese)."""

from __future__ import annotations

import pytest

from evoinstruct.agents.text import (
    has_cjk,
    join_tokens,
    ngrams,
    normalize,
    shingles,
    text_hash,
    tokenize,
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World! GPT-4 is 2x faster.", ["hello", "world", "gpt", "4", "is", "2x", "faster"]),
        ("请写一首关于春天的诗。", ["请", "写", "一", "首", "关", "于", "春", "天", "的", "诗"]),
        ("用Python写代码", ["用", "python", "写", "代", "码"]),
        ("ＡＢＣ１２３，", ["abc123"]),  # full-width letters and digits fold to ASCII
        ("ひらがなカナ", ["ひ", "ら", "が", "な", "カ", "ナ"]),
        ("snake_case naïve Straße 한국어", ["snake", "case", "naïve", "strasse", "한국어"]),
        ("Version 3.11 costs $20", ["version", "3", "11", "costs", "20"]),
        ("", []),
        ("!!! ... 。，", []),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


def test_normalize_folds_case_space_and_edge_punctuation() -> None:
    assert normalize("  Hello,   World!! ") == "hello, world"
    assert normalize("写一首诗。") == normalize("「写一首诗」") == "写一首诗"
    assert normalize("ＡＢＣ") == "abc"
    assert normalize("a\n\tb") == "a b"
    # punctuation inside the text is content, not noise
    assert normalize("a, b") != normalize("a b")


def test_text_hash_matches_on_normal_form_only() -> None:
    assert text_hash("Write a poem.") == text_hash("  write A poem ")
    assert text_hash("写一首诗。") == text_hash("写一首诗")
    assert text_hash("Write a poem.") != text_hash("Write a song.")
    assert len(text_hash("x")) == 32


def test_ngrams_and_shingles() -> None:
    tokens = tokenize("春天的诗")
    assert list(ngrams(tokens, 2)) == [("春", "天"), ("天", "的"), ("的", "诗")]
    assert list(ngrams(tokens, 5)) == []
    assert shingles(tokens, 3) == {"春\x1f天\x1f的", "天\x1f的\x1f诗"}
    assert shingles(["ab"], 3) == {"ab"}  # shorter than k: the whole text
    assert shingles([], 3) == set()
    assert shingles(["ab", "c"], 2) != shingles(["a", "bc"], 2)


def test_join_tokens_spaces_words_but_not_cjk() -> None:
    assert join_tokens(tokenize("Write 一首 poem about 春天 now")) == "write一首poem about春天now"
    assert join_tokens(["a", "b"]) == "a b"
    assert has_cjk("abc春") and not has_cjk("abc")
