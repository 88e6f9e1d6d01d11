"""Length constraints: words, characters, sentences, paragraphs, a paragraph's first word.

Two paragraph conventions, as in IFEval: `number_paragraphs` counts pieces
between `***` dividers (an explicit marker the model cannot blur), while
`nth_paragraph_first_word` counts pieces between two newlines, because its
point is the first word of a natural paragraph. Words and sentences are
counted as `text` says (IFEval's rules; a CJK character is a word, 。！？ end
a sentence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from evoinstruct.agents.constraints.registry import (
    AT_LEAST,
    BOTH,
    LESS_THAN,
    RELATIONS,
    CheckResult,
    ConstraintType,
    Param,
    SampleContext,
    counted,
    exactly,
    register,
)
from evoinstruct.agents.constraints.text import (
    phrase_forms,
    split_on_double_newlines,
    split_on_stars,
)
from evoinstruct.agents.constraints.vocab import FIRST_WORDS, OPENING_WORDS, pick_phrase
from evoinstruct.text.rules import count_chars, count_sentences, count_words, has_cjk

LENGTH = frozenset({"length"})
LAYOUT = frozenset({"layout"})


def _crowds_out(
    measure: Callable[[str], int], name: str
) -> Callable[[Mapping[str, Any], str], bool]:
    """A clash test for an upper bound: required text (a prompt to repeat, an end
    phrase) may use at most half the budget, leaving the rest for the answer."""

    def clash(p: Mapping[str, Any], text: str) -> bool:
        return p["relation"] == LESS_THAN and 2 * measure(text) >= p[name]

    return clash


# Round targets read naturally; Chinese counts characters, so its numbers run higher.
_WORD_TARGETS = {
    ("en", LESS_THAN): (50, 80, 100, 150, 200, 300),
    ("en", AT_LEAST): (50, 100, 150, 200, 300),
    ("zh", LESS_THAN): (100, 150, 200, 300, 500),
    ("zh", AT_LEAST): (100, 200, 300, 400),
}
_CHAR_TARGETS = {
    ("en", LESS_THAN): (200, 300, 500, 800),
    ("en", AT_LEAST): (300, 500, 800),
    ("zh", LESS_THAN): (100, 150, 200, 300, 500),
    ("zh", AT_LEAST): (150, 300, 500),
}


def _sample_words(ctx: SampleContext) -> dict[str, Any]:
    relation = ctx.rng.choice(RELATIONS)
    return {
        "relation": relation,
        "num_words": ctx.rng.choice(_WORD_TARGETS[ctx.language, relation]),
    }


def _check_words(response: str, p: Mapping[str, Any]) -> CheckResult:
    return counted(count_words(response), "words", p["relation"], p["num_words"])


register(
    ConstraintType(
        id="length_constraints:number_words",
        params=(Param("relation", "relation"), Param("num_words", "int", minimum=1)),
        languages=BOTH,
        sampler=_sample_words,
        checker=_check_words,
        groups=LENGTH,
        clashes_with_text=_crowds_out(count_words, "num_words"),
    )
)


def _sample_chars(ctx: SampleContext) -> dict[str, Any]:
    relation = ctx.rng.choice(RELATIONS)
    return {
        "relation": relation,
        "num_chars": ctx.rng.choice(_CHAR_TARGETS[ctx.language, relation]),
    }


def _check_chars(response: str, p: Mapping[str, Any]) -> CheckResult:
    return counted(count_chars(response), "characters", p["relation"], p["num_chars"])


register(
    ConstraintType(
        id="length_constraints:number_characters",
        params=(Param("relation", "relation"), Param("num_chars", "int", minimum=1)),
        languages=BOTH,
        sampler=_sample_chars,
        checker=_check_chars,
        groups=LENGTH,
        clashes_with_text=_crowds_out(count_chars, "num_chars"),
    )
)


def _sample_sentences(ctx: SampleContext) -> dict[str, Any]:
    relation = ctx.rng.choice(RELATIONS)
    low, high = (3, 10) if relation == LESS_THAN else (2, 8)
    return {"relation": relation, "num_sentences": ctx.rng.randint(low, high)}


def _check_sentences(response: str, p: Mapping[str, Any]) -> CheckResult:
    return counted(count_sentences(response), "sentences", p["relation"], p["num_sentences"])


register(
    ConstraintType(
        id="length_constraints:number_sentences",
        params=(Param("relation", "relation"), Param("num_sentences", "int", minimum=1)),
        languages=BOTH,
        sampler=_sample_sentences,
        checker=_check_sentences,
        groups=LENGTH,
        clashes_with_text=_crowds_out(count_sentences, "num_sentences"),
        # Every list item, section marker and paragraph is at least one sentence,
        # so "fewer than 4 sentences" with "exactly 5 bullets" cannot be met.
        conflicts=frozenset(
            {
                "detectable_format:number_bullet_lists",
                "detectable_format:numbered_list",
                "detectable_format:multiple_sections",
                "length_constraints:number_paragraphs",
                "length_constraints:nth_paragraph_first_word",
            }
        ),
    )
)


def _check_star_paragraphs(response: str, p: Mapping[str, Any]) -> CheckResult:
    pieces = split_on_stars(response)
    # A divider before the first or after the last paragraph is harmless;
    # one between two others leaves an empty paragraph, which is a miscount.
    if pieces and not pieces[0].strip():
        pieces = pieces[1:]
    if pieces and not pieces[-1].strip():
        pieces = pieces[:-1]
    if any(not piece.strip() for piece in pieces):
        return CheckResult(False, "an empty paragraph between *** dividers")
    return exactly(len(pieces), "paragraphs", p["num_paragraphs"])


register(
    ConstraintType(
        id="length_constraints:number_paragraphs",
        params=(Param("num_paragraphs", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_paragraphs": ctx.rng.randint(2, 5)},
        checker=_check_star_paragraphs,
        groups=LAYOUT,
    )
)

# IFEval cuts a paragraph's first word at the first of these, after dropping
# straight quotes in front of it; anything else (a colon, markdown stars, a curly
# quote) stays part of it.
_WORD_STOPS = frozenset(".,?!'\"")
# Quotes in front of a Chinese first word: straight ones and Chinese's own.
_LEADING_QUOTES = "'\"“‘「『"


def first_word(paragraph: str) -> str:
    """A paragraph's first word as IFEval reads it, lower-cased.

    The first white-space separated token without leading ' and then " (IFEval
    strips those two, in that order), cut at the first of . , ? ! ' ": "First,"
    reads "first", but "**First**", "First:" and "“First" do not.
    """
    tokens = paragraph.split()
    token = tokens[0].lstrip("'").lstrip('"') if tokens else ""
    word = []
    for char in token:
        if char in _WORD_STOPS:
            break
        word.append(char)
    return "".join(word).lower()


def starts_with_word(paragraph: str, word: str) -> bool:
    """Whether the paragraph's first word is `word` (case-insensitive).

    A Latin word must be the paragraph's whole first word as IFEval reads it
    ("Firstly" is not "first"); a CJK word need only open the paragraph
    (after quotes), since Chinese runs on without spaces.
    """
    if has_cjk(word):
        body, target = phrase_forms(paragraph.strip().lstrip(_LEADING_QUOTES), word)
        return body.startswith(target)
    return first_word(paragraph) == word.strip().lower()


def _check_nth_paragraph(response: str, p: Mapping[str, Any]) -> CheckResult:
    # IFEval's reading: pieces between "\n\n", blank ones not counted, while the
    # nth paragraph is the nth piece, blank or not (three newlines in a row leave a
    # blank piece, which then fails the paragraph after it).
    pieces = split_on_double_newlines(response)
    found = sum(1 for piece in pieces if piece.strip())
    nth = p["nth_paragraph"]
    if nth > found:
        return exactly(found, "paragraphs", p["num_paragraphs"])
    paragraph = pieces[nth - 1].strip()
    if not paragraph:
        return CheckResult(False, f"paragraph {nth} is empty (more than one blank line before it)")
    count = exactly(found, "paragraphs", p["num_paragraphs"])
    if not count.passed:
        return count
    if starts_with_word(paragraph, p["first_word"]):
        return CheckResult(True, f"{found} paragraphs; paragraph {nth} starts right")
    return CheckResult(
        False, f"paragraph {nth} starts with {paragraph[:20]!r}, not {p['first_word']!r}"
    )


def _validate_nth(p: Mapping[str, Any]) -> None:
    if p["nth_paragraph"] > p["num_paragraphs"]:
        raise ValueError(
            f"nth_paragraph {p['nth_paragraph']} exceeds num_paragraphs {p['num_paragraphs']}"
        )


def _sample_nth(ctx: SampleContext) -> dict[str, Any]:
    num = ctx.rng.randint(2, 5)
    nth = ctx.rng.randint(1, num)
    words = (OPENING_WORDS if nth == 1 else FIRST_WORDS)[ctx.language]
    return {"num_paragraphs": num, "nth_paragraph": nth, "first_word": pick_phrase(ctx, words)}


register(
    ConstraintType(
        id="length_constraints:nth_paragraph_first_word",
        params=(
            Param("num_paragraphs", "int", minimum=1),
            Param("nth_paragraph", "int", minimum=1),
            Param("first_word", "str"),
        ),
        languages=BOTH,
        sampler=_sample_nth,
        checker=_check_nth_paragraph,
        groups=LAYOUT,
        conflicts=frozenset({"startend:start_checker", "combination:repeat_prompt"}),
        required_text=lambda p: [p["first_word"]],
        validate=_validate_nth,
    )
)
