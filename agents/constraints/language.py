"""Response language: any language langdetect tells apart, decided as IFEval decides it.

`text.is_language` holds the rule: langdetect (seeded) names the language, as
in IFEval, except that Chinese is decided by script (at least half of the
word units Han), which IFEval's own comparison could never pass.

The sampler asks for the instruction's own language: a cross-language
request would change the example's language, which the rest of the pipeline
keys on. "Answer only in Chinese" is still a real constraint, as models
drift into English mid-answer. Other languages arrive with IFEval-format files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evoinstruct.agents.constraints.language_names import LANGUAGE_NAMES
from evoinstruct.agents.constraints.registry import (
    CheckResult,
    ConstraintType,
    Param,
    register,
)
from evoinstruct.agents.constraints.text import is_language
from evoinstruct.text.rules import detect_language, script_shares


def _check_language(response: str, p: Mapping[str, Any]) -> CheckResult:
    target = p["language"]
    name = LANGUAGE_NAMES[target][0]
    if is_language(response, target):
        return CheckResult(True, f"in {name}")
    if target == "zh":
        share = script_shares(response)["zh"]
        return CheckResult(False, f"{share:.0%} Chinese; needs at least half")
    return CheckResult(False, f"detected {detect_language(response)}, not {target} ({name})")


register(
    ConstraintType(
        id="language:response_language",
        params=(Param("language", "language"),),
        languages=frozenset({"en", "zh"}),
        sampler=lambda ctx: {"language": ctx.language},
        checker=_check_language,
    )
)
