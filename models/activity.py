"""What a run's models are doing right now: calls in flight and done, tokens generated.

Every model a ModelSet builds is wrapped in `MeteredModel`, which opens a `Ticket` on the
run's `Activity` for each generate call and closes it with the results. An in-process backend
also counts tokens while it decodes (`current_ticket()` in its worker thread; the thread
runs in the calling task's context); an HTTP backend's tokens arrive with each answer. The
daemon reads `Activity.snapshot()` every few seconds for the live view and the log. These
are live figures of this process; the store keeps the round's books.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from evoinstruct.models.base import (
    ChatModel,
    ChatRequest,
    Failure,
    ModelWrapper,
    Result,
)

# The tokens per second shown are those of the last RATE_WINDOW_S seconds.
RATE_WINDOW_S = 20.0

_TICKET: ContextVar[Ticket | None] = ContextVar("evoinstruct_model_call", default=None)


def current_ticket() -> Ticket | None:
    """The generate call this code runs for (in a backend's worker thread too), if metered."""
    return _TICKET.get()


@dataclass(frozen=True)
class ActivitySnapshot:
    in_flight: int  # requests sent and not answered yet
    done: int  # requests answered (cache hits included)
    failed: int  # requests that ended as a Failure
    cached: int  # answered from the response cache
    tokens: int  # completion tokens generated, those still being decoded included
    tokens_per_s: float | None  # over the last RATE_WINDOW_S seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ticket:
    """One generate call's requests, while they run."""

    def __init__(self, activity: Activity, requests: int) -> None:
        self.activity = activity
        self.requests = requests
        self.live_tokens = 0  # decoded so far by an in-process backend

    def add_tokens(self, n: int) -> None:
        """Tokens decoded since the last call (from a worker thread)."""
        with self.activity.lock:
            self.live_tokens += n
            self.activity.tokens += n

    def close(self, results: Sequence[Result] | None) -> None:
        """The call ended: its live count gives way to its results' counts (None: cancelled,
        nothing counts but what was decoded)."""
        with self.activity.lock:
            self.activity.in_flight -= self.requests
            if results is None:
                return
            fresh = 0
            for result in results:
                if isinstance(result, Failure):
                    self.activity.failed += 1
                    continue
                self.activity.done += 1
                if result.cached:
                    self.activity.cached += 1
                else:
                    fresh += result.completion_tokens
            self.activity.tokens += fresh - self.live_tokens
            self.live_tokens = 0


class Activity:
    """Counters of every metered call in this process; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.in_flight = 0
        self.done = 0
        self.failed = 0
        self.cached = 0
        self.tokens = 0
        self._samples: deque[tuple[float, int]] = deque()

    def open(self, requests: int) -> Ticket:
        with self.lock:
            self.in_flight += requests
        return Ticket(self, requests)

    def snapshot(self) -> ActivitySnapshot:
        now = self.clock()
        with self.lock:
            counts = (self.in_flight, self.done, self.failed, self.cached, self.tokens)
        samples = self._samples
        samples.append((now, counts[4]))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        first_at, first_tokens = samples[0]
        # A finished call's count replaces its live estimate, which may have run ahead.
        rate = max(0.0, (counts[4] - first_tokens) / (now - first_at)) if now > first_at else None
        return ActivitySnapshot(*counts, tokens_per_s=rate)


class MeteredModel(ModelWrapper):
    """A ChatModel whose generate calls are counted on an Activity; all else passes through."""

    def __init__(self, inner: ChatModel, activity: Activity) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "activity", activity)

    def __setattr__(self, name: str, value: Any) -> None:
        # The response cache's namespace and a server's hand-off set attributes of the model.
        setattr(self.inner, name, value)

    async def generate(self, requests: Sequence[ChatRequest]) -> list[Result]:
        ticket = self.activity.open(len(requests))
        token = _TICKET.set(ticket)
        results: list[Result] | None = None
        try:
            results = await self.inner.generate(requests)
            return results
        finally:
            _TICKET.reset(token)
            ticket.close(results)
