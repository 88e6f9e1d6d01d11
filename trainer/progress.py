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
import threading
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

PROGRESS_KEY = "progress"
ERROR_KEY = "error"
STOPPED_KEY = "stopped"
# A run stopped on request (SIGTERM, SIGINT) exits with this, after its checkpoint: it is not
# a failure, and the next start resumes it (EX_TEMPFAIL: "try again later").
STOPPED_EXIT = 75


def _emit(value: dict[str, Any]) -> None:
    # One write per line: processes that share the pipe never split each other's lines.
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def report_stopped(message: str, *, rank: int) -> None:
    """`{"stopped": {"message", "rank"}}`: the run stopped on request after its checkpoint."""
    _emit({STOPPED_KEY: {"message": message, "rank": rank}})


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

    The phase is "sft", "dpo" for the DPO stage that follows it (its steps count anew), or
    a weak-to-strong experiment's student (`strong_on_weak`, `ceiling`).
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


class StepSay(StepReporter):
    """Says each optimizer step as a line of text (`label: step 12/60, loss 1.234`), with the
    last logged loss and, in a DPO stage, the last reward margin: progress for builds and
    benches that print to a terminal rather than to the daemon."""

    def __init__(self, say: Callable[[str], None], label: str) -> None:
        super().__init__()
        self.say, self.label = say, label
        self.margin: float | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any):
        super().on_log(args, state, control, logs, **kw)
        if logs and "rewards/margins" in logs:
            self.margin = float(logs["rewards/margins"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
        if not state.is_world_process_zero:
            return
        phase = "" if self.phase == "sft" else f" {self.phase}"
        text = f"{self.label}{phase}: step {state.global_step}/{state.max_steps}"
        if self.loss is not None:
            text += f", loss {self.loss:.3f}"
        if self.margin is not None:
            text += f", reward margin {self.margin:.3f}"
        self.say(text)


class StopOnRequest(TrainerCallback):
    """Stops training within a micro-batch of `requested` being set (the process's SIGTERM or
    SIGINT handler sets it), saving a checkpoint of the last finished optimizer step first.

    Between optimizer steps alone would not do on a CPU, where one step of a few micro-batches
    takes longer than a stop may: the gradients of a step cut short are dropped (they changed
    no weight yet), and the resumed run does that step again.
    """

    def __init__(self, requested: threading.Event) -> None:
        self.requested = requested

    def _stop(self, state: Any, control: Any) -> Any:
        if self.requested.is_set():
            control.should_training_stop = True
            # The Trainer saves at the step's end, or at the epoch's end after a cut-short step.
            control.should_save = state.global_step > 0
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
        return self._stop(state, control)

    def on_substep_end(self, args: Any, state: Any, control: Any, **kw: Any):
        return self._stop(state, control)
