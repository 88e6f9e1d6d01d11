"""Markup and layout rules beyond IFEval: a marker opening every paragraph, bullets
ending in a period, a number of markdown headings, a labelled line, parenthetical
remarks.

Each reads the answer as it renders: paragraphs are blocks between blank lines or
divider lines (`***`, `---`); a bullet is a line starting with "-", "*", "+" or "•"
and a space; a heading is a markdown "#" line outside code fences. The same rules
hold in Chinese, where 。 ends a bullet as well as "." and （） are parentheses.

The paragraph marker and the bullets' periods have repairs: prefixing a paragraph
with the marker, or ending a bullet with a period (in place of a trailing comma,
colon or semicolon), leaves every word as it was. A bullet ending in "?" or "!" is
left alone: its mark says something a period would not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
from evoinstruct.agents.constraints.text import excerpt, is_divider
from evoinstruct.agents.constraints.vocab import LINE_LABELS, PARAGRAPH_MARKERS, pick_phrase
from evoinstruct.text.rules import has_cjk, normalize, without_code_blocks, words


# --- markup:paragraph_marker ------------------------------------------------------------------
def paragraph_openings(text: str) -> list[int]:
    """Indices (into `text.split("\\n")`) of the lines that open a paragraph: the first
    non-blank line after the start, a blank line or a divider line."""
    out: list[int] = []
    after_break = True
    for i, line in enumerate(text.split("\n")):
        if not line.strip() or is_divider(line):
            after_break = True
            continue
        if after_break:
            out.append(i)
        after_break = False
    return out


def _unmarked(text: str, marker: str) -> list[str]:
    lines = text.split("\n")
    return [lines[i] for i in paragraph_openings(text) if not lines[i].lstrip().startswith(marker)]


def _check_marker(response: str, p: Mapping[str, Any]) -> CheckResult:
    marker = p["marker"]
    count = len(paragraph_openings(response))
    if count == 0:
        return CheckResult(False, "no paragraphs")
    missing = _unmarked(response, marker)
    if not missing:
        return CheckResult(True, f"all {count} paragraph(s) open with {marker!r}")
    return CheckResult(
        False,
        f"{len(missing)} of {count} paragraph(s) do not open with {marker!r}, first "
        f"{excerpt(missing[0])}",
    )


def _repair_marker(response: str, p: Mapping[str, Any]) -> str:
    marker = p["marker"]
    lines = response.split("\n")
    for i in paragraph_openings(response):
        body = lines[i].lstrip()
        if not body.startswith(marker):
            lines[i] = f"{lines[i][: len(lines[i]) - len(body)]}{marker} {body}"
    return "\n".join(lines)


register(
    ConstraintType(
        id="markup:paragraph_marker",
        params=(Param("marker", "str"),),
        languages=BOTH,
        sampler=lambda ctx: {"marker": pick_phrase(ctx, PARAGRAPH_MARKERS[ctx.language])},
        checker=_check_marker,
        repair=_repair_marker,
        # The answer's first characters are the marker: nothing else may claim them.
        groups=frozenset({"start"}),
        conflicts=frozenset(
            {
                # A marked list item, heading or title line is no longer one.
                "detectable_format:number_bullet_lists",
                "detectable_format:numbered_list",
                "detectable_format:title",
                "length_constraints:nth_paragraph_first_word",
                "markup:bullet_periods",
                "markup:heading_count",
                "markup:label_line",
            }
        ),
    )
)


# --- markup:bullet_periods ----------------------------------------------------------------------
MIN_BULLETS = 2
_BULLET = re.compile(r"^[ \t]*[-*+•][ \t]+\S")
_TRAILING_CLOSERS = re.compile(r"[\"'”’)）\]」』*_\s]*$")
_PERIODS = (".", "。", "．")
# A trailing mark a period takes the place of; "?" and "!" say more than one would.
_REPLACEABLE = ",;:，；：、"
_KEEP = "?!？！…"


def bullet_lines(text: str) -> list[str]:
    """Markdown bullet lines ("- x", "* x", "+ x", "• x"), divider lines ("* * *") not."""
    return [line for line in text.split("\n") if _BULLET.match(line) and not is_divider(line)]


def _split_closers(line: str) -> tuple[str, str]:
    match = _TRAILING_CLOSERS.search(line)
    cut = match.start() if match else len(line)
    return line[:cut], line[cut:]


def ends_with_period(line: str) -> bool:
    """Whether a line's text ends in one period (. 。 or ．, not an ellipsis "..") before
    any closing quotes, brackets or emphasis."""
    core, _ = _split_closers(line)
    return core.endswith(_PERIODS) and not core.endswith("..")


def _check_bullet_periods(response: str, p: Mapping[str, Any]) -> CheckResult:
    bullets = bullet_lines(response)
    if len(bullets) < MIN_BULLETS:
        return CheckResult(False, f"{len(bullets)} bullet(s); needs at least {MIN_BULLETS}")
    open_ = [b for b in bullets if not ends_with_period(b)]
    if not open_:
        return CheckResult(True, f"all {len(bullets)} bullets end with a period")
    return CheckResult(
        False,
        f"{len(open_)} of {len(bullets)} bullets end without a period, first "
        f"{excerpt(open_[0].strip()[-30:])}",
    )


def _with_period(line: str) -> str:
    core, closers = _split_closers(line)
    if ends_with_period(line) or core.endswith(tuple(_KEEP)) or core.endswith(".."):
        return line
    core = core[:-1] if core.endswith(tuple(_REPLACEABLE)) else core
    if not core.strip() or _BULLET.match(core) is None:
        return line
    period = "。" if has_cjk(core[-1]) else "."
    return f"{core}{period}{closers}"


def _repair_bullet_periods(response: str, p: Mapping[str, Any]) -> str:
    lines = response.split("\n")
    return "\n".join(
        _with_period(line) if _BULLET.match(line) and not is_divider(line) else line
        for line in lines
    )


register(
    ConstraintType(
        id="markup:bullet_periods",
        params=(),
        languages=BOTH,
        sampler=lambda ctx: {},
        checker=_check_bullet_periods,
        repair=_repair_bullet_periods,
        conflicts=frozenset(
            {
                "detectable_format:json_format",
                "detectable_format:constrained_response",
                "detectable_format:numbered_list",
                "combination:two_responses",
                # Every bullet would be a sentence of its own.
                "length_constraints:number_sentences",
            }
        ),
    )
)


# --- markup:heading_count --------------------------------------------------------------------
_HEADING = re.compile(r"^[ ]{0,3}#{1,6}[ \t]+\S", re.MULTILINE)


def count_headings(text: str) -> int:
    """Markdown headings ("# x" to "###### x") outside fenced code ("#tag" is none)."""
    return len(_HEADING.findall(without_code_blocks(text)))


def _check_headings(response: str, p: Mapping[str, Any]) -> CheckResult:
    return exactly(count_headings(response), "markdown headings", p["num_headings"])


register(
    ConstraintType(
        id="markup:heading_count",
        params=(Param("num_headings", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_headings": ctx.rng.randint(2, 4)},
        checker=_check_headings,
        conflicts=frozenset(
            {
                "detectable_format:json_format",
                "detectable_format:constrained_response",
                "combination:two_responses",
                # A heading line is a paragraph of its own and shifts which is "nth".
                "length_constraints:nth_paragraph_first_word",
            }
        ),
    )
)


# --- markup:label_line ------------------------------------------------------------------------
# What may come before a label on its line: markdown prefixes and emphasis.
_LABEL_PREFIX = re.compile(r"^[\s#>\-+•]*")


def labelled_line(text: str, label: str) -> str | None:
    """The first line that starts with the label (case-insensitively, after NFKC, so
    "总结:" is "总结：") and goes on with a word on the same line; markdown emphasis
    and prefixes ("**Summary:**", "- Summary:") do not count against it."""
    target = normalize(label)
    for line in text.split("\n"):
        body = normalize(_LABEL_PREFIX.sub("", line.replace("*", "")))
        if body.startswith(target) and words(body[len(target) :]):
            return line
    return None


def _check_label(response: str, p: Mapping[str, Any]) -> CheckResult:
    line = labelled_line(response, p["label"])
    if line is not None:
        return CheckResult(True, f"line {excerpt(line.strip())}")
    return CheckResult(False, f"no line starting with {p['label']!r} and text after it")


def _sample_label(ctx: SampleContext) -> dict[str, Any]:
    return {"label": pick_phrase(ctx, LINE_LABELS[ctx.language])}


register(
    ConstraintType(
        id="markup:label_line",
        params=(Param("label", "str"),),
        languages=BOTH,
        sampler=_sample_label,
        checker=_check_label,
        required_text=lambda p: [p["label"]],
        conflicts=frozenset({"detectable_format:json_format"}),
    )
)


# --- markup:parentheses ---------------------------------------------------------------------------
# Innermost brackets on one line, ASCII or full-width, holding a letter of any script;
# "(1)" and a markdown link's "](url)" are not remarks.
_PARENTHETICAL = re.compile(r"(?<!\])[(（][^()（）\n]*?[^\W\d_][^()（）\n]*?[)）]")


def count_parentheticals(text: str) -> int:
    """Remarks in round brackets: innermost pairs on one line with a letter inside."""
    return len(_PARENTHETICAL.findall(text))


def _check_parentheses(response: str, p: Mapping[str, Any]) -> CheckResult:
    found = count_parentheticals(response)
    return exactly(found, "remarks in parentheses", p["num_parentheticals"])


register(
    ConstraintType(
        id="markup:parentheses",
        params=(Param("num_parentheticals", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_parentheticals": ctx.rng.choice((1, 1, 2, 2, 3))},
        checker=_check_parentheses,
        clashes_with_text=lambda p, text: count_parentheticals(text) > p["num_parentheticals"],
        conflicts=frozenset({"detectable_format:json_format"}),
    )
)
