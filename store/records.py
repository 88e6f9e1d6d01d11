"""Plain records that cross package boundaries: what agents propose and what the store returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["seed", "generated", "evolved", "rewritten"]
Status = Literal["candidate", "accepted", "rejected", "superseded"]
SOURCES: tuple[str, ...] = ("seed", "generated", "evolved", "rewritten")
STATUSES: tuple[str, ...] = ("candidate", "accepted", "rejected", "superseded")


@dataclass
class ExampleDraft:
    """A new example an agent (or a seed file) proposes; the store gives it its content-hash id."""

    instruction: str
    input: str = ""
    output: str | None = None
    system: str = ""
    source: Source = "generated"
    parent_id: str | None = None
    operation: str | None = None
    model_version: str | None = None
    template: str | None = None
    language: str | None = None
    depth: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Example:
    """An example as stored in the pool."""

    id: str
    instruction: str
    input: str
    output: str | None
    system: str
    source: str
    parent_id: str | None
    operation: str | None
    round: int
    status: str
    language: str | None
    model_version: str | None
    template: str | None
    depth: int
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rejection:
    """Why something was dropped: a rejection is data, kept with the raw model output."""

    stage: str
    reason: str
    evidence: Any = None
    raw_output: str | None = None
    example_id: str | None = None
    text: str | None = None


@dataclass
class Score:
    """One score of one example by one scorer on one dimension; value None means unparseable."""

    example_id: str
    scorer: str
    dimension: str
    value: float | None
    raw_output: str | None = None
    explanation: str | None = None
