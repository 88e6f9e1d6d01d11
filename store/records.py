"""Plain records that cross package boundaries: what agents propose and what the store returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from evoinstruct.store.stages import Stage

# "filter_input": a row of a data set `evoinstruct filter` cleans. Unlike a seed (the
# user's own prompt, never dropped), it competes like any machine-made example.
Source = Literal["seed", "generated", "evolved", "rewritten", "filter_input"]
Status = Literal["candidate", "accepted", "rejected", "superseded"]
SOURCES: tuple[str, ...] = ("seed", "generated", "evolved", "rewritten", "filter_input")
STATUSES: tuple[str, ...] = ("candidate", "accepted", "rejected", "superseded")
# Sources whose examples no verdict drops: a rejection is recorded with them, and they stay.
KEPT_SOURCES: frozenset[str] = frozenset({"seed"})


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
    """An example as stored in the pool.

    Past `id` and `instruction` every field has the value a fresh machine-made candidate
    would have, so code that builds one in memory (previews, demos, tests) names only what
    differs; the store always fills every field from its row.
    """

    id: str
    instruction: str
    input: str = ""
    output: str | None = None
    system: str = ""
    source: str = "generated"
    parent_id: str | None = None
    operation: str | None = None
    round: int = 0
    status: str = "candidate"
    language: str | None = None
    model_version: str | None = None
    template: str | None = None
    depth: int = 0
    created_at: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class FailureKind(StrEnum):
    """Why a model call gave no answer after its bounded retries (`models.base.Failure.kind`)."""

    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    CONNECTION = "connection"
    SERVER = "server"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    MALFORMED = "malformed"
    SCHEMA = "schema"
    OTHER = "other"

    @property
    def reason(self) -> str:
        """The stored form: reports, exports and existing databases facet on this reason."""
        return f"model_failure:{self.value}"


_FAILURE_BY_REASON: dict[str, FailureKind] = {kind.reason: kind for kind in FailureKind}


@dataclass
class Rejection:
    """Why something was dropped: a rejection is data, kept with the raw model output.

    `failure` is set when a model call failed: that is no verdict on the example
    (it is neither dropped nor finished; a later round or re-run tries it again).
    Build one with `Rejection.failed_call`; its `reason` is the failure's stored form.
    """

    stage: Stage | str  # a row read back holds the stored string
    reason: str
    evidence: Any = None
    raw_output: str | None = None
    example_id: str | None = None
    text: str | None = None
    failure: FailureKind | None = None

    def __post_init__(self) -> None:
        # The reason column is the only stored form of a failure, so this is the one
        # place that turns it back into a kind (a row read from an existing database).
        if self.failure is None:
            self.failure = _FAILURE_BY_REASON.get(self.reason)
        else:
            self.failure = FailureKind(self.failure)
            self.reason = self.failure.reason

    @classmethod
    def failed_call(
        cls,
        stage: Stage,
        kind: FailureKind | str,
        *,
        evidence: Any = None,
        example_id: str | None = None,
        text: str | None = None,
    ) -> Rejection:
        kind = FailureKind(kind)
        return cls(stage, kind.reason, evidence, None, example_id, text, kind)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Rejection:
        """A rejection as `store.rejections()` returns it."""
        keys = ("stage", "reason", "evidence", "raw_output", "example_id", "text")
        return cls(**{k: row.get(k) for k in keys})

    @property
    def is_verdict(self) -> bool:
        """Whether this says something about the example (a failed call does not)."""
        return self.failure is None


@dataclass
class Score:
    """One score of one example by one scorer on one dimension; value None means unparseable."""

    example_id: str
    scorer: str
    dimension: str
    value: float | None
    raw_output: str | None = None
    explanation: str | None = None


@dataclass
class PreferencePair:
    """Two answers drawn for one constrained prompt, told apart by the checkers alone.

    `chosen` passes every constraint of example `example_id` strictly (as drawn, or once
    repaired: `chosen_repaired` names the constraint ids fixed); `rejected` fails the
    constraint ids in `rejected_failed` strictly. `model_version` is the model that drew
    both; the prompt (instruction, input, system) is the example's.
    """

    example_id: str
    chosen: str
    rejected: str
    rejected_failed: list[str]
    chosen_repaired: list[str] = field(default_factory=list)
    rejected_truncated: bool = False
    model_version: str | None = None
