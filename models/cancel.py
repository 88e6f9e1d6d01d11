"""Stopping in-process model work within seconds: a flag the worker thread checks.

asyncio cancels a coroutine at its next await, but an in-process model computes in a worker
thread that cancellation cannot reach: the thread runs on, holding the model, and the
process cannot even exit until it ends (asyncio.run waits for its executor's threads). So
the in-process backend runs its work through `run_in_thread`, which hands the work a
`CancelFlag` and sets it when the awaiting task is cancelled (the daemon cancels the step in
flight after a stop request's grace). The work checks the flag between batches
(`flag.check()`) and, while generating, between tokens (a transformers StoppingCriteria, see
`transformers_hooks.StopOnCancel`); what it had computed is discarded, never returned.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How long a cancelled call waits for its thread to notice the flag (one token or one batch)
# before it lets go; the thread then ends on its own.
THREAD_EXIT_WAIT_S = 5.0


class Cancelled(Exception):
    """Raised in a worker thread whose flag is set: its partial result is thrown away."""


class CancelFlag:
    """Set once, from any thread; checked by the work between its steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled when the flag is set (call it between batches)."""
        if self._event.is_set():
            raise Cancelled


async def run_in_thread(work: Callable[..., T], /, *args: object) -> T:
    """`work(*args, cancel=flag)` in a worker thread, like asyncio.to_thread; when the task
    awaiting it is cancelled, the flag is set and the thread given THREAD_EXIT_WAIT_S to
    return before CancelledError goes on."""
    flag = CancelFlag()
    context = contextvars.copy_context()  # as to_thread: the thread sees this task's context
    call = functools.partial(context.run, _quiet_when_cancelled, work, args, flag)
    future = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        flag.set()
        # A late error is nobody's to handle now (registered first: this wait may be
        # cancelled in turn when the daemon leaves).
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.wait({future}, timeout=THREAD_EXIT_WAIT_S)
        raise


def _quiet_when_cancelled(
    work: Callable[..., T], args: tuple[object, ...], flag: CancelFlag
) -> T | None:
    """`work` with its flag; the Cancelled it raises once nobody awaits it is no error.

    The thread may end after the event loop has closed (a stop's exit does not wait for
    it), and a future left holding an exception then prints "Future exception was never
    retrieved" and a traceback into the user's log."""
    try:
        return work(*args, cancel=flag)
    except Cancelled:
        if flag.is_set():
            return None
        raise
