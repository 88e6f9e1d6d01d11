"""Sentence-level writing rules, beyond IFEval: how long each sentence is, how many are
questions, how consecutive sentences open, and a word in the first and last sentence.

IFEval's sentence rules count sentences; these look inside each one, the skill a
student has to learn beyond the 25 types it trains on (METHODS 5.2). Sentences are
`text.sentence_lines` (a line break also ends one, so a bullet or a heading is its
own sentence and markdown prefixes are no part of it) for the rules about each
sentence, and IFEval's own `text.split_sentences` for the first and last sentence,
where a heading or a salutation line belongs to the sentence after it. Words are
`text.words` (a CJK character is a word); a keyword is found as
`keywords:existence` finds it (`text.count_keyword`).

None has a repair: splitting a sentence, rewording an opening or moving a word
changes what the answer says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from evoinstruct.agents.constraints.registry import (
    BOTH,
    CheckResult,
    ConstraintType,
    Param,
    SampleContext,
    exactly,
    register,
)
from evoinstruct.agents.constraints.text import count_keyword, excerpt, sentence_lines
from evoinstruct.agents.constraints.vocab import KEYWORDS, pick_words
from evoinstruct.text.rules import count_words, split_sentences, words

# --- style:max_sentence_words ---------------------------------------------------------------
# Limits a reader would name; a Chinese sentence counts characters, so its limits run higher.
_SENTENCE_LIMITS = {"en": (12, 15, 18, 20, 25), "zh": (25, 30, 35, 40)}


def longest_sentence(text: str) -> tuple[int, str]:
    """The word count and text of the longest of `sentence_lines` ((0, "") for none)."""
    units = sentence_lines(text)
    if not units:
        return 0, ""
    longest = max(units, key=count_words)
    return count_words(longest), longest


def _check_max_words(response: str, p: Mapping[str, Any]) -> CheckResult:
    limit = p["max_sentence_words"]
    units = sentence_lines(response)
    if not units:
        return CheckResult(False, "no sentences")
    over = [u for u in units if count_words(u) > limit]
    if not over:
        return CheckResult(True, f"every sentence at most {limit} words")
    worst = max(over, key=count_words)
    return CheckResult(
        False,
        f"{len(over)} sentence(s) over {limit} words; longest {count_words(worst)}: "
        f"{excerpt(worst, 30)}",
    )


register(
    ConstraintType(
        id="style:max_sentence_words",
        params=(Param("max_sentence_words", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"max_sentence_words": ctx.rng.choice(_SENTENCE_LIMITS[ctx.language])},
        checker=_check_max_words,
        # Text the answer must hold verbatim (a request to repeat, an end phrase) may not
        # itself hold a sentence over the limit.
        clashes_with_text=lambda p, text: longest_sentence(text)[0] > p["max_sentence_words"],
        # JSON has no sentences to measure.
        conflicts=frozenset({"detectable_format:json_format"}),
    )
)


# --- style:question_count -------------------------------------------------------------------
# What may follow a sentence's last punctuation: closing quotes and brackets, emphasis.
_CLOSERS = "\"'”’)）]」』*_ \t"
_FINAL_PUNCTUATION = re.compile(r"[.!?。！？…]+$")


def is_question(sentence: str) -> bool:
    """Whether the sentence ends in a question mark (? or ？, alone or in a run such as
    "?!"), after any closing quotes, brackets or emphasis."""
    tail = _FINAL_PUNCTUATION.search(sentence.rstrip(_CLOSERS))
    return tail is not None and ("?" in tail.group() or "？" in tail.group())


def count_questions(text: str) -> int:
    """How many of `sentence_lines` are questions."""
    return sum(1 for s in sentence_lines(text) if is_question(s))


def _check_questions(response: str, p: Mapping[str, Any]) -> CheckResult:
    return exactly(count_questions(response), "questions", p["num_questions"])


register(
    ConstraintType(
        id="style:question_count",
        params=(Param("num_questions", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_questions": ctx.rng.choice((1, 1, 2, 2, 3))},
        checker=_check_questions,
        clashes_with_text=lambda p, text: count_questions(text) > p["num_questions"],
        conflicts=frozenset(
            {
                "detectable_format:json_format",
                # "Fewer than N sentences" and N questions leave nothing else to say.
                "length_constraints:number_sentences",
                # Two answers: does each ask N, or both together?
                "combination:two_responses",
            }
        ),
    )
)


# --- style:varied_openings ------------------------------------------------------------------
def opening_word(sentence: str) -> str:
    """The sentence's first word, case-folded ("" for none): a CJK character in Chinese."""
    found = words(sentence)
    return found[0].casefold() if found else ""


def repeated_openings(text: str) -> list[tuple[str, str]]:
    """(word, second sentence) for each pair of consecutive sentences opening alike."""
    units = sentence_lines(text)
    return [(opening_word(b), b) for a, b in pairwise(units) if opening_word(a) == opening_word(b)]


def _check_openings(response: str, p: Mapping[str, Any]) -> CheckResult:
    if not sentence_lines(response):
        return CheckResult(False, "no sentences")
    repeats = repeated_openings(response)
    if not repeats:
        return CheckResult(True, "no two consecutive sentences open with the same word")
    word, sentence = repeats[0]
    return CheckResult(
        False,
        f"{len(repeats)} sentence(s) open like the one before, first {word!r}: "
        f"{excerpt(sentence, 30)}",
    )


register(
    ConstraintType(
        id="style:varied_openings",
        params=(),
        languages=BOTH,
        sampler=lambda ctx: {},
        checker=_check_openings,
        clashes_with_text=lambda p, text: bool(repeated_openings(text)),
        conflicts=frozenset({"detectable_format:json_format"}),
    )
)


# --- style:keyword_bookends -----------------------------------------------------------------
def _check_bookends(response: str, p: Mapping[str, Any]) -> CheckResult:
    sentences = split_sentences(response)
    if not sentences:
        return CheckResult(False, "no sentences")
    keyword = p["keyword"]
    first = count_keyword(sentences[0], keyword) > 0
    last = count_keyword(sentences[-1], keyword) > 0
    if first and last:
        return CheckResult(True, f'"{keyword}" in the first and the last sentence')
    where = " and ".join(name for name, ok in (("first", first), ("last", last)) if not ok)
    shown = sentences[0] if not first else sentences[-1]
    return CheckResult(False, f'no "{keyword}" in the {where} sentence: {excerpt(shown, 30)}')


def _sample_bookends(ctx: SampleContext) -> dict[str, Any]:
    # Mostly a word of the task's own topic, which an answer can open and close on.
    return {"keyword": pick_words(ctx, 1, KEYWORDS[ctx.language], from_instruction=0.8)[0]}


register(
    ConstraintType(
        id="style:keyword_bookends",
        params=(Param("keyword", "str"),),
        languages=BOTH,
        sampler=_sample_bookends,
        checker=_check_bookends,
        required_text=lambda p: [p["keyword"]],
        conflicts=frozenset(
            {
                "detectable_format:json_format",
                # The fixed closing sentence, the postscript, or the request repeated
                # first is the sentence that would have to hold the word.
                "startend:end_checker",
                "detectable_content:postscript",
                "combination:repeat_prompt",
                "combination:two_responses",
            }
        ),
    )
)
