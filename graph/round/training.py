"""The graph's training branch: train in a process of its own, evaluate, promote, hand off.

Training runs as `python -m evoinstruct.trainer train`, or that same entry under
`accelerate launch` when `[trainer.launch]` asks for several processes or an accelerate
config (FSDP, DeepSpeed), so that a crash of the daemon or the trainer leaves the
other's state intact: the trainer resumes from its last checkpoint and registers a
version only when it is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from evoinstruct.store.errors import EvoError, Interrupted
from evoinstruct.store.stages import Stage
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.evaluate import Evaluation, evaluate_version, uses_suite
from evoinstruct.trainer.launch import trainer_command
from evoinstruct.trainer.promote import hand_off
from evoinstruct.trainer.targets import teacher_model
from evoinstruct.trainer.train import training_due
from evoinstruct.trainer.weak_to_strong import weak_to_strong_due
from evoinstruct.trainer.weak_to_strong_config import WeakToStrongConfig

if TYPE_CHECKING:
    from evoinstruct.models.factory import ModelSet
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.store import Store

# How often a running training looks for a stop request, and how long a trainer told to stop
# may take to checkpoint and exit before it is killed (a micro-batch and a save, on a CPU).
STOP_POLL_S = 0.2
TRAINER_STOP_S = 8.0


# The trainers running now (pid -> process): a second Ctrl-C ends them with the daemon.
_RUNNING: dict[int, psutil.Process] = {}


def kill_running_trainers() -> None:
    """SIGKILL every trainer this process started, with all it started (the daemon is
    leaving at once)."""
    for trainer in list(_RUNNING.values()):
        _signal_all(_process_tree(trainer), signal.SIGKILL)


def _die_with_parent() -> None:
    """Linux: the trainer gets SIGTERM if the daemon dies, so a restarted daemon can resume it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class TrainerSteps:
    """What the train → evaluate → promote nodes (or the weak_to_strong node) call."""

    config: TrainerConfig
    project_root: Path
    python: str = sys.executable
    weak_to_strong: WeakToStrongConfig = field(default_factory=WeakToStrongConfig)

    def due(self, store: Any, round_number: int) -> tuple[bool, str]:
        if not self.config.base_model:
            return False, "trainer.base_model is not set"
        if self.weak_to_strong.enabled:
            return weak_to_strong_due(store, self.config, self.weak_to_strong, round_number)
        return training_due(store, self.config, round_number)

    async def train(
        self, *, fresh: bool = False, stopping: threading.Event | None = None
    ) -> dict[str, Any]:
        """Run the trainer process(es) to completion; returns the main process's JSON summary.

        `fresh` discards a killed run instead of resuming it. Once `stopping` is set (a stop
        request) the trainer gets SIGTERM at once, checkpoints within a micro-batch and
        exits; this raises Interrupted, and the next start resumes from that checkpoint.
        """
        return await self._run_trainer(("train",), "version", fresh=fresh, stopping=stopping)

    async def train_weak_to_strong(
        self, name: str, *, stopping: threading.Event | None = None
    ) -> dict[str, Any]:
        """Train the two students of weak-to-strong experiment `name` in the trainer's
        process(es), as `train` does a version, stopping as it does."""
        return await self._run_trainer(
            ("weak-to-strong", "--experiment", name), "experiment", stopping=stopping
        )

    async def _run_trainer(
        self,
        subcommand: tuple[str, ...],
        summary_key: str,
        *,
        fresh: bool = False,
        stopping: threading.Event | None = None,
    ) -> dict[str, Any]:
        from evoinstruct.trainer.progress import ERROR_KEY, PROGRESS_KEY, STOPPED_EXIT, STOPPED_KEY

        config_file = self.project_root / "models" / "resolved_trainer_config.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(self.config.model_dump_json(indent=2), encoding="utf-8")
        command = trainer_command(
            self.python,
            self.config.launch,
            self.project_root,
            config_file,
            fresh=fresh,
            command=subcommand,
        )
        process = await asyncio.create_subprocess_exec(
            *command,
            # What -P does for the first process, for the workers accelerate starts.
            env={**os.environ, "PYTHONSAFEPATH": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        assert process.stdout is not None and process.stderr is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            _RUNNING[process.pid] = psutil.Process(process.pid)
        lines: list[str] = []
        failures: list[dict[str, Any]] = []
        stopped: list[dict[str, Any]] = []

        async def follow_steps() -> None:
            # Step lines go to the live view as they come; failures are kept for the reason.
            writer = _stream_writer()
            async for raw in process.stdout:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                step = _reported(line, PROGRESS_KEY)
                failure = _reported(line, ERROR_KEY)
                if failure is not None:
                    failures.append(failure)
                elif (stop := _reported(line, STOPPED_KEY)) is not None:
                    stopped.append(stop)
                elif step is None:
                    lines.append(line)
                elif writer is not None:
                    writer(step_event(step))

        async def pass_on_a_stop() -> None:
            while stopping is not None and process.returncode is None:
                if stopping.is_set():
                    _signal(process, signal.SIGTERM)
                    return
                await asyncio.sleep(STOP_POLL_S)

        watcher = asyncio.ensure_future(pass_on_a_stop())
        try:
            # stderr is drained at the same time, or a chatty trainer would block on a full pipe.
            _, err = await asyncio.gather(follow_steps(), process.stderr.read())
            await process.wait()
        except BaseException:
            # A cancelled node (a stop past its grace time): the trainer checkpoints and exits
            # on SIGTERM, as when the daemon dies; one that does not is killed, and so is
            # every process under it: under accelerate, the workers too.
            await _stop_trainer(process)
            raise
        finally:
            watcher.cancel()
            _RUNNING.pop(process.pid, None)
        if process.returncode == STOPPED_EXIT or stopped:
            reason = (stopped or [{}])[0].get("message") or "training stopped on request"
            raise Interrupted(reason)
        if process.returncode != 0:
            raise EvoError(
                f"training failed (exit {process.returncode}): {_failure_reason(failures, err)}"
            )
        return _summary_of(lines, summary_key)

    async def evaluate(
        self,
        store: Store,
        version: str,
        models: ModelSet,
        prompts: PromptLibrary,
        progress: Any = None,
    ) -> Evaluation:
        """The gate's evidence for `version` against the incumbent.

        When the gate uses the held-out suite, or the pairwise judge is on, a fresh
        student model serves the suite runs (the incumbent's adapter, or none before
        the first promotion, then the new version's) and stays on the new version
        for the judge; the teacher's suite score comes along for reference.
        """
        cfg = self.config
        suite = uses_suite(store, cfg)
        if not (suite or cfg.pairwise.enabled):
            return await evaluate_version(store, version, cfg, progress=progress)
        # Loading a model takes seconds: in a thread, so heartbeats and stops go on meanwhile.
        # Cached: a stop mid-suite keeps every answer made so far (greedy, keyed by the
        # adapter's version), and the resumed evaluation asks only for the rest.
        student = await asyncio.to_thread(
            functools.partial(models.fresh, models.roles.student, cached=True)
        )
        try:
            await hand_off(student, store.model_version(version))
            pairwise = cfg.pairwise.enabled
            return await evaluate_version(
                store,
                version,
                cfg,
                judge=models.for_role("critic") if pairwise else None,
                candidate=student,
                incumbent=models.for_role("generator") if pairwise else None,
                library=prompts if pairwise else None,
                student=student if suite else None,
                teacher=teacher_model(models) if suite and cfg.gate.teacher_reference else None,
                progress=progress,
            )
        finally:
            await student.aclose()

    async def promote(self, store: Store, models: ModelSet, version: str, reason: str) -> None:
        """Make the student model serve the version, then record the promotion.

        Handing off first means a version the student cannot serve (full weights,
        prefix tuning on vLLM...) is never recorded as the active generator.
        """
        student = models.get(models.roles.student)
        await hand_off(student, store.model_version(version))
        store.set_promoted(version, reason)
        models.use_student(student)


async def activate_student(store: Store, models: ModelSet) -> str | None:
    """Load the active version into the configured student model (at startup and on promotion)."""
    row = store.active_model()
    if row is None:
        models.use_student(None)
        return None
    student = models.get(models.roles.student)
    version = await hand_off(student, row)
    models.use_student(student)
    return version


def step_event(step: dict[str, Any]) -> dict[str, Any]:
    """A trainer's step line as the live view's progress event. The DPO stage after SFT
    counts its steps anew, so it gets a bar of its own ("train dpo")."""
    phase = step.get("phase", "sft")
    return {
        "stage": Stage.TRAIN if phase == "sft" else f"{Stage.TRAIN} {phase}",
        "done": step["step"],
        "total": step["max_steps"],
        "loss": step.get("loss"),
    }


async def _stop_trainer(process: Any) -> None:
    """SIGTERM, up to TRAINER_STOP_S for the checkpoint and exit, then SIGKILL to what is left.

    The processes are those under the trainer when the stop began: a launcher's workers
    (torch's elastic agent starts each in a session of its own) are no longer its children
    once it has exited, and must not train on as orphans.
    """
    tree = _process_tree(_RUNNING.get(process.pid))
    try:
        if process.returncode is None:
            _signal_all(tree, signal.SIGTERM)
            deadline = time.monotonic() + TRAINER_STOP_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), TRAINER_STOP_S)
            left = max(0.0, deadline - time.monotonic())
            await asyncio.to_thread(psutil.wait_procs, tree, timeout=left)
    finally:
        # Also when this wait is itself cancelled (the daemon is leaving).
        _signal_all(tree, signal.SIGKILL)


