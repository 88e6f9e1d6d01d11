"""How the constraint checkers split and compare text, beyond the shared rules.

Words, sentences, CJK characters, the normal form and language detection are
`evoinstruct.text.rules` (IFEval's rules for English, Chinese ones of their own);
this module adds what only the checkers need, as IFEval's reference checkers do it:

* paragraphs are pieces between `***` dividers, or between two newlines
  (`"\\n\\n"`, exactly as IFEval splits them);
* sentences as a formatted answer shows them (`sentence_lines`: a line break ends one);
* phrases (end phrase, request to repeat, keywords, postscript marker) compare
  case-insensitively as IFEval compares them; a phrase holding CJK characters
  also compares in the normal form (NFKC, white space collapsed), so full-width ？
  and ASCII ? agree (an input method's choice of width is not what a constraint tests);
* capital words are NLTK's word tokens written in capitals, as IFEval counts them;
* a response is in a language when langdetect names it (IFEval's way), except
  Chinese, decided by script (see `is_language`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from evoinstruct.text.rules import (
    CJK_CLASS,
    has_cjk,
    normalize,
    punkt_sentences,
    script_shares,
    split_sentences,
    without_code_blocks,
    words,
)

# The rules the checkers' own tests read from this module, defined once in evoinstruct.text.
from evoinstruct.text.rules import count_sentences as count_sentences
from evoinstruct.text.rules import count_words as count_words
from evoinstruct.text.rules import detect_language as detect_language

COMMAS = frozenset(",，、﹐﹑､︐")

# A markdown line prefix that is no part of a sentence: a heading's #, a quote's >, a
# bullet, a list number ("1." "2)" "3、"); and a line that only divides ("***", "- - -").
_LINE_PREFIX = re.compile(r"^[ \t]*(?:#{1,6}[ \t]+|>[ \t]*|[-*+•][ \t]+|\d+[.)、．][ \t]+)+")
# A half-width ? or ! right before a CJK character ends a Chinese sentence as ？ and ！
# do (a Chinese input method in half-width mode types them).
_HALF_WIDTH_END = re.compile(f"[?!](?=[{CJK_CLASS}])")
_FULL_WIDTH = {"?": "？", "!": "！"}
_DIVIDER_LINE = re.compile(r"[ \t]*([*\-_=])(?:[ \t]*\1){2,}[ \t]*")


def excerpt(text: str, n: int = 30) -> str:
    """The first `n` characters of `text`, white space collapsed, quoted: a check's evidence."""
    text = " ".join(text.split())
    return repr(text[:n] + ("…" if len(text) > n else ""))


def is_divider(line: str) -> bool:
    """A line of three or more *, -, _ or = alone (a markdown rule, IFEval's *** divider)."""
    return _DIVIDER_LINE.fullmatch(line) is not None


def sentence_lines(text: str) -> list[str]:
    """Sentences as a reader sees them in a formatted answer: `split_sentences` within
    each line, so a line break ends a sentence too (a heading, a bullet without a
    period is one of its own, not the start of the next line's sentence), and a
    half-width ? or ! before a CJK character ends one as ？ and ！ do; markdown line
    prefixes and fenced code are left out, and so are pieces with no word.

    IFEval's own sentence count (`split_sentences`) lets a line break end none, which
    suits counting sentences; rules about each sentence (its length, how it opens,
    how it ends) read the lines the way the answer shows them.
    """
    out: list[str] = []
    for line in without_code_blocks(text).split("\n"):
        if not line.strip() or is_divider(line):
            continue
        body = _HALF_WIDTH_END.sub(lambda m: _FULL_WIDTH[m.group()], _LINE_PREFIX.sub("", line))
        out.extend(s for s in split_sentences(body) if words(s))
    return out


_STAR_DIVIDER = re.compile(r"\s*\*\*\*\s*")


def split_on_stars(text: str) -> list[str]:
    """Pieces between `***` dividers, empty ones included (IFEval's paragraph split)."""
    return _STAR_DIVIDER.split(text)


def split_on_double_newlines(text: str) -> list[str]:
    """Pieces between two newlines, empty ones included, as IFEval splits paragraphs.

    Only "\\n\\n" separates: a line holding spaces is not blank, and three
    newlines leave the third at the start of the next piece.
    """
    return text.split("\n\n")


def comma_count(text: str) -> int:
    """ASCII and CJK commas, the enumeration comma 、 included."""
    return sum(1 for ch in text if ch in COMMAS)


