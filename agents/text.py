"""Text normalization and tokenization shared by every selection filter.

Dedup, novelty (ROUGE-L), diversity and decontamination must agree on what a
"token" is, in English and in Chinese alike, so they all call `tokenize` here:

* NFKC first (full-width letters and digits become ASCII, compatibility
  ideographs their canonical form), then casefold;
* every CJK ideograph or kana is a token of its own: Chinese and Japanese have
  no spaces, and character-level ROUGE on CJK is what the literature uses;
* any other run of letters or digits is one word token ("gpt4", "naïve",
  "한국어"); punctuation, symbols, underscores and spaces only separate tokens.

`dedup_form` is the form exact-duplicate hashing uses: the shared normal form
(`evoinstruct.text.rules.normalize`) with punctuation stripped at both ends too, so
"写一首诗。" and "写一首诗" or "Hello!" and " hello " hash alike. What a CJK
character is comes from `evoinstruct.text.rules` as well.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator, Sequence

from evoinstruct.text.rules import CJK_CLASS, is_cjk, normalize

_TOKEN = re.compile(rf"[{CJK_CLASS}]|[^\W_{CJK_CLASS}]+")


def tokenize(text: str) -> list[str]:
    """CJK characters as single tokens, other letter/digit runs as casefolded words."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def _is_edge_noise(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def dedup_form(text: str) -> str:
    """The normal form with punctuation stripped at both ends as well."""
    text = normalize(text)
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def text_hash(text: str) -> str:
    """Stable hex digest of the normalized text (the exact-duplicate key)."""
    return hashlib.blake2b(dedup_form(text).encode("utf-8"), digest_size=16).hexdigest()


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
        cjk = is_cjk(tok)
        if out and not cjk and not prev_cjk:
            out.append(" ")
        out.append(tok)
        prev_cjk = cjk
    return "".join(out)
