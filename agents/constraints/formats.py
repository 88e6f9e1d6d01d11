"""Detectable format and content: lists, highlights, sections, JSON, title, placeholders,
postscript, a fixed yes/no/maybe answer, two responses.

Counting follows IFEval where it is explicit: bullets and list items are
counted exactly, highlights, sections and placeholders as "at least".

The postscript has a repair: a short generic line after the marker, in the
answer's language.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from evoinstruct.agents.constraints.registry import (
    AT_LEAST,
    CheckResult,
    ConstraintType,
    Param,
    SampleContext,
    counted,
    exactly,
    register,
)
from evoinstruct.agents.constraints.text import has_cjk, script_shares
from evoinstruct.agents.constraints.vocab import POSTSCRIPT_MARKERS, SECTION_SPLITERS, pick_phrase

BOTH = frozenset({"en", "zh"})
ENGLISH = frozenset({"en"})

# A markdown bullet needs a space after its marker, so "**bold**" and "-5°C"
# at a line start are not bullets; "***" dividers are not either.
_BULLET = re.compile(r"^[ \t]*[*-][ \t]+\S", re.MULTILINE)
# "1." "2)" and the Chinese "1、"; "1.5 kg" is a number, not an item.
_NUMBERED = re.compile(r"^[ \t]*\d+(?:[.)、．](?!\d))[ \t]*\S", re.MULTILINE)
_HIGHLIGHT = re.compile(r"\*\*([^\n*]+)\*\*|\*([^\n*]+)\*")
_TITLE = re.compile(r"<<([^\n]+?)>>")
_PLACEHOLDER = re.compile(r"\[([^\[\]\n]+)\]")
_JSON_FENCE = re.compile(r"^```[A-Za-z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _check_bullets(response: str, p: Mapping[str, Any]) -> CheckResult:
    return exactly(len(_BULLET.findall(response)), "bullet points", p["num_bullets"])


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


def _check_highlights(response: str, p: Mapping[str, Any]) -> CheckResult:
    found = sum(1 for m in _HIGHLIGHT.finditer(response) if (m.group(1) or m.group(2)).strip())
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
    # Case-sensitive like IFEval: "SECTION 1" is the marker the prompt asked for.
    return re.compile(r"(?<![^\W_])" + re.escape(spliter) + r"[ \t]*\d+")


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
    body = response.strip()
    fenced = _JSON_FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        return CheckResult(False, f"not valid JSON: {exc.args[0] if exc.args else exc}")
    # A bare string or number parses as JSON but is not a structured answer.
    if not isinstance(value, dict | list):
        return CheckResult(False, f"JSON {type(value).__name__}, not an object or array")
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
    for match in _TITLE.finditer(response):
        if match.group(1).strip():
            return CheckResult(True, f"title <<{match.group(1).strip()}>>")
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
    found = sum(1 for m in _PLACEHOLDER.finditer(response) if m.group(1).strip())
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


def _postscript_regex(marker: str) -> re.Pattern[str]:
    norm = unicodedata.normalize("NFKC", marker).strip().lower()
    # Dotted markers tolerate a space after a dot ("P. S.") and a missing final dot.
    if re.fullmatch(r"(?:p\.\s?)+s\.?", norm):
        letters = re.findall(r"[ps]", norm)
        body = r"\.\s?".join(letters) + r"\.?"
    else:
        body = re.escape(norm)
    return re.compile(r"^[ \t]*" + body, re.MULTILINE)


def _check_postscript(response: str, p: Mapping[str, Any]) -> CheckResult:
    text = unicodedata.normalize("NFKC", response).lower()
    if _postscript_regex(p["postscript_marker"]).search(text):
        return CheckResult(True, f"postscript starting with {p['postscript_marker']}")
    return CheckResult(False, f"no line starts with {p['postscript_marker']}")


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
