"""Content-hash ids: the same normalized content always gets the same id, so writes are idempotent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from evoinstruct.text.rules import normalize


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:20]


def example_id(
    instruction: str, input: str = "", output: str | None = None, *, source: str = ""
) -> str:
    """Id over the normalized prompt: instruction and input joined.

    Joining makes the id independent of how a format splits the prompt (ShareGPT
    and OpenAI chat have one user turn where Alpaca has instruction + input), so
    a pool exported as chat and imported again is the same pool. A rewrite
    (ReAlign) keeps its parent's prompt and changes only the response, so a
    rewritten example also hashes its output.
    """
    prompt = normalize(f"{instruction} {input}")
    if source == "rewritten":
        return _digest("rewritten", prompt, normalize(output or ""))
    return _digest(prompt)


def stable_hash(value: Any) -> str:
    """A stable id for any JSON-able value (scores, rejections, cache keys)."""
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    ).hexdigest()
