"""The evolution daemon: startup → a loop of rounds → shutdown.

One round is one LangGraph thread (`round-000123`) checkpointed to
`checkpoints.db` with `durability="sync"`. The graph is compiled to pause before
every node, so the daemon regains control at each step boundary. On start an
unfinished round is resumed with input `None` before any new round begins.

A stop request (SIGTERM, Ctrl-C, `evoinstruct stop`'s stop file, or the end of
`--max-seconds`) takes effect at once, whatever the daemon waits on: each step
(and the model check before a round) runs as a task the daemon watches. The step
in flight gets `stop_grace_s` to finish and reach its checkpoint; after that it
is cancelled, with its model calls in flight: an in-process model's thread stops
at its next token (models.cancel). Work that can stop cleanly hears of the
request at once (`Deps.stopping`): a training run checkpoints within a
micro-batch and exits, and its node raises Interrupted. A cancelled node leaves its checkpoint where it
was, before the node: the stage drivers write each batch in one transaction
after its calls, so the batch in flight is not written, and the next start runs
the node again (what its earlier batches finished is marked done, and its
finished calls are in the response cache). While a step runs the heartbeat is
renewed every `HEARTBEAT_S`, so `status` tells a daemon waiting on a slow server
from a dead one.

Each start of a round is recorded with the config it runs with (store.starts),
and the steps it finished; a resumed start with other settings says so.

A step that raises is recorded on its round (step, attempts in a row, error) and
the exception ends the process with one plain line. A step that has failed
`loop.max_step_failures` starts in a row is not tried again: the next start
closes its round as failed, keeps what earlier steps accepted, and goes on with
a new round, so no crash loop ever needs a hand-deleted checkpoints.db.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from evoinstruct.graph.daemon.liveness import with_liveness
from evoinstruct.graph.project import Project
from evoinstruct.graph.round.deps import Deps
from evoinstruct.graph.round.threads import run_config, thread_id
from evoinstruct.store.errors import EvoError, Interrupted, ProjectError
from evoinstruct.store.stages import Stage

ProgressSink = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")

# How often a running step renews the heartbeat, how soon a stop file is noticed, and how
# often the models' activity (calls, tokens, tokens/s) goes to the live view.
HEARTBEAT_S = 5.0
STOP_POLL_S = 0.2
# Steps a stop cancels without a grace: the suite's answers are kept as they come (the
# response cache), and no evaluation of hundreds of prompts ends within seconds anyway.
NO_GRACE_STEPS = frozenset({Stage.EVALUATE})
ACTIVITY_S = 2.0
# The roles a round's pipeline calls: their models are checked (HTTP) and loaded (in-process)
# before a round starts.
PIPELINE_ROLES = ("generator", "evolver", "responder", "critic", "rewriter")
# Settings the plan step reads: a resumed round whose plan is made keeps it.
PLAN_KEYS = {"loop.evolve_per_round", "loop.max_depth"}


@dataclass
class DaemonOptions:
    rounds: int | None = 1
    forever: bool = False
    max_seconds: float | None = None
    # After a stop request, how long the step in flight may go on before it is cancelled:
    # long enough for a batch about to finish, short enough that SIGTERM stops in seconds.
    stop_grace_s: float = 3.0
    # When `max_seconds` started counting, on the deps' clock (`run` passes when it was
    # invoked, so loading libraries counts too); None: when the daemon is created.
    started_at: float | None = None


@dataclass
class DaemonResult:
    rounds_run: list[int] = field(default_factory=list)
    resumed: int | None = None
    stopped_by_signal: bool = False  # SIGTERM, Ctrl-C or `evoinstruct stop`
    stopped_by_time: bool = False  # --max-seconds ran out before the rounds asked for
    closed_as_failed: int | None = None  # the unfinished round this start gave up on


class RoundFailed(EvoError):
    """A step of a round raised, or a round was given up: one plain line for the CLI (the
    type, message and traceback of the cause are kept on the round)."""


def _step_of(snapshot: Any, payload: dict[str, Any] | None) -> str:
    """What the next astream call runs: the paused node(s), or "start" for a round's input."""
    if payload is not None or not snapshot.next:
        return "start"
    return ",".join(snapshot.next)


