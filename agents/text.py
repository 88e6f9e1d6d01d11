"""Text normalization and tokenization shared by every selection filter.

Dedup, novelty (ROUGE-L), diversity and decontamination must agree on what a
"token" is, in English and in Chinese alike, so they all call `tokenize` here:

* NFKC first (full-width letters and digits become ASCII, compatibility
  ideographs their canonical form), then casefold;
* every CJK ideograph or kana is a token of its own: Chinese and Japanese have
  no spaces, and character-level ROUGE on CJK is what the literature uses;
* any other run of letters or digits is one word token ("gpt4", "naïve",
  "한국어"); punctuation, symbols, underscores and spaces only separate tokens.

`normalize` is the form exact-duplicate hashing uses: NFKC, casefold, white
space collapsed, punctuation stripped at both ends, so "写一首诗。" and
"写一首诗" or "Hello!" and " hello " hash alike.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator, Sequence

# Han ideographs (unified, extension A, compatibility, supplementary planes)
# plus hiragana and katakana: each character is one token.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_WS = re.compile(r"\s+")


def tokenize(text: str) -> list[str]:
    """CJK characters as single tokens, other letter/digit runs as casefolded words."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def has_cjk(text: str) -> bool:
    """True when the text holds at least one CJK character."""
    return _CJK_CHAR.search(text) is not None


def _is_edge_noise(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """NFKC, casefold, collapse white space, strip punctuation at both ends."""
    text = _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def text_hash(text: str) -> str:
    """Stable hex digest of the normalized text (the exact-duplicate key)."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).hexdigest()


def ngrams(tokens: Sequence[str], n: int) -> Iterator[tuple[str, ...]]:
    """All contiguous n-grams; none when the sequence is shorter than n."""
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i : i + n])


def shingles(tokens: Sequence[str], k: int) -> set[str]:
    """Token k-gram shingles for set similarity; a text shorter than k is one shingle.

    Joined with U+001F so that ("ab", "c") and ("a", "bc") stay distinct.
    """
    if not tokens:
        return set()
    if len(tokens) <= k:
        return {"\x1f".join(tokens)}
    return {"\x1f".join(tokens[i : i + k]) for i in range(len(tokens) - k + 1)}


def join_tokens(tokens: Sequence[str]) -> str:
    """Readable text from tokens: a space between two words, none next to a CJK character."""
    out: list[str] = []
    prev_cjk = True
    for tok in tokens:
        cjk = _CJK_CHAR.fullmatch(tok) is not None
        if out and not cjk and not prev_cjk:
            out.append(" ")
        out.append(tok)
        prev_cjk = cjk
    return "".join(out)
