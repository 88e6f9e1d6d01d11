"""What the agents' filters share beyond the text rules: stop words, punctuation, phrases.

Words are counted as everywhere else (`evoinstruct.text.rules.count_words`: each CJK
character one word, as the constraint checkers count). Characters rather than a
segmenter (jieba) because the count is deterministic, needs no dictionary load and
handles mixed Chinese/English text. A Chinese word is about 1.5 characters, so a
limit of 150 "words" admits roughly 100 Chinese words: slightly stricter than for
English, which suits instructions.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable

from evoinstruct.text.rules import CJK_CLASS, has_cjk

_CJK_RUN_RE = re.compile(f"[{CJK_CLASS}]+")

STOPWORDS_EN = frozenset(
    """a about above after again against all am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves ok okay yes yeah well oh um uh hmm also
    s t d ll m re ve don can won isn aren let""".split()
)

STOPWORDS_ZH = frozenset(
    """的 了 是 在 和 与 及 或 也 就 都 而 着 吗 呢 吧 啊 呀 嗯 哦 哈 嘛 这 那 这个 那个 这些
    那些 这样 那样 我 你 您 他 她 它 我们 你们 他们 她们 它们 之 其 把 被 让 给 对 从 向 于
    以 为 因为 所以 但 但是 如果 就是 没有 不 很 还 又 只 么 什么 怎么 一个 个 等 等等 好
    是的 好的 对的 可以 一些 有 有的 并 且 而且 然后 那么 其实 还是 已经 可能 应该 一下""".split()
)

STOPWORDS = STOPWORDS_EN | STOPWORDS_ZH
_MAX_ZH_STOPWORD = max(len(w) for w in STOPWORDS_ZH)


def is_punctuation(char: str) -> bool:
    """ASCII punctuation or any Unicode punctuation (，。「」…) or symbol."""
    if char in string.punctuation:
        return True
    category = unicodedata.category(char)
    return category.startswith("P") or category.startswith("S")


def _segments_into_stopwords(run: str) -> bool:
    """Whether a CJK run splits entirely into Chinese stop words (word-break DP)."""
    ok = [True] + [False] * len(run)
    for end in range(1, len(run) + 1):
        for size in range(1, min(end, _MAX_ZH_STOPWORD) + 1):
            if ok[end - size] and run[end - size : end] in STOPWORDS_ZH:
                ok[end] = True
                break
    return ok[-1]


def only_punctuation_and_stopwords(text: str) -> bool:
    """True when the text holds nothing but punctuation, whitespace and stop words (en + zh).

    Empty text counts as true: it carries no content either.
    """
    cleaned = "".join(" " if is_punctuation(c) else c for c in text)
    for run in _CJK_RUN_RE.findall(cleaned):
        if not _segments_into_stopwords(run):
            return False
    latin = _CJK_RUN_RE.sub(" ", cleaned).lower().split()
    return all(token in STOPWORDS_EN for token in latin)


# A Latin-script word character: \w minus CJK, so "file" inside "打开file文件" still
# counts as a whole word while "profile" does not match "file".
_LATIN_WORD = f"[^\\W{CJK_CLASS}]"


@functools.lru_cache(maxsize=256)
def _phrase_regex(phrase: str) -> re.Pattern[str]:
    if has_cjk(phrase):
        # Chinese has no spaces, so a word boundary needs a segmenter; plain
        # substring matching is predictable and catches 画出 as well as 画.
        return re.compile(re.escape(phrase), re.IGNORECASE)
    body = r"\s+".join(re.escape(part) for part in phrase.split())
    return re.compile(f"(?<!{_LATIN_WORD}){body}(?!{_LATIN_WORD})", re.IGNORECASE)


def find_phrase(text: str, phrases: Iterable[str]) -> str | None:
    """The first phrase found in the text, case-insensitive, at word boundaries for Latin words.

    Phrases containing CJK characters match as substrings.
    """
    for phrase in phrases:
        if phrase.strip() and _phrase_regex(phrase.strip()).search(text):
            return phrase
    return None