class StopFlag:
    """Set by a signal or a stop file; a second Ctrl-C forces the exit."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.requested = False
        self.signals = 0

    def request(self, *_: object) -> None:
        self.signals += 1
        self.requested = True
        if self.signals >= 2:
            # The user asked twice: leave now, SQLite transactions keep the pool whole; no
            # trainer or launched worker may train on behind the daemon.
            from evoinstruct.graph.round.training import kill_running_trainers

            kill_running_trainers()
            os._exit(130)

    def is_set(self) -> bool:
        if not self.requested and self.project.stop_path.exists():
            self.requested = True
        return self.requested


class Stopped(Exception):
    """A stop request cancelled the work in flight (raised by `Daemon._stoppable`)."""


class Daemon:
    def __init__(
        self,
        project: Project,
        deps: Deps,
        options: DaemonOptions,
        progress: ProgressSink | None = None,
        preflight: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.preflight = preflight
        self.project = project
        self.deps = deps
        self.options = options
        self.progress = progress or (lambda kind, event: None)
        self.stop = StopFlag(project)
        self.started = options.started_at if options.started_at is not None else deps.clock()
        self._stage = "starting"
        self._round: int | None = None
        self._models_loaded = False

    # --- lifecycle -----------------------------------------------------------------
    async def run(self) -> DaemonResult:
        lock = FileLock(str(self.project.lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            info = with_liveness(self.deps.store.daemon_info()) or {}
            # A heartbeat of a daemon that is gone names a pid that no longer runs.
            pid = info["pid"] if info.get("running") else "not known yet: it is starting"
            raise ProjectError(
                f"another daemon is already running on this project (pid {pid}); "
                "stop it with `evoinstruct stop`",
                file=str(self.project.root),
            ) from None
        # The holder of the lock says so at once, so a second daemon names the right pid.
        self._beat(state="starting")
        self.project.stop_path.unlink(missing_ok=True)
        self.deps.stopping.clear()  # a stop of an earlier run on these deps is not this one's
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.request)
        try:
            return await self._run_locked()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self._beat(state="stopped")
            self.deps.store.checkpoint_wal()
            lock.release()

    async def _run_locked(self) -> DaemonResult:
        from evoinstruct.graph.round.build import build_graph
        from evoinstruct.graph.round.checkpoints import open_checkpointer

        result = DaemonResult()
        async with open_checkpointer(self.project.checkpoints_path) as saver:
            graph = build_graph().compile(checkpointer=saver, interrupt_before="*")
            self._beat()
            try:
                await self._rounds(graph, saver, result)
            except Stopped:
                # The model check (or a step) in flight was cancelled; nothing of it is written.
                self._note_stop(result, cut_short=True)
                return result
        self._note_stop(result, cut_short=self._rounds_left(result))
        gave_up = result.closed_as_failed
        if gave_up is not None and not result.rounds_run and not result.stopped_by_signal:
            # Nothing ran after the give-up (--rounds used up, or out of time): a plain
            # exit 1 tells a script that this run did not succeed.
            reason = (self.deps.store.round(gave_up) or {}).get("counts", {}).get("failed")
            raise RoundFailed(f"round {gave_up} closed as failed ({reason}); no new round was run")
        return result

    async def _rounds(self, graph: Any, saver: Any, result: DaemonResult) -> None:
        """Resume the unfinished round, then run new ones while there are more to run."""
        last = self.deps.store.last_round()
        # A round closed as failed keeps its checkpoint (for `inspect checkpoints`) but is done.
        if last is not None and last["phase"] != "failed":
            snapshot = await graph.aget_state(run_config(last["number"]))
            unfinished = bool(snapshot.next) or not last.get("finished_at")
            if unfinished and self._give_up(last["number"], _step_of(snapshot, None)):
                result.closed_as_failed = last["number"]
            elif unfinished:
                await self._check_models()
                result.resumed = last["number"]
                self.progress("resume", {"round": last["number"], "next": list(snapshot.next)})
                done = await self._drive(
                    graph,
                    last["number"],
                    None if snapshot.next else self._initial(last["number"]),
                )
                if not done:
                    self._note_stop(result, cut_short=True)
                    return
                result.rounds_run.append(last["number"])
                await self._prune(saver, last["number"])
        while self._more_rounds(result):
            await self._check_models()
            number = (self.deps.store.last_round() or {"number": 0})["number"] + 1
            self.deps.store.start_round(
                number, self.deps.config.model_dump(mode="json"), self._active_version()
            )
            if not await self._drive(graph, number, self._initial(number)):
                return
            result.rounds_run.append(number)
            await self._prune(saver, number)

    def _give_up(self, number: int, step: str) -> bool:
        """Close the round as failed when its next step failed too many starts in a row."""
        failure = self.deps.store.step_failure(number)
        limit = self.deps.config.loop.max_step_failures
        if not failure or failure.get("step") != step or failure.get("attempts", 0) < limit:
            return False
        reason = f"{step} failed {failure['attempts']} starts in a row: {failure.get('error')}"
        self.deps.store.finish_round(number, {"failed": reason}, phase="failed")
        self.progress("note", {"text": f"round {number} closed as failed: {reason}"})
        return True

    def _step_failed(self, number: int, step: str, exc: Exception) -> RoundFailed | None:
        """Count the failure on the round (the process is about to die of it); the error to
        raise instead, or None to raise `exc` itself."""
        from evoinstruct.store.errors import describe_error

        error = describe_error(exc)
        trace = "".join(traceback.format_exception(exc))[-4000:]
        attempts = self.deps.store.record_step_failure(number, step, error, trace)
        limit = self.deps.config.loop.max_step_failures
        then = (
            f"the next start closes round {number} as failed and goes on"
            if attempts >= limit
            else f"`evoinstruct run` tries it again ({attempts} of {limit} failures in a row)"
        )
        if isinstance(exc, EvoError):
            # Already one plain line with its own exit code; say what happens next beside it.
            self.progress("note", {"text": f"round {number} failed at {step}; {then}"})
            return None
        return RoundFailed(f"round {number} failed at {step}: {error}; {then}")

    async def _check_models(self) -> None:
        """Before every round: a model that stopped answering ends the daemon with its reason,
        instead of rounds that only record failed calls; in-process models load in a worker
        thread, so the live view and a stop request are heard meanwhile. Raises Stopped on a
        stop request."""
        if self.preflight is not None:
            await self._stoppable(self.preflight(), "the model check")
        load = getattr(self.deps.models, "load", None)
        if load is not None and not self._models_loaded:
            self._stage = "loading models"
            self.progress("note", {"text": "loading the models the round uses"})
            await self._stoppable(asyncio.to_thread(load, PIPELINE_ROLES), "loading the models")
            self._models_loaded = True

    async def _stoppable(self, work: Awaitable[T], what: str, *, grace_first: bool = True) -> T:
        """Await `work` as a task, renewing the heartbeat and reporting model activity; on a
        stop request (or the time limit) give it `stop_grace_s` to finish (unless not
        `grace_first`), then cancel it and raise Stopped. Work that stops early on its own
        (Interrupted) raises Stopped too."""
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        grace = self.options.stop_grace_s
        try:
            next_beat = next_activity = loop.time()
            next_beat += HEARTBEAT_S
            while not self._stop_due():
                # Polled: a stop file has no event to wait on, and STOP_POLL_S is cheap.
                done, _ = await asyncio.wait({task}, timeout=STOP_POLL_S)
                if done:
                    return self._result(task, what)
                if loop.time() >= next_beat:
                    self._beat()
                    next_beat = loop.time() + HEARTBEAT_S
                if loop.time() >= next_activity:
                    self._report_activity()
                    next_activity = loop.time() + ACTIVITY_S
            # Work that can stop cleanly at once (a training run) hears of it now.
            self.deps.stopping.set()
            why = "stop requested" if self.stop.is_set() else "time limit (--max-seconds) reached"
            if grace_first:
                self.progress("note", {"text": f"{why}: giving {what} up to {grace:g} s to finish"})
                done, _ = await asyncio.wait({task}, timeout=grace)
                if done:
                    return self._result(task, what)
            else:
                self.progress("note", {"text": f"{why}: {what} keeps what it has answered"})
            self.progress("note", {"text": f"cancelling {what} and its model calls in flight"})
        finally:
            if not task.done():
                task.cancel()
                # Cancelled code cleans up at its next await; a local model's generate thread
                # stops at its next token (models.cancel), a trainer at its next
                # micro-batch; what does not within the grace is not waited for.
                await asyncio.wait({task}, timeout=grace)
        raise Stopped(what)

    def _result(self, task: asyncio.Future[T], what: str) -> T:
        try:
            return task.result()
        except Interrupted:
            raise Stopped(what) from None

    def _note_stop(self, result: DaemonResult, *, cut_short: bool) -> None:
        """Why the daemon stopped early, if it did: a request, or the time limit (which counts
        only when it cut a round short or left asked-for rounds unrun)."""
        if self.stop.is_set():
            result.stopped_by_signal = True
        elif cut_short and self._out_of_time():
            result.stopped_by_time = True

    def _stop_due(self) -> bool:
        return self.stop.is_set() or self._out_of_time()

    def _report_activity(self) -> None:
        """Calls in flight and done, tokens and tokens/s of the models, every ACTIVITY_S."""
        activity = getattr(self.deps.models, "activity", None)
        if activity is not None:
            event = {"round": self._round, "stage": self._stage}
            self.progress("activity", {**event, **activity.snapshot().to_dict()})

    def _out_of_time(self) -> bool:
        limit = self.options.max_seconds
        return limit is not None and self.deps.clock() - self.started >= limit

    def _more_rounds(self, result: DaemonResult) -> bool:
        if self.stop.is_set() or self._out_of_time():
            return False
        return self._rounds_left(result)

    def _rounds_left(self, result: DaemonResult) -> bool:
        if self.options.forever:
            return True
        fresh = len(result.rounds_run) - (1 if result.resumed is not None else 0)
        return fresh < (self.options.rounds or 0)

    def _active_version(self) -> str | None:
        active = self.deps.store.active_model()
        return active["version"] if active else None

    def _initial(self, number: int) -> dict[str, Any]:
        return {"round": number, "model_version": self._active_version(), "counts": {}, "notes": []}

    # --- one round -------------------------------------------------------------------
    async def _drive(self, graph: Any, number: int, first_input: dict[str, Any] | None) -> bool:
        """Run a round step by step; False when a stop request ended it early."""
        config = run_config(number)
        self._round = number
        # Sampled calls of this round get their own cache entries; a resume finds them again.
        self.deps.models.set_cache_namespace(thread_id(number))
        payload: dict[str, Any] | None = first_input
        snapshot = await graph.aget_state(config)
        step = _step_of(snapshot, payload)
        self._stage = step if step != "start" else Stage.PLAN
        start = self._record_start(number, step, snapshot)

        async def one_step(payload: dict[str, Any] | None) -> None:
            async for mode, chunk in graph.astream(
                payload,
                config,
                context=self.deps,
                stream_mode=["updates", "custom"],
                durability="sync",
            ):
                self._on_chunk(number, mode, chunk)

        while True:
            try:
                await self._stoppable(
                    one_step(payload), f"step {step}", grace_first=step not in NO_GRACE_STEPS
                )
            except Stopped:
                # Cancelled mid-node: LangGraph keeps the checkpoint before the node, which
                # the next start runs again.
                snapshot = await graph.aget_state(config)
                self.progress("stopping", {"round": number, "next": list(snapshot.next) or [step]})
                return False
            except Exception as exc:
                plain = self._step_failed(number, step, exc)
                if plain is None:
                    raise
                raise plain from exc
            self.deps.store.clear_step_failure(number)
            snapshot = await graph.aget_state(config)
            if step != "start":
                self.deps.store.record_start_step(number, start, step)
                # The finished steps' calls and tokens, for `status` before the round ends.
                self.deps.store.record_stage_counts(number, snapshot.values.get("counts", {}))
            if not snapshot.next:
                self.progress(
                    "round_done", {"round": number, "counts": snapshot.values.get("counts", {})}
                )
                return True
            self._stage = step = _step_of(snapshot, None)
            self._beat()
            if self.stop.is_set() or self._out_of_time():
                # Stop between steps: the round resumes from this checkpoint next time.
                self.progress("stopping", {"round": number, "next": list(snapshot.next)})
                return False
            payload = None

    def _record_start(self, number: int, step: str, snapshot: Any) -> int:
        """Record this start of the round with the config it runs with; a resumed round's
        live view hears what changed since its last start, and what it keeps from it."""
        from evoinstruct.store.starts import describe_start

        config = self.deps.config.model_dump(mode="json")
        start = self.deps.store.record_round_start(number, config, step, self._active_version())
        changes = self.deps.store.round_starts(number)[-1]["changes"] if start > 1 else {}
        if changes:
            described = describe_start({"start": start, "step": step, "changes": changes})
            self.progress("note", {"text": f"round {number}, {described}"})
        planned = (snapshot.values.get("counts") or {}).get(Stage.PLAN, {}).get("parents")
        if planned is not None and step not in ("start", Stage.PLAN) and PLAN_KEYS & set(changes):
            # The plan chose this round's parents; changing how many cannot undo it.
            self.progress(
                "note",
                {
                    "text": f"round {number} keeps the plan an earlier start made ({planned} "
                    f"parents to evolve); {', '.join(sorted(PLAN_KEYS & set(changes)))} "
                    "applies from the next round"
                },
            )
        return start

    def _on_chunk(self, number: int, mode: str, chunk: Any) -> None:
        if mode == "custom" and isinstance(chunk, dict):
            self._stage = chunk.get("stage", self._stage)
            self.progress("event", {"round": number, **chunk})
        elif mode == "updates" and isinstance(chunk, dict):
            for node, update in chunk.items():
                if node.startswith("__"):
                    continue
                self.progress("node_done", {"round": number, "node": node, "update": update or {}})
        self._beat()

    def _beat(self, state: str = "running") -> None:
        activity = getattr(self.deps.models, "activity", None)
        self.deps.store.heartbeat(
            pid=os.getpid(),
            round=self._round,
            stage=self._stage,
            state=state,
            activity=activity.snapshot().to_dict() if activity is not None else None,
        )

    async def _prune(self, saver: Any, finished: int) -> None:
        """Drop checkpoints of rounds older than the configured number kept."""
        keep = self.deps.config.loop.keep_checkpoints
        for old in range(max(1, finished - keep - 50), finished - keep + 1):
            await saver.adelete_thread(thread_id(old))
        conn = sqlite3.connect(str(self.project.checkpoints_path))
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