def phrase_forms(text: str, phrase: str) -> tuple[str, str]:
    """`text` and `phrase` as a checker compares them: lower-cased, as IFEval does;
    when the phrase holds CJK characters, also NFKC with white space collapsed."""
    if has_cjk(phrase):
        return normalize(text), normalize(phrase)
    return text.lower(), phrase.strip().lower()


@functools.lru_cache(maxsize=512)
def _keyword_regex(keyword: str, whole_word: bool) -> re.Pattern[str]:
    body = re.escape(keyword)
    if not whole_word:
        return re.compile(body, re.IGNORECASE)
    # A CJK character next to the keyword is a boundary too: Han characters are word
    # characters to `\b`, so "AI" would never be found in "用AI写作". Text without CJK
    # meets IFEval's `\b...\b` exactly.
    left, right = f"(?<=[{CJK_CLASS}])", f"(?=[{CJK_CLASS}])"
    return re.compile(rf"(?:\b|{left}){body}(?:\b|{right})", re.IGNORECASE)


def count_keyword(text: str, keyword: str, *, whole_word: bool = False) -> int:
    """Case-insensitive occurrences of a keyword, as IFEval counts them.

    Anywhere in the text: "art" is found in "start" and "dream" in "daydream",
    as IFEval's search finds them. With `whole_word` only where a word boundary
    (`\\b`) stands on both sides, as in IFEval's forbidden-word check, so
    forbidding "art" does not forbid "artist"; a CJK character beside the keyword
    counts as a boundary ("AI" is found in "用AI写作"). A keyword with CJK characters
    is a plain substring (after NFKC) either way: `\\b` never falls between
    two Han characters, so a forbidden 好 would never be found in 很好.
    """
    if not keyword.strip():
        return 0
    if has_cjk(keyword):
        haystack, needle = phrase_forms(text, keyword)
        return haystack.count(needle)
    return len(_keyword_regex(keyword.strip(), whole_word).findall(text))


@functools.cache
def _word_tokenizer() -> Any:
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


_CJK_RUN = re.compile(f"[{CJK_CLASS}]+")


def capital_words(text: str) -> list[str]:
    """Words written in capitals, as IFEval counts them.

    NLTK's word tokens within Punkt's sentences (what `nltk.word_tokenize`
    gives) for which `str.isupper()` holds: "I", "A" and "GPT-4" count, the
    hyphenated "AI-powered" does not. CJK characters also split tokens, since
    Chinese runs words together: "用API和SDK" holds two.
    """
    out: list[str] = []
    for sentence in punkt_sentences(text):
        for token in _word_tokenizer().tokenize(sentence):
            parts = _CJK_RUN.split(token) if has_cjk(token) else [token]
            out.extend(part for part in parts if part.isupper())
    return out


# --- the language of a response -----------------------------------------------------------
MIN_CHINESE_SHARE = 0.5


def is_language(text: str, code: str) -> bool:
    """Whether the text is in the language with this ISO 639-1 code.

    As IFEval decides it: langdetect names the language, and a text it finds
    nothing to decide on passes. Chinese ('zh') is decided by script instead:
    at least half of the word units (Han characters against Latin and other
    words; code set aside) are Han. IFEval's own comparison could never pass
    'zh', since langdetect answers 'zh-cn' or 'zh-tw', and the script decides
    Chinese against English deterministically, with no model.
    """
    if code == "zh":
        return script_shares(text)["zh"] >= MIN_CHINESE_SHARE
    found = detect_language(text)
    return found is None or found == code


LOOSE_VARIANT_NAMES = (
    "as is",
    "first line removed",
    "last line removed",
    "first and last lines removed",
    "'*' removed",
    "first line and '*' removed",
    "last line and '*' removed",
    "first and last lines and '*' removed",
)


def named_loose_variants(response: str) -> list[tuple[str, str]]:
    """`loose_variants` with a short name for each, for a check's reason."""
    lines = response.split("\n")
    cut = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    variants = cut + [v.replace("*", "") for v in cut]
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for name, v in zip(LOOSE_VARIANT_NAMES, variants, strict=True):
        if v.strip() and v not in seen:
            seen.add(v)
            out.append((name, v))
    return out


def loose_variants(response: str) -> list[str]:
    """IFEval's loose variants: first/last/both lines dropped, each with and without `*`.

    The response as-is comes first; empty and repeated variants are left out.
    """
    return [v for _, v in named_loose_variants(response)]
