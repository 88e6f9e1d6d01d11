"""The one outcome every agent returns: its rejections and the books of its model calls.

A rejection is a verdict on an item (`reject`) or a failed model call (`fail`),
which is no verdict: the stage drivers leave such an item unfinished, for a
later round or re-run. The books are one Counter with the keys `count_call`
writes ("calls", "tokens", "failure:<kind>", ...), so an agent that passes its
counter to a helper (the judge's `llm_scores`, InsTag) keeps one set of books.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evoinstruct.models.base import Failure, Result
from evoinstruct.store.records import Example, ExampleDraft, FailureKind, Rejection
from evoinstruct.store.stages import Stage

Item = Example | ExampleDraft


def failure_key(kind: FailureKind | str) -> str:
    """The counter key of failed calls of one kind."""
    return f"failure:{FailureKind(kind).value}"


def count_call(counters: Counter[str], result: Result) -> bool:
    """Count one model call in `counters`; True when it produced an answer."""
    counters["calls"] += 1
    if isinstance(result, Failure):
        counters[failure_key(result.kind)] += 1
        return False
    counters["prompt_tokens"] += result.prompt_tokens
    counters["completion_tokens"] += result.completion_tokens
    counters["tokens"] += result.prompt_tokens + result.completion_tokens
    if result.truncated:
        counters["truncated"] += 1
    return True


def failure_rejection(
    failure: Failure,
    example_id: str | None,
    stage: Stage,
    *,
    text: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> Rejection:
    """A failed call as data: its kind, the error message and how often it was tried."""
    details = {"message": failure.message, "attempts": failure.attempts, **(evidence or {})}
    return Rejection.failed_call(
        stage, failure.kind, evidence=details, example_id=example_id, text=text
    )


def _identity(item: Item | None, text: str | None) -> tuple[str | None, str | None]:
    """An item's store id (a draft has none yet) and the text a rejection shows."""
    if item is None:
        return None, text
    example_id = item.id if isinstance(item, Example) else None
    return example_id, item.instruction if text is None else text


@dataclass
class AgentOutcome:
    """Rejections and the books of model calls; each agent subclasses it with what it keeps."""

    stage: ClassVar[Stage]  # each agent's outcome names its stage

    rejections: list[Rejection] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        return self.counters["calls"]

    @property
    def tokens(self) -> int:
        return self.counters["tokens"]

    @property
    def failures(self) -> Counter[FailureKind]:
        """Failed calls by kind."""
        counts = {kind: self.counters[failure_key(kind)] for kind in FailureKind}
        return Counter({kind: n for kind, n in counts.items() if n})

    def usage(self) -> dict[str, int]:
        return {"calls": self.calls, "tokens": self.tokens}

    def reasons(self) -> Counter[str]:
        """Rejection counts per reason, failed calls included (as "model_failure:<kind>")."""
        return Counter(r.reason for r in self.rejections)

    def verdicts(self) -> list[Rejection]:
        """The rejections that say something about their item (failed calls do not)."""
        return [r for r in self.rejections if r.is_verdict]

    def failed_ids(self) -> set[str]:
        """Stored items whose model call failed: not finished, tried again later."""
        return {r.example_id for r in self.rejections if not r.is_verdict and r.example_id}

    def count(self, result: Result) -> bool:
        """Count one model call; True when it produced an answer."""
        return count_call(self.counters, result)

    def reject(
        self,
        reason: str,
        item: Item | None = None,
        *,
        evidence: Any = None,
        raw_output: str | None = None,
        text: str | None = None,
    ) -> Rejection:
        """A verdict on `item` (or on a text that never became an item)."""
        example_id, text = _identity(item, text)
        rejection = Rejection(self.stage, reason, evidence, raw_output, example_id, text)
        self.rejections.append(rejection)
        return rejection

    def fail(
        self,
        failure: Failure,
        item: Item | None = None,
        *,
        evidence: dict[str, Any] | None = None,
        text: str | None = None,
    ) -> Rejection:
        """A failed model call about `item`: recorded, never a verdict."""
        example_id, text = _identity(item, text)
        rejection = failure_rejection(failure, example_id, self.stage, text=text, evidence=evidence)
        self.rejections.append(rejection)
        return rejection
