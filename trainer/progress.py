"""What a training process tells the daemon, as JSON lines on stdout.

The trainer runs in a process of its own (or several, under `accelerate launch`); the
daemon reads these lines while it waits. Step lines (`{"progress": ...}`) come from the
main process only and feed the live view with step, total steps and the last logged loss.
A failing process prints `{"error": ...}` with its rank before it exits, so the reason
reaches the daemon even when a launcher's own messages end stderr. The run's closing
summary stays the last line, so readers that only want the result take the last line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

PROGRESS_KEY = "progress"
ERROR_KEY = "error"


def _emit(value: dict[str, Any]) -> None:
    # One write per line: processes that share the pipe never split each other's lines.
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def report_failure(message: str, *, kind: str, exit_code: int, rank: int) -> None:
    """`{"error": {"message", "type", "exit_code", "rank"}}` for the daemon's recorded reason."""
    _emit({ERROR_KEY: {"message": message, "type": kind, "exit_code": exit_code, "rank": rank}})


def begin_phase(callbacks: Sequence[Any], phase: str) -> None:
    """Tell the step reporters among `callbacks` that a later training phase begins."""
    for callback in callbacks:
        if isinstance(callback, StepReporter):
            callback.phase, callback.loss = phase, None


class StepReporter(TrainerCallback):
    """Prints `{"progress": {"step", "max_steps", "loss", "phase"}}` after each optimizer step.

    The phase is "sft", or "dpo" for the DPO stage that follows it (its steps count anew).
    """

    def __init__(self) -> None:
        self.loss: float | None = None
        self.phase = "sft"

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
        if state.is_world_process_zero:
            line = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "loss": self.loss,
                "phase": self.phase,
            }
            _emit({PROGRESS_KEY: line})
