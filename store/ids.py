"""Content-hash ids: the same normalized content always gets the same id, so writes are idempotent."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, casefold and collapse white space: the form two copies of one text share."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


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


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0xF900 <= code <= 0xFAFF
    )


def language_of(text: str) -> str:
    """'zh', 'en' or 'other' by script: enough to pick a prompt set and to count languages."""
    cjk = sum(1 for ch in text if _is_cjk(ch))
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if cjk == 0 and latin == 0:
        return "other"
    # One CJK character carries about as much as a short English word.
    return "zh" if cjk * 3 >= latin else "en"
