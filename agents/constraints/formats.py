"""Detectable format and content: lists, highlights, sections, JSON, title, placeholders,
postscript, a fixed yes/no/maybe answer, two responses.

Every check reads the response as IFEval's reference checker does (each rule
says how); bullets and list items are counted exactly, highlights, sections
and placeholders as "at least".

The postscript has a repair: a short generic line after the marker, in the
answer's language.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from evoinstruct.agents.constraints.registry import (
    AT_LEAST,
    BOTH,
    CheckResult,
    ConstraintType,
    Param,
    SampleContext,
    counted,
    exactly,
    register,
)
from evoinstruct.agents.constraints.text import phrase_forms
from evoinstruct.agents.constraints.vocab import POSTSCRIPT_MARKERS, SECTION_SPLITERS, pick_phrase
from evoinstruct.text.rules import has_cjk, script_shares

ENGLISH = frozenset({"en"})

# "1." "2)" and the Chinese "1、"; "1.5 kg" is a number, not an item.
_NUMBERED = re.compile(r"^[ \t]*\d+(?:[.)、．](?!\d))[ \t]*\S", re.MULTILINE)
# Emphasis within one line: *one star* or **two** around text with no star in it.
_SINGLE_HIGHLIGHT = re.compile(r"\*[^\n*]*\*")
_DOUBLE_HIGHLIGHT = re.compile(r"\*\*[^\n*]*\*\*")
_TITLE = re.compile(r"<<[^\n]+>>")
_PLACEHOLDER = re.compile(r"\[.*?\]")
_JSON_OPENERS = ("```json", "```Json", "```JSON", "```")


# Markdown bullets as IFEval counts them, star and dash lines each in a search of
# their own: a line whose first non-space character is "-" ("-5°C" and "---" too),
# or "*" followed by anything but "*" ("*italic* words" is one, "**bold**" and
# "***" are not). The white space may run over line breaks, and the character
# after a lone "*" may be the line break itself: a line of just "*" is a bullet
# whose text is the next line.
_STAR_BULLET = re.compile(r"^\s*\*[^*].*$", re.MULTILINE)
_DASH_BULLET = re.compile(r"^\s*-.*$", re.MULTILINE)


def count_bullets(text: str) -> int:
    """How many markdown bullet points IFEval finds in the text."""
    return len(_STAR_BULLET.findall(text)) + len(_DASH_BULLET.findall(text))


def _check_bullets(response: str, p: Mapping[str, Any]) -> CheckResult:
    return exactly(count_bullets(response), "bullet points", p["num_bullets"])


register(
    ConstraintType(
        id="detectable_format:number_bullet_lists",
        params=(Param("num_bullets", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_bullets": ctx.rng.randint(2, 6)},
        checker=_check_bullets,
        groups=frozenset({"list"}),
    )
)


def _check_numbered(response: str, p: Mapping[str, Any]) -> CheckResult:
    return exactly(len(_NUMBERED.findall(response)), "numbered items", p["num_items"])


register(
    ConstraintType(
        id="detectable_format:numbered_list",
        params=(Param("num_items", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_items": ctx.rng.randint(3, 7)},
        checker=_check_numbered,
        groups=frozenset({"list"}),
    )
)


def count_highlights(text: str) -> int:
    """Highlighted sections as IFEval counts them: *one-star* spans and **two-star**
    spans with text inside, each kind on its own, so "***both***" counts twice."""
    single = sum(1 for m in _SINGLE_HIGHLIGHT.findall(text) if m.strip("*").strip())
    double = sum(1 for m in _DOUBLE_HIGHLIGHT.findall(text) if m[2:-2].strip())
    return single + double


def _check_highlights(response: str, p: Mapping[str, Any]) -> CheckResult:
    found = count_highlights(response)
    return counted(found, "highlighted sections", AT_LEAST, p["num_highlights"])


register(
    ConstraintType(
        id="detectable_format:number_highlighted_sections",
        params=(Param("num_highlights", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_highlights": ctx.rng.randint(2, 4)},
        checker=_check_highlights,
    )
)


def _section_regex(spliter: str) -> re.Pattern[str]:
    # As IFEval counts markers: case-sensitive ("SECTION 1" is what the prompt asked
    # for), anywhere in the text, at most one white-space character before the number.
    return re.compile(re.escape(spliter) + r"\s?\d+")


def _check_sections(response: str, p: Mapping[str, Any]) -> CheckResult:
    found = len(_section_regex(p["section_spliter"]).findall(response))
    return counted(found, f"'{p['section_spliter']} X' markers", AT_LEAST, p["num_sections"])


def _sample_sections(ctx: SampleContext) -> dict[str, Any]:
    return {
        "section_spliter": pick_phrase(ctx, SECTION_SPLITERS[ctx.language]),
        "num_sections": ctx.rng.randint(2, 5),
    }


register(
    ConstraintType(
        id="detectable_format:multiple_sections",
        params=(Param("section_spliter", "str"), Param("num_sections", "int", minimum=1)),
        languages=BOTH,
        sampler=_sample_sections,
        checker=_check_sections,
        groups=frozenset({"layout"}),
        required_text=lambda p: [p["section_spliter"]],
    )
)


def _check_json(response: str, p: Mapping[str, Any]) -> CheckResult:
    # IFEval's reading: the opening fences ```json, ```Json, ```JSON and ``` come
    # off in that order, then one closing fence, and what is left must parse; any
    # JSON value passes, a bare string or number too.
    body = response.strip()
    for opener in _JSON_OPENERS:
        body = body.removeprefix(opener)
    body = body.removesuffix("```").strip()
    try:
        json.loads(body)
    except ValueError as exc:
        return CheckResult(False, f"not valid JSON: {exc.args[0] if exc.args else exc}")
    return CheckResult(True, "valid JSON")


register(
    ConstraintType(
        id="detectable_format:json_format",
        params=(),
        languages=BOTH,
        sampler=lambda ctx: {},
        checker=_check_json,
        groups=frozenset({"layout", "start", "end", "list"}),
        conflicts=frozenset(
            {
                "detectable_format:number_highlighted_sections",
                "detectable_format:title",
                "detectable_content:postscript",
                "detectable_format:constrained_response",
                "punctuation:no_comma",
                "change_case:english_capital",
                "change_case:capital_word_frequency",
                "length_constraints:number_sentences",
            }
        ),
    )
)


def _check_title(response: str, p: Mapping[str, Any]) -> CheckResult:
    # The longest <<...>> on a line, as IFEval matches it, with some text inside.
    for match in _TITLE.findall(response):
        title = match.lstrip("<").rstrip(">").strip()
        if title:
            return CheckResult(True, f"title <<{title}>>")
    return CheckResult(False, "no <<title>>")


register(
    ConstraintType(
        id="detectable_format:title",
        params=(),
        languages=BOTH,
        sampler=lambda ctx: {},
        checker=_check_title,
        # A title line would be paragraph 1 and shift which paragraph is "nth".
        conflicts=frozenset({"length_constraints:nth_paragraph_first_word"}),
    )
)


def _check_placeholders(response: str, p: Mapping[str, Any]) -> CheckResult:
    # Any [...] within a line, as IFEval counts them: "[]" and "[ ]" too.
    found = len(_PLACEHOLDER.findall(response))
    return counted(found, "[placeholders]", AT_LEAST, p["num_placeholders"])


register(
    ConstraintType(
        id="detectable_content:number_placeholders",
        params=(Param("num_placeholders", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_placeholders": ctx.rng.randint(1, 4)},
        checker=_check_placeholders,
    )
)


# IFEval's two dotted markers allow one white-space character after each inner dot
# ("P. S."); "P.S." needs its final dot, "P.P.S" has none to need.
_DOTTED_MARKERS = {
    "p.s.": re.compile(r"p\.\s?s\."),
    "p.p.s": re.compile(r"p\.\s?p\.\s?s"),
}


def has_postscript(text: str, marker: str) -> bool:
    """Whether the marker occurs in the text, case-insensitively, as IFEval looks
    for it: anywhere, not only at a line start. A CJK marker compares after NFKC."""
    dotted = _DOTTED_MARKERS.get(marker.strip().lower())
    if dotted is not None:
        return dotted.search(text.lower()) is not None
    haystack, needle = phrase_forms(text, marker)
    return needle in haystack


def _check_postscript(response: str, p: Mapping[str, Any]) -> CheckResult:
    if has_postscript(response, p["postscript_marker"]):
        return CheckResult(True, f"postscript starting with {p['postscript_marker']}")
    return CheckResult(False, f"no {p['postscript_marker']} in the response")


POSTSCRIPT_LINES = {"en": "I hope this helps.", "zh": "希望对你有帮助。"}


def _repair_postscript(response: str, p: Mapping[str, Any]) -> str:
    if _check_postscript(response, p).passed:
        return response
    # By the larger share of script, as the response-language check counts, not by any
    # CJK at all: an English answer that quotes one Chinese name is still English.
    shares = script_shares(response)
    line = POSTSCRIPT_LINES["zh" if shares["zh"] > shares["en"] else "en"]
    marker = p["postscript_marker"]
    # "附言：希望……" as Chinese writes it; a Latin marker ("P.S.") takes a space.
    separator = "：" if has_cjk(marker[-1]) else " "
    return f"{response.rstrip()}\n\n{marker}{separator}{line}"


def _sample_postscript(ctx: SampleContext) -> dict[str, Any]:
    return {"postscript_marker": pick_phrase(ctx, POSTSCRIPT_MARKERS[ctx.language])}


register(
    ConstraintType(
        id="detectable_content:postscript",
        params=(Param("postscript_marker", "str"),),
        languages=BOTH,
        sampler=_sample_postscript,
        checker=_check_postscript,
        groups=frozenset({"end"}),
        repair=_repair_postscript,
        # A postscript set off by a blank line or *** reads as one more paragraph.
        conflicts=frozenset(
            {
                "length_constraints:number_paragraphs",
                "length_constraints:nth_paragraph_first_word",
            }
        ),
        required_text=lambda p: [p["postscript_marker"]],
    )
)

CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _check_constrained(response: str, p: Mapping[str, Any]) -> CheckResult:
    body = response.strip()
    for option in CONSTRAINED_OPTIONS:
        if option in body:
            return CheckResult(True, f"contains {option!r}")
    return CheckResult(False, "none of the allowed answers")


register(
    ConstraintType(
        id="detectable_format:constrained_response",
        params=(),
        languages=ENGLISH,
        sampler=lambda ctx: {},
        checker=_check_constrained,
        groups=frozenset({"layout", "length", "list"}),
        conflicts=frozenset(
            {
                "detectable_format:number_highlighted_sections",
                "detectable_format:title",
                "detectable_content:number_placeholders",
            }
        ),
        required_text=lambda p: ["My answer is"],
    )
)


def _check_two_responses(response: str, p: Mapping[str, Any]) -> CheckResult:
    pieces = response.split("******")
    kept: list[str] = []
    for i, piece in enumerate(pieces):
        if piece.strip():
            kept.append(piece.strip())
        elif 0 < i < len(pieces) - 1:
            return CheckResult(False, "an empty response between ****** separators")
    if len(kept) != 2:
        return CheckResult(False, f"{len(kept)} response(s) separated by ******; needs 2")
    if kept[0] == kept[1]:
        return CheckResult(False, "the two responses are identical")
    return CheckResult(True, "two different responses")


register(
    ConstraintType(
        id="combination:two_responses",
        params=(),
        languages=BOTH,
        sampler=lambda ctx: {},
        checker=_check_two_responses,
        # "Exactly 4 bullets" across two responses has no clear reading.
        groups=frozenset({"layout", "start", "list"}),
    )
)
