"""Values of a model that belong to one asyncio event loop (connections, semaphores).

A model outlives `asyncio.run`: a daemon's rounds or a notebook's cells each run a loop of
their own, and what one loop made (a connection pool, a semaphore) cannot serve the next.
Two loops running at once (threads) cannot share a model at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar


def refuse_if_running(bound: asyncio.AbstractEventLoop | None) -> None:
    """Raise when `bound`, the loop a model's resources belong to, is running: another
    thread is using the model, and this loop would get resources of the same capacity."""
    if bound is not None and bound.is_running():
        raise RuntimeError(
            "this model is in use on another running event loop (thread): make one model per thread"
        )


T = TypeVar("T")


class PerLoop(Generic[T]):
    """A value bound to the event loop that first uses it, made anew when a later loop asks:
    what an earlier loop made dies with it (its connections can only be closed there).

    `initial` is the first loop's value, made ahead (None: made on first use). Two loops
    running at once (threads) cannot share one: a request gate, for one, would admit each
    loop to the model's full capacity.
    """

    def __init__(self, make: Callable[[], T], initial: T | None = None) -> None:
        self._make = make
        self._loop: asyncio.AbstractEventLoop | None = None
        self._value: T | None = initial

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            refuse_if_running(self._loop)
            if self._loop is not None:  # an earlier loop's value dies with it
                self._value = None
            self._loop = loop
        if self._value is None:
            self._value = self._make()
        return self._value

    def take_current(self) -> T | None:
        """The value bound to the running loop, forgotten here (to close it); None if there is
        none, or it belongs to another loop."""
        value, self._value = self._value, None
        return value if self._loop is asyncio.get_running_loop() else None
