"""The text rules every layer counts by (evoinstruct.text), and the selection filters'
tokens built on them, in English and Chinese."""

from __future__ import annotations

import pytest

from evoinstruct.agents.text import (
    dedup_form,
    join_tokens,
    ngrams,
    shingles,
    text_hash,
    tokenize,
)
from evoinstruct.text.rules import (
    count_words,
    detect_language,
    has_cjk,
    is_cjk,
    language_of,
    normalize,
    script_shares,
    split_sentences,
    words,
)

# (text, its words, has CJK, language_of): the rules side by side, so a change to one
# shows what it does to the others.
TABLE = [
    ("Write a poem, please !", ["Write", "a", "poem", "please"], False, "en"),
    ("GPT-4 is out", ["GPT", "4", "is", "out"], False, "en"),
    ("don't snake_case", ["don", "t", "snake_case"], False, "en"),
    ("It costs 3.14 or 1,000", ["It", "costs", "3", "14", "or", "1", "000"], False, "en"),
    ("12345 67", ["12345", "67"], False, "other"),
    ("请写一首诗。", ["请", "写", "一", "首", "诗"], True, "zh"),
    ("用GPT-4写代码", ["用", "GPT", "4", "写", "代", "码"], True, "zh"),
    ("用Python写一个函数", ["用", "Python", "写", "一", "个", "函", "数"], True, "zh"),
    # full-width letters and digits are word characters; full-width punctuation is not
    ("ＧＰＴ－４，你好！", ["ＧＰＴ", "４", "你", "好"], True, "zh"),
    # kana is CJK (no spaces: a word per character) but not Chinese
    ("私はカナ", ["私", "は", "カ", "ナ"], True, "other"),
    # Hangul puts spaces between words: a run is one word, and no CJK
    ("한국어 문장", ["한국어", "문장"], False, "other"),
    ("I love 🍕 pizza 😀", ["I", "love", "pizza"], False, "en"),
    ("🙂🙂 !!! 。，", [], False, "other"),
    ("", [], False, "other"),
]


@pytest.mark.parametrize(("text", "expected", "cjk", "language"), TABLE)
def test_text_rules_table(text: str, expected: list[str], cjk: bool, language: str) -> None:
    assert words(text) == expected
    assert count_words(text) == len(expected)
    assert has_cjk(text) is cjk
    assert language_of(text) == language


def test_cjk_is_han_and_kana_on_every_plane() -> None:
    for char in ("春", "ひ", "ア", "\u3400", "\uf900", "\U00020000", "\U0003134a"):
        assert is_cjk(char), repr(char)
    for char in ("한", "a", "。", "，", "😀", "\u3000"):
        assert not is_cjk(char), repr(char)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello world. How are you? Fine!", ["Hello world.", "How are you?", "Fine!"]),
        ("Line one\nline two", ["Line one\nline two"]),  # a line break alone ends none
        ("今天下雨了。我们待在家里！你呢？", ["今天下雨了。", "我们待在家里！", "你呢？"]),
        ("我用Python.它很好用", ["我用Python.", "它很好用"]),  # half-width . before Han
        ("他说：“走吧。”然后走了。", ["他说：“走吧。”", "然后走了。"]),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_normalize_folds_width_case_and_space() -> None:
    assert normalize("  Hello\tWORLD \n") == "hello world"
    assert normalize("你好？") == normalize("你好?") == "你好?"
    assert normalize("ＡＢＣ１２３") == "abc123"
    assert normalize("Straße") == "strasse"
    assert normalize("Hello!") != normalize("Hello")  # punctuation stays


def test_script_shares_and_language_thresholds() -> None:
    assert script_shares("用Python写代码") == {"zh": 0.8, "en": 0.2, "other": 0.0}
    code = "请解释：\n```python\ndef add(a, b):\n    return a + b\n```"
    assert script_shares(code)["zh"] == 1.0  # code is set aside
    assert language_of("Write a poem about 春天") == "zh"  # two Han units of six
    assert language_of("Write a poem about 春天", zh_min_share=0.5) == "en"


def test_detect_language_names_any_language_deterministically() -> None:
    text = "Ceci est une phrase écrite en français pour vérifier la détection."
    assert {detect_language(text) for _ in range(3)} == {"fr"}
    assert detect_language("12345 !!!") is None


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


def test_dedup_form_folds_case_space_and_edge_punctuation() -> None:
    assert dedup_form("  Hello,   World!! ") == "hello, world"
    assert dedup_form("写一首诗。") == dedup_form("「写一首诗」") == "写一首诗"
    assert dedup_form("ＡＢＣ") == "abc"
    assert dedup_form("a\n\tb") == "a b"
    # punctuation inside the text is content, not noise
    assert dedup_form("a, b") != dedup_form("a b")


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
