"""The live view of a run: a rich progress bar per stage on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from evoinstruct.store.stages import Stage


def quiet_libraries() -> None:
    """Library progress bars, load reports and notices would bury the live view."""
    import warnings

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    # "Already found a peft_config attribute": loading a second adapter is what hand-off does.
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


# Without a terminal (a log file, a pipe), a step in progress writes a line this often: its
# progress so far and what the models are doing. Activity arrives every 2 s, so lines are at
# most 10 s apart.
PLAIN_EVERY_S = 8.0


def activity_text(event: dict[str, Any]) -> str:
    """What the models are doing: calls in flight and done, tokens and tokens/s."""
    parts = [f"{event.get('in_flight', 0)} calls in flight", f"{event.get('done', 0)} done"]
    if event.get("cached"):
        parts.append(f"{event['cached']} from the cache")
    if event.get("failed"):
        parts.append(f"{event['failed']} failed")
    tokens = f"{event.get('tokens', 0):,} tokens"
    rate = event.get("tokens_per_s")
    if rate is not None:
        tokens += f" ({rate:.1f}/s)" if rate < 10 else f" ({rate:.0f}/s)"
    return "models: " + ", ".join(parts) + f"; {tokens}"


def step_name(event: dict[str, Any]) -> str:
    """The step an event is about: its stage, and the model when one is scored outside a round."""
    stage = str(event.get("stage", "?"))
    return f"{stage} ({event['model']})" if event.get("model") else stage


def stage_text(event: dict[str, Any]) -> str:
    """A step's progress as one log line: `round 2 respond: 16/64 kept 5; ...`."""
    number = event.get("round")
    where = step_name(event) if number is None else f"round {number} {step_name(event)}"
    if event.get("running"):
        return f"{where}: running"
    done, total = event.get("done", 0), event.get("total")
    return (
        f"{where}: {done}/{'?' if total is None else total} {ProgressView.summary(event)}".rstrip()
    )


class ProgressView:
    """Receives daemon events; `live` follows whether the output is a terminal."""

    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.console = Console(file=self.stream, force_terminal=self.live or None)
        self.progress: Progress | None = None
        self.tasks: dict[tuple[int | None, str], Any] = {}
        # (round, stage) -> the stage's latest summary, kept after its bar is gone
        self.last_summary: dict[tuple[int | None, str], str] = {}
        self.calls = 0
        self.tokens = 0
        self.started = clock()
        self.activity_task: Any = None
        self.last_event: dict[str, Any] = {}  # the latest stage event, for plain progress lines
        self.last_plain = clock()

    def __enter__(self) -> ProgressView:
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]round {task.fields[round]}[/] {task.description:<10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[summary]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "event":
            self._stage_event(event)
        elif kind == "node_done":
            self._node_done(event)
        elif kind == "round_done":
            self._drop_round(event["round"])
            accepted = event.get("counts", {}).get(Stage.SELECT, {}).get("accepted", 0)
            self._line(self.round_line(event["round"], accepted))
        elif kind == "activity":
            self._activity(event)
        elif kind == "resume":
            self._line(
                f"resuming round {event['round']} at {', '.join(event['next']) or 'its start'}"
            )
        elif kind == "note":
            self._line(event["text"])
        elif kind == "stopping":
            self._line(
                f"stopping before {', '.join(event['next'])}; `evoinstruct run` resumes round {event['round']} there"
            )
        else:
            self._line(f"{kind}: {event}")

    @staticmethod
    def summary(event: dict[str, Any]) -> str:
        parts = []
        if "accepted" in event:
            parts.append(f"kept {event['accepted']}")
        rejected = Counter(event.get("rejected", {}))
        if rejected:
            top = ", ".join(f"{reason} {n}" for reason, n in rejected.most_common(3))
            parts.append(f"dropped {sum(rejected.values())} ({top})")
        if event.get("loss") is not None:
            parts.append(f"loss {event['loss']:.3f}")
        if event.get("calls"):
            parts.append(f"{event['calls']} calls")
        if event.get("tokens"):
            parts.append(f"{event['tokens']} tok")
        if event.get("schedule"):
            parts.append(event["schedule"])
        return "; ".join(parts)

    def round_line(self, round: int, accepted: int) -> str:
        """What a finished round leaves behind: every stage's counts and top drop reasons."""
        stages = "; ".join(
            f"{stage} {summary}" if summary else stage
            for (r, stage), summary in self.last_summary.items()
            if r == round
        )
        elapsed = self.clock() - self.started
        return (
            f"round {round} finished: {accepted} accepted ({stages or 'nothing to do'}); "
            f"{self.calls} model calls, {self.tokens} tokens so far ({elapsed:.0f} s)"
        )

    def _stage_event(self, event: dict[str, Any]) -> None:
        # Models scored outside a round (round None) get a bar each, named for the model.
        key = (event.get("round", 0), step_name(event))
        total = event.get("total")
        done = event.get("done", 0)
        self.calls += event.get("new_calls", 0)
        self.tokens += event.get("new_tokens", 0)
        self.last_summary[key] = self.summary(event)
        self.last_event = event
        if self.progress is not None:
            if key not in self.tasks:
                number = "-" if key[0] is None else key[0]
                self.tasks[key] = self.progress.add_task(
                    key[1], total=total, round=number, summary=""
                )
            self.progress.update(
                self.tasks[key], completed=done, total=total, summary=self.summary(event)
            )
        elif event.get("final"):
            self._line(stage_text(event))
            self.last_plain = self.clock()
        elif self.clock() - self.last_plain >= PLAIN_EVERY_S:
            self._plain(event)

    def _activity(self, event: dict[str, Any]) -> None:
        """The models' calls and tokens: a row of its own on a terminal, else a line with the
        step's progress every PLAIN_EVERY_S seconds."""
        if self.progress is not None:
            text = activity_text(event)
            if self.activity_task is None:
                self.activity_task = self.progress.add_task(
                    "models", total=None, round=event.get("round") or "-", summary=text
                )
            self.progress.update(self.activity_task, summary=text, round=event.get("round") or "-")
        elif self.clock() - self.last_plain >= PLAIN_EVERY_S:
            stage = self.last_event
            if stage.get("stage") != event.get("stage") or stage.get("round") != event.get("round"):
                # The step running now has reported nothing yet: name it, not the one before.
                stage = {"round": event.get("round"), "stage": event.get("stage"), "running": True}
            self._plain(stage, event)

    def _plain(self, stage: dict[str, Any], activity: dict[str, Any] | None = None) -> None:
        parts = [stage_text(stage)] if stage else []
        if activity is not None:
            parts.append(activity_text(activity))
        if parts:
            self._line("; ".join(parts))
            self.last_plain = self.clock()

    def _node_done(self, event: dict[str, Any]) -> None:
        """A finished node completes its bars; a sub-stage of unknown size (eliminate, inside
        respond) is complete at what it reached, instead of showing `n/?` forever."""
        if self.progress is None:
            return
        for task in self.progress.tasks:
            key = next((k for k, tid in self.tasks.items() if tid == task.id), None)
            if key is None or key[0] != event["round"] or task.finished:
                continue
            if key[1] == event["node"] or task.total is None:
                total = task.completed if task.total is None else task.total
                self.progress.update(task.id, completed=total, total=total)

    def _drop_round(self, round: int) -> None:
        """A finished round leaves one summary line instead of a bar per stage."""
        if self.progress is None:
            return
        for key in [k for k in self.tasks if k[0] == round]:
            self.progress.remove_task(self.tasks.pop(key))

    def _line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()
