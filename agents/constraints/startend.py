"""How a response starts and ends: start phrase, end phrase, wrapping quotes, repeating the prompt.

Phrases compare as `text.phrase_forms` says: case-insensitively, as IFEval
compares them, and a Chinese phrase also after NFKC, so "还有什么可以帮您的吗?"
meets an end phrase written with "？". Wrapping quotes are ASCII double quotes,
as in IFEval; around Chinese text “…” wrap too, being Chinese's double quotes.

The end phrase, the quotes and the repeated request have repairs (append,
wrap, prepend); each leaves a response that already passes as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evoinstruct.agents.constraints.registry import (
    BOTH,
    CheckResult,
    ConstraintType,
    Param,
    SampleContext,
    register,
)
from evoinstruct.agents.constraints.text import excerpt, phrase_forms
from evoinstruct.agents.constraints.vocab import END_PHRASES, START_PHRASES, pick_phrase
from evoinstruct.text.rules import has_cjk

START = frozenset({"start"})
END = frozenset({"end"})


def _check_start(response: str, p: Mapping[str, Any]) -> CheckResult:
    body, phrase = phrase_forms(response.strip(), p["start_phrase"])
    if body.startswith(phrase):
        return CheckResult(True, "starts with the phrase")
    return CheckResult(False, f"starts with {excerpt(response.strip())}")


register(
    ConstraintType(
        id="startend:start_checker",
        params=(Param("start_phrase", "str"),),
        languages=BOTH,
        sampler=lambda ctx: {"start_phrase": pick_phrase(ctx, START_PHRASES[ctx.language])},
        checker=_check_start,
        groups=START,
        conflicts=frozenset({"detectable_format:title"}),
        required_text=lambda p: [p["start_phrase"]],
    )
)


def _wrapped(body: str) -> bool:
    if len(body) > 1 and body[0] == body[-1] == '"':
        return True
    return len(body) > 1 and body[0] == "“" and body[-1] == "”" and has_cjk(body)


def _without_quotes(response: str) -> str:
    # IFEval strips white space, then every double quote at either end (but not the
    # white space inside them); “” come off around Chinese text as well.
    body = response.strip().strip('"')
    return body.strip('"“”') if has_cjk(body) else body


def _check_end(response: str, p: Mapping[str, Any]) -> CheckResult:
    body, phrase = phrase_forms(_without_quotes(response), p["end_phrase"])
    if body.endswith(phrase):
        return CheckResult(True, "ends with the phrase")
    return CheckResult(False, f"ends with {excerpt(response.strip()[-30:])}")


def _repair_end(response: str, p: Mapping[str, Any]) -> str:
    if _check_end(response, p).passed:
        return response
    body = response.strip()
    # A line of its own: the answer's last sentence may be unfinished or unpunctuated,
    # and the phrase should not read as its continuation.
    if _wrapped(body):
        # The check looks past wrapping quotes, so the phrase goes inside them and an
        # answer asked to be quoted stays quoted.
        return f"{body[:-1].rstrip()}\n{p['end_phrase']}{body[-1]}"
    return f"{body}\n{p['end_phrase']}"


register(
    ConstraintType(
        id="startend:end_checker",
        params=(Param("end_phrase", "str"),),
        languages=BOTH,
        sampler=lambda ctx: {"end_phrase": pick_phrase(ctx, END_PHRASES[ctx.language])},
        checker=_check_end,
        groups=END,
        repair=_repair_end,
        required_text=lambda p: [p["end_phrase"]],
    )
)


def _check_quotation(response: str, p: Mapping[str, Any]) -> CheckResult:
    if _wrapped(response.strip()):
        return CheckResult(True, "wrapped in double quotes")
    return CheckResult(False, "not wrapped in double quotes")


def _repair_quotation(response: str, p: Mapping[str, Any]) -> str:
    body = response.strip()
    # Straight ASCII quotes in either language: the check takes them around any text.
    return response if _wrapped(body) else f'"{body}"'


register(
    ConstraintType(
        id="startend:quotation",
        params=(),
        languages=BOTH,
        sampler=lambda ctx: {},
        checker=_check_quotation,
        groups=START,
        repair=_repair_quotation,
    )
)


def _check_repeat(response: str, p: Mapping[str, Any]) -> CheckResult:
    body, request = phrase_forms(response.strip(), p["prompt_to_repeat"])
    if body.startswith(request):
        return CheckResult(True, "starts by repeating the request")
    return CheckResult(False, f"does not start with the request; starts {excerpt(response)}")


def _repair_repeat(response: str, p: Mapping[str, Any]) -> str:
    if _check_repeat(response, p).passed:
        return response
    # A blank line sets the repeated request apart from the answer that follows it.
    return f"{p['prompt_to_repeat']}\n\n{response.lstrip()}"


def _sample_repeat(ctx: SampleContext) -> dict[str, Any]:
    return {"prompt_to_repeat": ctx.instruction.strip()}


register(
    ConstraintType(
        id="combination:repeat_prompt",
        params=(Param("prompt_to_repeat", "str"),),
        languages=BOTH,
        sampler=_sample_repeat,
        checker=_check_repeat,
        groups=START,
        repair=_repair_repeat,
        required_text=lambda p: [p["prompt_to_repeat"]],
        needs_instruction=True,
    )
)
