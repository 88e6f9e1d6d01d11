"""Content rules beyond IFEval: distinct numbers written in digits, a date in a given
format, a given emoji a given number of times.

Numbers are runs of digits (full-width ones too), with an optional decimal part
and thousands groups ("1,200" is one number); two numbers are the same when their
values are ("2.50" and "2.5"); the numbers of a numbered list's items ("1. ", "2) ",
"3、" at a line's start) are no part of what the answer says and do not count. A
date must be a real one in the format asked (no 2025-02-30). An emoji counts by its
code point, whatever variation selector follows it.

None has a repair: a number, a date or an emoji put in by a fixed edit would not
belong to the answer's content.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from decimal import Decimal
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
from evoinstruct.agents.constraints.vocab import EMOJI, pick_phrase

_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


# --- content:distinct_numbers ---------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\d.])\d+(?:,\d{3}(?!\d))*(?:\.\d+)?")
_LIST_NUMBER = re.compile(r"^([ \t]*)\d+[.)、．](?=[ \t])", re.MULTILINE)


def distinct_numbers(text: str) -> list[Decimal]:
    """The distinct values of the numbers written in digits, in order of first use."""
    prose = _LIST_NUMBER.sub(r"\1", text.translate(_FULL_WIDTH_DIGITS))
    seen: dict[Decimal, None] = {}
    for match in _NUMBER.findall(prose):
        seen.setdefault(Decimal(match.replace(",", "")), None)
    return list(seen)


def _check_numbers(response: str, p: Mapping[str, Any]) -> CheckResult:
    found = distinct_numbers(response)
    return counted(len(found), "distinct numbers", AT_LEAST, p["num_numbers"])


register(
    ConstraintType(
        id="content:distinct_numbers",
        params=(Param("num_numbers", "int", minimum=1),),
        languages=BOTH,
        sampler=lambda ctx: {"num_numbers": ctx.rng.choice((2, 3, 3, 4, 5))},
        checker=_check_numbers,
    )
)


# --- content:date_format ----------------------------------------------------------------------
_MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip
_MONTH_NAMES = "|".join(_MONTHS)
# format -> (pattern, the order of year, month, day among its groups)
DATE_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "YYYY-MM-DD": (re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?![\d-])"), "ymd"),
    "DD/MM/YYYY": (re.compile(r"(?<![\d/])(\d{2})/(\d{2})/(\d{4})(?![\d/])"), "dmy"),
    "Month D, YYYY": (
        re.compile(rf"\b({_MONTH_NAMES})[ \t]+(\d{{1,2}}),[ \t]*(\d{{4}})(?!\d)", re.IGNORECASE),
        "mdy",
    ),
    "YYYY年M月D日": (re.compile(r"(?<!\d)(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日"), "ymd"),
}
_DATE_CHOICES = {"en": ("YYYY-MM-DD", "DD/MM/YYYY", "Month D, YYYY"), "zh": ("YYYY-MM-DD", "YYYY年M月D日")}  # fmt: skip


def _as_date(groups: tuple[str, ...], order: str) -> datetime.date | None:
    parts = dict(zip(order, groups, strict=True))
    month = parts["m"]
    number = _MONTHS.index(month.lower()) + 1 if month.isalpha() else int(month)
    try:
        return datetime.date(int(parts["y"]), number, int(parts["d"]))
    except ValueError:
        return None


def dates_in(text: str, date_format: str) -> tuple[list[datetime.date], list[str]]:
    """(the real dates written in this format, the matches that are no real date)."""
    pattern, order = DATE_FORMATS[date_format]
    good: list[datetime.date] = []
    bad: list[str] = []
    for match in pattern.finditer(text.translate(_FULL_WIDTH_DIGITS)):
        day = _as_date(match.groups(), order)
        if day is None:
            bad.append(match.group())
        else:
            good.append(day)
    return good, bad


def _check_date(response: str, p: Mapping[str, Any]) -> CheckResult:
    good, bad = dates_in(response, p["date_format"])
    if good:
        return CheckResult(True, f"{good[0].isoformat()} written as {p['date_format']}")
    if bad:
        return CheckResult(False, f"{bad[0]!r} is no real date")
    return CheckResult(False, f"no date written as {p['date_format']}")


def _sample_date(ctx: SampleContext) -> dict[str, Any]:
    return {"date_format": ctx.rng.choice(_DATE_CHOICES[ctx.language])}


register(
    ConstraintType(
        id="content:date_format",
        params=(Param("date_format", "choice", choices=tuple(DATE_FORMATS)),),
        languages=BOTH,
        sampler=_sample_date,
        checker=_check_date,
        # "March 5, 2025" needs its comma, which no_comma forbids.
        required_text=lambda p: [","] if "," in p["date_format"] else [],
    )
)


# --- content:emoji_count --------------------------------------------------------------------------
def _check_emoji(response: str, p: Mapping[str, Any]) -> CheckResult:
    return exactly(response.count(p["emoji"]), f"{p['emoji']} emoji", p["num_emoji"])


def _sample_emoji(ctx: SampleContext) -> dict[str, Any]:
    return {"emoji": pick_phrase(ctx, EMOJI), "num_emoji": ctx.rng.choice((1, 1, 2, 3))}


register(
    ConstraintType(
        id="content:emoji_count",
        params=(Param("emoji", "str"), Param("num_emoji", "int", minimum=1)),
        languages=BOTH,
        sampler=_sample_emoji,
        checker=_check_emoji,
        required_text=lambda p: [p["emoji"]],
        clashes_with_text=lambda p, text: text.count(p["emoji"]) > p["num_emoji"],
    )
)
