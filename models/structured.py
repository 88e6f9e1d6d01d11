"""Structured output: ask for JSON matching a pydantic model, and validate what comes back.

The schema goes to the server as `response_format` json_schema (vLLM and
OpenAI constrain decoding with it; backends that cannot simply ignore it).
Whatever comes back is validated with the pydantic model; text that does not
validate becomes a `SchemaFailure` (kind "schema") carrying the raw output, so
an agent can record it as a rejection instead of passing it on as data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from evoinstruct.models.base import ChatModel, ChatRequest, Failure, Generation

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass
class SchemaFailure(Failure):
    """The call worked but its text is not valid for the schema; `raw_output` keeps the text."""

    raw_output: str = ""


@dataclass
class Parsed(Generic[T]):
    """A validated value and the generation it came from (first choice)."""

    value: T
    generation: Generation
    ok: bool = dataclasses.field(default=True, init=False)


def parse_json_as(schema: type[T], text: str) -> T:
    """Validate `text` as `schema`, tolerating a ```json fence or prose around one JSON object.

    Raises pydantic's ValidationError when nothing in the text validates.
    """
    stripped = text.strip()
    if match := _FENCE.match(stripped):
        stripped = match.group(1)
    try:
        return schema.model_validate_json(stripped)
    except ValidationError:
        start, end = stripped.find("{"), stripped.rfind("}")
        if start < 0 or end <= start or (start == 0 and end == len(stripped) - 1):
            raise
        return schema.model_validate_json(stripped[start : end + 1])


def with_schema(request: ChatRequest, schema: type[BaseModel]) -> ChatRequest:
    """The same request asking the server for JSON that matches `schema`."""
    return dataclasses.replace(request, json_schema=schema.model_json_schema())


def _short(err: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()[:3]
    ]
    more = f" (+{err.error_count() - 3} more)" if err.error_count() > 3 else ""
    return "; ".join(parts) + more


async def generate_structured(
    model: ChatModel, requests: Sequence[ChatRequest], schema: type[T]
) -> list[Parsed[T] | Failure]:
    """Generate each request constrained to `schema`; validate the first choice of each answer.

    A failed call stays the backend's Failure; an answer that does not validate
    becomes SchemaFailure(kind="schema", raw_output=<text>).
    """
    results = await model.generate([with_schema(r, schema) for r in requests])
    out: list[Parsed[T] | Failure] = []
    for result in results:
        if isinstance(result, Failure):
            out.append(result)
            continue
        try:
            out.append(Parsed(parse_json_as(schema, result.text), result))
        except ValidationError as err:
            cut = " (the answer was cut at max_tokens)" if result.truncated else ""
            out.append(
                SchemaFailure(
                    "schema",
                    f"answer does not match {schema.__name__}{cut}: {_short(err)}",
                    latency_s=result.latency_s,
                    raw_output=result.text,
                )
            )
    return out