def _process_tree(trainer: psutil.Process | None) -> list[psutil.Process]:
    if trainer is None:
        return []
    try:
        return [trainer, *trainer.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        # psutil checks the pid still names the process it found, not a reused one.
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.send_signal(signum)


def _signal(process: Any, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)


def _stream_writer() -> Any:
    """The running node's stream writer (None outside a graph run: `evoinstruct train`)."""
    from langgraph.config import get_stream_writer

    try:
        return get_stream_writer()
    except RuntimeError:
        return None


def _reported(line: str, kind: str) -> dict[str, Any] | None:
    """The payload of a trainer line `{kind: {...}}` (see evoinstruct.trainer.progress)."""
    try:
        found = json.loads(line)
    except ValueError:
        return None
    value = found.get(kind) if isinstance(found, dict) and len(found) == 1 else None
    return value if isinstance(value, dict) else None


def _summary_of(lines: list[str], key: str = "version") -> dict[str, Any]:
    """The main process's closing summary: its last line with `key` (a version, or an
    experiment). A launcher or another process may print after it, so the last line alone
    is not enough."""
    for line in reversed(lines):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict) and key in found:
            return found
    raise EvoError("training finished without printing its summary")


def _failure_reason(failures: list[dict[str, Any]], stderr: bytes) -> str:
    """The first process to fail says why; the others mostly fail because it did. Without
    such a line (a process killed outright), the end of stderr is all there is."""
    if failures:
        first = failures[0]
        return f"{first.get('message')} ({first.get('type')} on rank {first.get('rank')})"
    return " ".join(stderr.decode("utf-8", "replace").strip().splitlines()[-3:])
