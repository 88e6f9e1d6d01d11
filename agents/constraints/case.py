"""Letter case and punctuation: all lowercase, all capitals, capital-word count, no commas.

As in IFEval, "all lowercase" and "all capitals" mean an English response
(`is_language(text, "en")`) whose cased letters, of any script, are all in that
case (`str.islower()` / `str.isupper()`); capital words are counted as
`text.capital_words` says. They are sampled for English instructions alone.
no_comma counts the Chinese commas ， and 、 as commas, where IFEval counts
only ",": a Chinese answer "without commas" that uses them has not followed
the instruction.

Lowercase, capitals and no_comma have repairs: changing the case, or taking
the commas out, meets them and leaves every word in place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from evoinstruct.agents.constraints.registry import (
    AT_LEAST,
    LESS_THAN,
    CheckResult,
    ConstraintType,
    Param,
    SampleContext,
    counted,
    register,
)
from evoinstruct.agents.constraints.text import COMMAS, capital_words, comma_count, is_language

ENGLISH = frozenset({"en"})
CASE = frozenset({"case"})
# "My answer is yes." and "SECTION 1" are matched case-sensitively, as in IFEval;
# repeating the request "word for word" in another case reads as a contradiction.
_CASE_SENSITIVE = frozenset(
    {
        "detectable_format:constrained_response",
        "detectable_format:multiple_sections",
        "combination:repeat_prompt",
    }
)


def _check_case(response: str, lower: bool) -> CheckResult:
    case = "lowercase" if lower else "capitals"
    if not (response.islower() if lower else response.isupper()):
        wrong = [ch for ch in response if (ch.isupper() if lower else ch.islower())]
        if not wrong:
            return CheckResult(False, "no cased letters")
        return CheckResult(False, f"{len(wrong)} letter(s) not in {case}, first {wrong[0]!r}")
    if not is_language(response, "en"):
        return CheckResult(False, f"in {case} but not in English")
    return CheckResult(True, f"English, all in {case}")


def _recased(response: str, lower: bool) -> str:
    # A change of case cannot make an answer English: one in another language is left
    # as it is, to fail the check as it stands.
    if not is_language(response, "en"):
        return response
    return response.lower() if lower else response.upper()


def _check_lowercase(response: str, p: Mapping[str, Any]) -> CheckResult:
    return _check_case(response, lower=True)


register(
    ConstraintType(
        id="change_case:english_lowercase",
        params=(),
        languages=ENGLISH,
        sampler=lambda ctx: {},
        checker=_check_lowercase,
        groups=CASE,
        repair=lambda response, p: _recased(response, lower=True),
        conflicts=_CASE_SENSITIVE,
    )
)


def _check_uppercase(response: str, p: Mapping[str, Any]) -> CheckResult:
    return _check_case(response, lower=False)


register(
    ConstraintType(
        id="change_case:english_capital",
        params=(),
        languages=ENGLISH,
        sampler=lambda ctx: {},
        checker=_check_uppercase,
        groups=CASE,
        repair=lambda response, p: _recased(response, lower=False),
        conflicts=_CASE_SENSITIVE,
    )
)


def _check_capital_words(response: str, p: Mapping[str, Any]) -> CheckResult:
    count = len(capital_words(response))
    return counted(count, "all-capital words", p["capital_relation"], p["capital_frequency"])


def _sample_capital_words(ctx: SampleContext) -> dict[str, Any]:
    if ctx.rng.random() < 0.6:
        return {"capital_frequency": ctx.rng.randint(3, 10), "capital_relation": AT_LEAST}
    return {"capital_frequency": ctx.rng.randint(3, 8), "capital_relation": LESS_THAN}


register(
    ConstraintType(
        id="change_case:capital_word_frequency",
        params=(
            Param("capital_frequency", "int", minimum=1),
            Param("capital_relation", "relation"),
        ),
        languages=ENGLISH,
        sampler=_sample_capital_words,
        checker=_check_capital_words,
        groups=CASE,
    )
)


def _check_no_comma(response: str, p: Mapping[str, Any]) -> CheckResult:
    n = comma_count(response)
    if n:
        return CheckResult(False, f"{n} comma(s)")
    return CheckResult(True, "no commas")


_COMMA_CLASS = "[" + re.escape("".join(sorted(COMMAS))) + "]"
# A comma next to white space or at the end of a line is dropped ("a, b" -> "a b"), and
# so is a thousands separator ("1,000" -> "1000"); any other comma becomes a space. That
# includes the Chinese ， and 、: "苹果 香蕉" keeps the pause the comma marked, while
# "；" would join the clauses more heavily and "。" would split them into sentences. A
# space is counted by no checker (not a word, a character or a sentence end), so the
# only count the repair moves is that of the characters the commas took.
_DROPPED_COMMA = re.compile(
    rf"(?<=\s){_COMMA_CLASS}|{_COMMA_CLASS}(?=\s|$)|(?<=\d),(?=\d{{3}}(?!\d))", re.MULTILINE
)
_COMMA = re.compile(_COMMA_CLASS)


def _repair_no_comma(response: str, p: Mapping[str, Any]) -> str:
    return _COMMA.sub(" ", _DROPPED_COMMA.sub("", response))


register(
    ConstraintType(
        id="punctuation:no_comma",
        params=(),
        languages=frozenset({"en", "zh"}),
        sampler=lambda ctx: {},
        checker=_check_no_comma,
        clashes_with_text=lambda p, text: comma_count(text) > 0,
        repair=_repair_no_comma,
    )
)
