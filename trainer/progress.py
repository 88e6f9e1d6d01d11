"""Step progress of a training run, as JSON lines on stdout for the daemon's live view.

The trainer runs in a process of its own; the daemon reads these lines while it waits and
shows step, total steps and the last logged loss. The run's closing summary stays the last
line, so readers that only want the result take the last line as before.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from transformers import TrainerCallback

PROGRESS_KEY = "progress"


class StepReporter(TrainerCallback):
    """Prints `{"progress": {"step", "max_steps", "loss"}}` after each optimizer step."""

    def __init__(self) -> None:
        self.loss: float | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
        if state.is_world_process_zero:
            line = {"step": state.global_step, "max_steps": state.max_steps, "loss": self.loss}
            sys.stdout.write(json.dumps({PROGRESS_KEY: line}) + "\n")
            sys.stdout.flush()
