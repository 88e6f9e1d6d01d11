"""Response language, decided by script rather than a language-ID model.

English and Chinese are told apart reliably by script, with no model or
dependency: the response passes when at least half of its word units (Han
characters for Chinese, Latin words for English; code blocks set aside) are
in the target script. Latin-script languages (French, Spanish...) cannot be
told from English this way, so only 'en' and 'zh' are accepted.

The sampler asks for the instruction's own language: a cross-language
request would change the example's language, which the rest of the pipeline
keys on. "Answer only in Chinese" is still a real constraint, as models
drift into English mid-answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evoinstruct.agents.constraints.registry import (
    CheckResult,
    ConstraintType,
    Param,
    register,
)
from evoinstruct.agents.constraints.text import script_shares

MIN_SHARE = 0.5
_NAMES = {"en": "English", "zh": "Chinese"}


def _check_language(response: str, p: Mapping[str, Any]) -> CheckResult:
    target = p["language"]
    share = script_shares(response)[target]
    ok = share >= MIN_SHARE
    return CheckResult(ok, f"{share:.0%} {_NAMES[target]}; needs at least {MIN_SHARE:.0%}")


register(
    ConstraintType(
        id="language:response_language",
        params=(Param("language", "language"),),
        languages=frozenset({"en", "zh"}),
        sampler=lambda ctx: {"language": ctx.language},
        checker=_check_language,
    )
)
