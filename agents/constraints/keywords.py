"""Keyword constraints: include, repeat, forbid words; letter frequency.

Matching is case-insensitive and follows IFEval: included and counted
keywords match anywhere ("dream" in "dreams", and "art" in "start" too),
forbidden words only between word boundaries, so forbidding "art" does not
forbid "artist". Chinese keywords match as substrings (`text.count_keyword`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evoinstruct.agents.constraints.registry import (
    AT_LEAST,
    BOTH,
    LESS_THAN,
    CheckResult,
    ConstraintType,
    Param,
    SampleContext,
    counted,
    register,
)
from evoinstruct.agents.constraints.text import count_keyword
from evoinstruct.agents.constraints.vocab import FILLERS, KEYWORDS, pick_words


def _check_existence(response: str, p: Mapping[str, Any]) -> CheckResult:
    missing = [k for k in p["keywords"] if count_keyword(response, k) == 0]
    if missing:
        return CheckResult(False, f"missing keyword(s): {', '.join(missing)}")
    return CheckResult(True, "all keywords present")


def _sample_existence(ctx: SampleContext) -> dict[str, Any]:
    # Mostly words off the topic: the topic's own words appear anyway.
    n = ctx.rng.randint(1, 3)
    return {"keywords": pick_words(ctx, n, KEYWORDS[ctx.language], from_instruction=0.3)}


register(
    ConstraintType(
        id="keywords:existence",
        params=(Param("keywords", "words"),),
        languages=BOTH,
        sampler=_sample_existence,
        checker=_check_existence,
        required_text=lambda p: list(p["keywords"]),
    )
)


def _check_frequency(response: str, p: Mapping[str, Any]) -> CheckResult:
    count = count_keyword(response, p["keyword"])
    return counted(count, f'occurrences of "{p["keyword"]}"', p["relation"], p["frequency"])


def _sample_frequency(ctx: SampleContext) -> dict[str, Any]:
    relation = AT_LEAST if ctx.rng.random() < 0.6 else LESS_THAN
    words = pick_words(ctx, 1, KEYWORDS[ctx.language], from_instruction=0.7)
    return {"keyword": words[0], "frequency": ctx.rng.randint(2, 4), "relation": relation}


register(
    ConstraintType(
        id="keywords:frequency",
        params=(
            Param("keyword", "str"),
            Param("frequency", "int", minimum=1),
            Param("relation", "relation"),
        ),
        languages=BOTH,
        sampler=_sample_frequency,
        checker=_check_frequency,
        required_text=lambda p: [p["keyword"]] if p["relation"] == AT_LEAST else [],
        clashes_with_text=lambda p, text: (
            p["relation"] == LESS_THAN and count_keyword(text, p["keyword"]) >= p["frequency"]
        ),
    )
)


def _check_forbidden(response: str, p: Mapping[str, Any]) -> CheckResult:
    found = [w for w in p["forbidden_words"] if count_keyword(response, w, whole_word=True)]
    if found:
        return CheckResult(False, f"forbidden word(s) used: {', '.join(found)}")
    return CheckResult(True, "no forbidden words")


def _sample_forbidden(ctx: SampleContext) -> dict[str, Any]:
    n = ctx.rng.randint(1, 3)
    return {"forbidden_words": pick_words(ctx, n, FILLERS[ctx.language], from_instruction=0.5)}


register(
    ConstraintType(
        id="keywords:forbidden_words",
        params=(Param("forbidden_words", "words"),),
        languages=BOTH,
        sampler=_sample_forbidden,
        checker=_check_forbidden,
        clashes_with_text=lambda p, text: any(
            count_keyword(text, w, whole_word=True) for w in p["forbidden_words"]
        ),
    )
)


def _letter_count(text: str, letter: str) -> int:
    return text.lower().count(letter)


def _check_letter(response: str, p: Mapping[str, Any]) -> CheckResult:
    count = _letter_count(response, p["letter"])
    return counted(count, f"'{p['letter']}'s", p["let_relation"], p["let_frequency"])


def _sample_letter(ctx: SampleContext) -> dict[str, Any]:
    # "At least" on a mid-frequency letter, "fewer than" on a rare one: "fewer
    # than 5 e's" is near impossible and "at least 3 e's" is no constraint.
    if ctx.rng.random() < 0.6:
        return {
            "letter": ctx.rng.choice("bcdfghklmpuvwy"),
            "let_frequency": ctx.rng.randint(3, 12),
            "let_relation": AT_LEAST,
        }
    return {
        "letter": ctx.rng.choice("jqxz"),
        "let_frequency": ctx.rng.randint(2, 6),
        "let_relation": LESS_THAN,
    }


register(
    ConstraintType(
        id="keywords:letter_frequency",
        params=(
            Param("letter", "letter"),
            Param("let_frequency", "int", minimum=1),
            Param("let_relation", "relation"),
        ),
        languages=frozenset({"en"}),
        sampler=_sample_letter,
        checker=_check_letter,
        clashes_with_text=lambda p, text: (
            p["let_relation"] == LESS_THAN
            and _letter_count(text, p["letter"]) >= p["let_frequency"]
        ),
    )
)
