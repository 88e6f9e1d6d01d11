"""Helpers shared by the critic and rewriter tests (imported explicitly, not a conftest)."""

from __future__ import annotations

from evoinstruct.models.base import ChatRequest
from evoinstruct.store.records import Example


def make_example(
    id: str,
    instruction: str,
    output: str | None = "A fine answer with several words in it.",
    *,
    input: str = "",
    system: str = "",
    language: str | None = None,
) -> Example:
    """A stored-looking example built by hand."""
    return Example(
        id=id,
        instruction=instruction,
        input=input,
        output=output,
        system=system,
        round=1,
        language=language,
        model_version="teacher",
        meta={"origin": "test"},
    )


def user_text(request: ChatRequest) -> str:
    """The last user message of a request (the rendered prompt, or a retry reminder)."""
    return [m["content"] for m in request.messages if m["role"] == "user"][-1]
