"""CJK-aware counting and matching for the constraint checkers.

Every checker counts through these helpers so that "word", "sentence" and
"paragraph" mean one thing in English and in Chinese:

* a word is one CJK character (Han or kana: Chinese has no spaces, and one
  character per word is deterministic and needs no segmenter) or one run of
  other letters/digits ("don't" is two words, "GPT-4" two, as with IFEval's
  `\\w+` tokenizer);
* a sentence ends at 。！？!? or a full stop, or at a line break; a piece
  counts only if it holds a letter, so list numbers ("1.") and stray
  punctuation are not sentences;
* phrases are compared after NFKC (full-width ？ and ASCII ? agree), case
  folding and white-space collapsing, because a model's choice between them
  is not what a constraint tests.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Han (basic, extension A, compatibility, supplementary planes) and kana; the
# same ranges as evoinstruct.agents.text, kept local because the regexes below
# need the class as a string.
CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_CJK_CHAR = re.compile(f"[{CJK_CLASS}]")
_HAN_CHAR = re.compile(f"[{_HAN_CLASS}]")
_WORD = re.compile(f"[{CJK_CLASS}]|[^\\W_{CJK_CLASS}]+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_OTHER_WORD = re.compile(f"[^\\W\\d_A-Za-z\u00c0-\u024f{CJK_CLASS}]+")

# A full stop ends a sentence unless it sits inside a number (3.14) or after a
# common abbreviation; the lookahead keeps "example.com" in one sentence.
_ABBREVIATIONS = frozenset("mr mrs ms dr prof sr jr st vs e.g i.e a.m p.m fig approx".split())
_SENTENCE_END = re.compile(r"[。！？!?]+|\.(?=\s|$|[\"'”’)\]」』])|\.(?=[" + CJK_CLASS + r"])|\n")

COMMAS = frozenset(",，、﹐﹑､︐")
_WS = re.compile(r"\s+")
_FENCED_CODE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def is_cjk(char: str) -> bool:
    """True for one CJK ideograph or kana character."""
    return _CJK_CHAR.fullmatch(char) is not None


def has_cjk(text: str) -> bool:
    """True when the text holds at least one CJK character."""
    return _CJK_CHAR.search(text) is not None


def words(text: str) -> list[str]:
    """The words of mixed text: each CJK character, each other run of letters/digits."""
    return _WORD.findall(text)


def count_words(text: str) -> int:
    """How many words `words` finds."""
    return len(words(text))


def count_chars(text: str) -> int:
    """Characters other than white space (a Chinese 字数 does not count spaces either)."""
    return sum(1 for ch in text if not ch.isspace())


def _ends_in_abbreviation(piece: str) -> bool:
    tail = piece.rsplit(None, 1)[-1].lower() if piece.strip() else ""
    return tail in _ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Sentences: pieces between terminators and line breaks that hold a letter."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.start()]
        if match.group() == "." and _ends_in_abbreviation(piece):
            continue
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if any(ch.isalpha() for ch in p)]


def count_sentences(text: str) -> int:
    """How many sentences `split_sentences` finds."""
    return len(split_sentences(text))


_STAR_DIVIDER = re.compile(r"\s*\*\*\*\s*")
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")


def split_on_stars(text: str) -> list[str]:
    """Pieces between `***` dividers, empty ones included (IFEval's paragraph split)."""
    return _STAR_DIVIDER.split(text)


def split_on_blank_lines(text: str) -> list[str]:
    """Non-empty paragraphs separated by one or more blank lines."""
    return [p.strip() for p in _BLANK_LINE.split(text) if p.strip()]


def comma_count(text: str) -> int:
    """ASCII and CJK commas, the enumeration comma 、 included."""
    return sum(1 for ch in text if ch in COMMAS)


def is_latin_letter(char: str) -> bool:
    """A letter of the Latin script (ASCII, Latin-1, Latin Extended-A/B)."""
    return char.isalpha() and ord(char) < 0x250


def latin_letters(text: str) -> list[str]:
    """The text's Latin letters in order; case rules apply to these only."""
    return [ch for ch in text if is_latin_letter(ch)]


def all_caps_words(text: str) -> list[str]:
    """Latin words of two or more letters written entirely in capitals.

    Single letters are left out: "I" and "A" are ordinary words, not emphasis.
    """
    return [w for w in _LATIN_WORD.findall(text) if len(w) > 1 and w.isupper()]


def script_shares(text: str) -> dict[str, float]:
    """Share of word units per script: 'zh' (Han characters), 'en' (Latin words), 'other'.

    Code is measured out first: a Chinese answer with a code block is still
    Chinese. Kana counts as 'other' so Japanese is not taken for Chinese.
    """
    prose = _INLINE_CODE.sub(" ", _FENCED_CODE.sub(" ", text))
    if not words(prose):
        prose = text
    han = len(_HAN_CHAR.findall(prose))
    latin = len(_LATIN_WORD.findall(prose))
    kana = len(_CJK_CHAR.findall(prose)) - han
    other = len(_OTHER_WORD.findall(_CJK_CHAR.sub(" ", prose))) + kana
    total = han + latin + other
    if total == 0:
        return {"zh": 0.0, "en": 0.0, "other": 0.0}
    return {"zh": han / total, "en": latin / total, "other": other / total}


def normalize_phrase(text: str) -> str:
    """NFKC, case-folded, white space collapsed, stripped: the form phrases are compared in."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


@functools.lru_cache(maxsize=512)
def _keyword_regex(keyword: str, whole_word: bool) -> re.Pattern[str]:
    body = r"\s+".join(re.escape(part) for part in keyword.split())
    if has_cjk(keyword):
        # No spaces to anchor on in Chinese, so a substring is the match.
        return re.compile(body)
    left = r"(?<![^\W_])"
    right = r"(?![^\W_])" if whole_word else ""
    return re.compile(left + body + right)


def count_keyword(text: str, keyword: str, *, whole_word: bool = False) -> int:
    """Case-insensitive occurrences of a keyword.

    Latin keywords must start at a word boundary; with `whole_word` they must
    also end at one. Without it "dream" also finds "dreams" and "dreaming"
    (inflections satisfy an inclusion constraint) but never "daydream".
    CJK keywords match as substrings.
    """
    needle = normalize_phrase(keyword)
    if not needle:
        return 0
    return len(_keyword_regex(needle, whole_word).findall(normalize_phrase(text)))


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
