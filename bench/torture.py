"""Torture: the daemon as a real process under SIGKILLs, a faulty teacher, concurrent seed
imports and hostile input files, with the integrity of what it leaves checked at the end.

One project, built here: a loopback OpenAI-compatible teacher (the deterministic fake
teacher of the tests) and a tiny local llama student built on the spot (as `evoinstruct
demo` builds it), trained every `--train-every` rounds, so there is training to kill too.

- The teacher injects a fault into `--fault-rate` of all requests, drawn from `--faults`
  (429, 500, garbage: a 200 that is not JSON, truncated: half a body then a cut
  connection, hang: no answer for a minute, drip: headers then one byte a second). A
  faulted reply that does produce text (a hang answered late, a drip read to its end)
  carries a marker: an example holding it was written from a failed call.
- `--kills N` SIGKILLs the daemon N times at random points of its observed progress
  (the heartbeat's round and stage): half during the round's generation stages, half
  while it trains (or evaluates) the student, then restarts it, as test_daemon_crash does.
- `--imports K` runs K `seed add` processes at once while a round runs: overlapping files,
  so the store must insert every shared row exactly once.
- The malformed-input corpus (tests/hostile_inputs.py) goes through `seed add` first: each
  file must end with exit 2, one stderr line, and the pool as it was.
- `--sigterm` sends one SIGTERM while calls are in flight and times the exit.

It prints progress as it goes, then: kills, lost (accepted examples seen after a kill that
are gone or no longer accepted at the end), duplicated, orphaned, failed starts (a start
that exited non-zero on its own), calls failed after retries, examples written from failed
calls, the longest stall (no change in the store or the heartbeat's stage while a daemon
ran), the longest attempt and call the teacher saw against their deadlines, and the
integrity checks (PRAGMA integrity_check; scores and rejections pointing to missing
examples; examples whose parent is missing).

Run: .venv/bin/python bench/torture.py --kills 50 --fault-rate 0.2 \\
         --faults 429,500,garbage,truncated,hang,drip --imports 8 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoinstruct.graph.daemon.command import cli_command
from evoinstruct.store.stages import PIPELINE, TRAINING, Stage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.daemon_helpers import start_daemon  # noqa: E402
from tests.fake_teacher import server_reply  # noqa: E402
from tests.openai_server import Fault, OpenAITestServer  # noqa: E402

KEY = "sk-torture-4b9e2f7a1c"
ENV = {**os.environ, "TORTURE_KEY": KEY}
MARK = "FAULTED-REPLY"  # in every text a faulted request would answer with
HANG_S = 60.0  # a hung request answers after this long, if anyone still waits
DRIP_EVERY_S = 1.0  # a drip's seconds between bytes: below any per-read timeout
# The steps that call models: the pipeline without its bookkeeping ends.
GENERATION_STAGES = tuple(s for s in PIPELINE if s not in (Stage.PLAN, Stage.COMMIT))
TRAINING_STAGES = (Stage.TRAIN, Stage.EVALUATE)
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {text}", flush=True)


# --- the teacher -----------------------------------------------------------------------------
class Teacher(OpenAITestServer):
    """The fake teacher with random faults; it marks what a faulted request would answer and
    keeps, per request, when it arrived, when the server let go of it, and its fault."""

    def __init__(self, rate: float, kinds: list[str], seed: int) -> None:
        super().__init__(
            reply=server_reply, api_key=KEY, fault_rate=rate, fault_kinds=kinds, seed=seed
        )
        self.held: list[tuple[str, str | None, float, float]] = []  # body hash, fault, from, to

    async def _fault_response(self, request: Any, fault: Fault, body: dict[str, Any]) -> Any:
        body["_torture_fault"] = request["fault"] = fault.kind
        if fault.kind == "hang":
            fault.delay = HANG_S
        elif fault.kind == "drip":
            fault.delay = DRIP_EVERY_S
        return await super()._fault_response(request, fault, body)

    def _choice_text(self, body: dict[str, Any], index: int) -> str:
        text = super()._choice_text(body, index)
        return f"{MARK} {text}" if body.get("_torture_fault") else text

    async def _chat(self, request: Any) -> Any:
        start = time.monotonic()
        key = hashlib.sha256(await request.read()).hexdigest()[:16]  # aiohttp keeps the body
        try:
            return await super()._chat(request)
        finally:
            # Until the answer is written, or the client went away (its handler is cancelled).
            self.held.append((key, request.get("fault"), start, time.monotonic()))


# --- the project -------------------------------------------------------------------------------
def build_project(workdir: Path, url: str, args: argparse.Namespace) -> Path:
    """A project with the loopback teacher, a tiny local student and fast rounds."""
    from evoinstruct.cli.demo import _seed_texts
    from evoinstruct.graph.config_toml import render_toml
    from evoinstruct.graph.project import CONFIG_HEADER, init_project
    from evoinstruct.models.tiny import DEFAULT_CORPUS, build_tiny_llama

    corpus = [*DEFAULT_CORPUS, *_seed_texts()]
    student = build_tiny_llama(workdir / "tiny-student", corpus=corpus, seed=2, hidden_size=64)
    project = init_project(workdir / "proj")
    settings = [
        'models.teacher.backend="openai"',
        f'models.teacher.base_url="{url}"',
        'models.teacher.model="tiny"',
        'models.teacher.api_key_env="TORTURE_KEY"',
        "models.teacher.max_concurrency=4",
        f"models.teacher.timeout_s={args.timeout_s}",
        "models.teacher.max_retries=2",
        "models.teacher.backoff_initial_s=0.2",
        "models.teacher.backoff_max_s=1.0",
        f'models.student.path="{student}"',
        'models.student.device="cpu"',
        "models.student.batch_size=8",
        # The teacher keeps generating after a promotion: rounds stay fast and comparable.
        "roles.follow_student=false",
        # No diversity filter: a promoted tiny student (random weights) becomes the embedder and
        # finds everything alike; with nothing accepted, training would never be due again.
        'selector.steps=["exact_dedup", "near_dedup", "novelty", "decontaminate", "thresholds"]',
        "loop.generate_calls=3",
        "loop.evolve_per_round=4",
        "loop.batch_size=8",
        "loop.keep_checkpoints=2",
        f'trainer.base_model="{student}"',
        f"trainer.train_every={args.train_every}",
        "trainer.train_min_new=1",
        # A short training (about 20 s here) with checkpoints to resume from after a kill.
        "trainer.max_steps=12",
        "trainer.save_steps=3",
        "trainer.learning_rate=0.003",
        "trainer.batch_size=8",
        "trainer.grad_accumulation=1",
        "trainer.heldout_fraction=0.2",
        "trainer.max_length=128",
        'trainer.device="cpu"',
    ]
    if args.train_every == 0:
        settings = [s for s in settings if not s.startswith("trainer.")]
    config = project.load_config(settings)
    project.config_path.write_text(render_toml(config, CONFIG_HEADER), encoding="utf-8")
    cli(project.root, "seed", "add", str(project.root / "seeds" / "seed_tasks_en.jsonl"))
    return project.root


def cli(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cli_command(*args, "-p", str(project)),
        cwd=str(ROOT),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr[-2000:]}")
    return done


def query(project: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{project / 'pool.db'}?mode=ro", uri=True, timeout=60)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def one(project: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return query(project, sql, params)[0][0]


def heartbeat(project: Path) -> dict[str, Any] | None:
    try:
        rows = query(project, "SELECT pid, round, stage, state FROM daemon WHERE id = 1")
    except sqlite3.OperationalError:
        return None
    return dict(zip(("pid", "round", "stage", "state"), rows[0], strict=True)) if rows else None


def finished_rounds(project: Path) -> int:
    return one(project, "SELECT count(*) FROM rounds WHERE finished_at IS NOT NULL")


def unfinished(project: Path) -> bool:
    rows = query(project, "SELECT finished_at, phase FROM rounds ORDER BY number DESC LIMIT 1")
    return bool(rows) and rows[0][0] is None and rows[0][1] != "failed"


def accepted(project: Path) -> set[str]:
    return {r[0] for r in query(project, "SELECT id FROM examples WHERE status = 'accepted'")}


# --- watching the daemon ------------------------------------------------------------------------
@dataclass
class Figures:
    kills: int = 0
    kills_by_phase: Counter[str] = field(default_factory=Counter)
    starts: int = 0
    failed_starts: list[str] = field(default_factory=list)
    longest_stall_s: float = 0.0
    stall_at: str = ""
    sigterm_exit_s: list[float] = field(default_factory=list)
    imports: list[dict[str, Any]] = field(default_factory=list)
    hostile: dict[str, int] = field(default_factory=dict)
    hostile_failures: list[str] = field(default_factory=list)


class Monitor(threading.Thread):
    """Polls the store while a daemon runs: the longest time nothing changed (counts of rows
    the daemon writes, the heartbeat's round and stage; not its timestamp)."""

    def __init__(self, project: Path, figures: Figures) -> None:
        super().__init__(daemon=True)
        self.project, self.figures = project, figures
        self.process: subprocess.Popen[bytes] | None = None
        self.stop = threading.Event()

    def state(self) -> tuple[Any, ...]:
        counts = query(
            self.project,
            "SELECT (SELECT count(*) FROM examples), (SELECT count(*) FROM rejections),"
            " (SELECT count(*) FROM scores), (SELECT count(*) FROM response_cache),"
            " (SELECT count(*) FROM rounds WHERE finished_at IS NOT NULL),"
            " (SELECT count(*) FROM model_versions)",
        )[0]
        beat = heartbeat(self.project) or {}
        # The trainer writes nothing to the store until it is done, but saves checkpoints.
        models = self.project / "models"
        saved = sum(1 for _ in models.rglob("*")) if models.exists() else 0
        return (*counts, saved, beat.get("round"), beat.get("stage"), beat.get("state"))

    def run(self) -> None:
        last, since = None, time.monotonic()
        while not self.stop.is_set():
            process = self.process
            now = time.monotonic()
            if process is None or process.poll() is not None:
                last, since = None, now  # no daemon: nothing is expected to move
            else:
                try:
                    current = self.state()
                except (sqlite3.Error, OSError):  # a checkpoint removed mid-scan
                    current = last
                if current != last:
                    last, since = current, now
                elif now - since > self.figures.longest_stall_s:
                    self.figures.longest_stall_s = now - since
                    self.figures.stall_at = f"round {current[-3]} {current[-2]}" if current else ""
            self.stop.wait(0.25)  # poll interval


def start(project: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    return start_daemon(project, *args, env=ENV, log=log)


def wait_until(
    process: subprocess.Popen[bytes], project: Path, reached: Any, stall_s: float
) -> bool:
    """Poll until `reached(heartbeat)`; False when the process exits or nothing moves for stall_s."""
    seen, moved = None, time.monotonic()
    while process.poll() is None:
        beat = heartbeat(project)
        if beat is not None and beat["pid"] == process.pid:
            if reached(beat):
                return True
            key = (beat["round"], beat["stage"], one(project, "SELECT count(*) FROM examples"))
            if key != seen:
                seen, moved = key, time.monotonic()
        if time.monotonic() - moved > stall_s:
            return False
        time.sleep(0.05)
    return False


def ended(process: subprocess.Popen[bytes], figures: Figures, why: str) -> int:
    code = process.wait()
    if code not in (0, -signal.SIGKILL, -signal.SIGTERM):
        figures.failed_starts.append(f"{why}: exit {code}")
    return code


def finish(project: Path, log: Path, rounds: int, figures: Figures, monitor: Monitor) -> None:
    """Start the daemon until the unfinished round is done and `rounds` rounds are finished."""
    failures_in_a_row = 0
    while unfinished(project) or finished_rounds(project) < rounds:
        more = "0" if unfinished(project) else str(rounds - finished_rounds(project))
        figures.starts += 1
        process = start(project, log, "--rounds", more)
        monitor.process = process
        code = ended(process, figures, f"run --rounds {more}")
        say(f"daemon exited {code}; rounds finished: {finished_rounds(project)}")
        failures_in_a_row = failures_in_a_row + 1 if code != 0 else 0
        if failures_in_a_row >= 3:
            say("three failed starts in a row: giving up on finishing the rounds")
            return


# --- the phases --------------------------------------------------------------------------------
def hostile_phase(project: Path, workdir: Path, figures: Figures) -> None:
    from tests.hostile_inputs import write_hostile_inputs

    cases = write_hostile_inputs(workdir / "hostile")
    before = fingerprint(project)
    exe = Path(sys.executable).with_name("evoinstruct")
    for case in cases:
        if case.skip:
            figures.hostile["skipped"] = figures.hostile.get("skipped", 0) + 1
            continue
        done = subprocess.run(
            [str(exe), "seed", "add", str(case.path), *case.args, "-p", str(project)],
            capture_output=True,
            timeout=120,
            env=ENV,
        )
        err = done.stderr.decode("utf-8", "replace")
        problems = []
        if done.returncode != 2:
            problems.append(f"exit {done.returncode}")
        if not (err.endswith("\n") and err.count("\n") == 1) or "Traceback" in err:
            problems.append(f"{err.count(chr(10))} stderr lines")
        if fingerprint(project) != before:
            problems.append("the pool changed")
        key = "refused" if not problems else "failed"
        figures.hostile[key] = figures.hostile.get(key, 0) + 1
        if problems:
            figures.hostile_failures.append(f"{case.name}: {', '.join(problems)}")
    say(f"hostile inputs: {figures.hostile}; failures: {figures.hostile_failures or 'none'}")


def fingerprint(project: Path) -> str:
    digest = hashlib.sha256()
    conn = sqlite3.connect(f"file:{project / 'pool.db'}?mode=ro", uri=True, timeout=60)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(tables):
            rows = sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"')))
            digest.update(f"{table}:{len(rows)}:{rows}".encode())
    finally:
        conn.close()
    return digest.hexdigest()


def import_rows(k: int) -> list[list[dict[str, str]]]:
    """K overlapping files' rows: 60 of its own each, and the same 40 rows in all of them."""
    shared = [
        {"instruction": f"Shared import task {i}: list three facts about tides.", "output": "..."}
        for i in range(40)
    ]
    files = []
    for n in range(k):
        own = [
            {"instruction": f"Import {n} task {i}: describe a harbour at dawn.", "output": "..."}
            for i in range(60)
        ]
        mixed = own + shared
        random.Random(n).shuffle(mixed)
        files.append(mixed)
    return files


def write_imports(workdir: Path, k: int) -> list[Path]:
    paths = []
    for n, rows in enumerate(import_rows(k)):
        path = workdir / f"import-{n}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        paths.append(path)
    return paths


def run_imports(project: Path, files: list[Path], figures: Figures) -> None:
    say(f"{len(files)} concurrent seed imports start")
    processes = [
        subprocess.Popen(
            cli_command("seed", "add", str(f)) + ["--json", "-p", str(project)],
            cwd=str(ROOT),
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for f in files
    ]
    for process in processes:
        out, err = process.communicate(timeout=600)
        report: dict[str, Any] = {"exit": process.returncode}
        if process.returncode == 0:
            report.update(json.loads(out)[0])
        else:
            report["error"] = err.decode("utf-8", "replace").strip()[-300:]
        figures.imports.append(report)
    say(f"imports done: exits {[r['exit'] for r in figures.imports]}")


def kill_phase(
    project: Path, log: Path, args: argparse.Namespace, figures: Figures, monitor: Monitor
) -> set[str]:
    """SIGKILL the daemon `--kills` times at random points; the accepted ids seen after kills.
    With `--imports`, the imports run (in a thread) from the first round on, kills or not."""
    rng = random.Random(args.seed)
    seen_accepted: set[str] = set()
    training = args.train_every > 0
    files = write_imports(project.parent, args.imports) if args.imports else []
    while figures.kills < args.kills:
        figures.starts += 1
        process = start(project, log, "--forever")
        monitor.process = process
        if files and wait_until(
            process, project, lambda b: b["stage"] in GENERATION_STAGES, args.stall_s
        ):
            threading.Thread(target=run_imports, args=(project, files, figures)).start()
            files = []
        first = finished_rounds(project)
        if training and rng.random() < 0.5:
            stage = rng.choice(TRAINING_STAGES)
            # Training starts every few rounds; when it is not due (too few new examples), the
            # kill lands wherever the daemon is a few rounds on.
            delay = rng.uniform(0.0, 6.0 if stage == Stage.TRAIN else 1.0)
            give_up = first + 3 * args.train_every
        else:
            stage = rng.choice(GENERATION_STAGES)
            delay = rng.uniform(0.0, 1.5)
            give_up = first + 3

        def reached(beat: dict[str, Any], stage: str = stage, give_up: int = give_up) -> bool:
            return beat["stage"] == stage or (beat["round"] or 0) > give_up

        if not wait_until(process, project, reached, args.stall_s):
            if process.poll() is None:
                say(f"no progress towards {stage} in {args.stall_s:.0f} s: killing anyway")
                process.kill()
            ended(process, figures, f"waiting for {stage}")
            continue
        time.sleep(delay)  # somewhere inside the stage, not only at its start
        beat = heartbeat(project) or {}
        # Where the kill landed (the daemon may have moved on during the delay).
        phase = "training" if beat.get("stage") in TRAINING else "generation"
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        ended(process, figures, "killed")
        figures.kills += 1
        figures.kills_by_phase[phase] += 1
        seen_accepted |= accepted(project)
        say(
            f"kill {figures.kills}/{args.kills} ({phase}) in round {beat.get('round')} "
            f"{beat.get('stage')} (+{delay:.1f} s); rounds finished: {finished_rounds(project)}"
        )
    return seen_accepted


def run_phase(
    project: Path,
    log: Path,
    args: argparse.Namespace,
    figures: Figures,
    monitor: Monitor,
    teacher: Teacher,
) -> None:
    """`--rounds` rounds in one start; imports and a SIGTERM land while it runs."""
    figures.starts += 1
    process = start(project, log, "--rounds", str(args.rounds))
    monitor.process = process
    if args.imports:
        files = write_imports(project.parent, args.imports)
        in_round = wait_until(
            process, project, lambda b: b["stage"] in GENERATION_STAGES, args.stall_s
        )
        say(f"daemon {'in a round' if in_round else 'not in a round'}: imports go now")
        run_imports(project, files, figures)
    if args.sigterm:

        def calls_cut() -> bool:
            return teacher.in_flight > 0 and any(
                kind in ("drip", "hang") and end - start_ >= args.timeout_s
                for _, kind, start_, end in list(teacher.held)
            )

        deadline = time.monotonic() + args.stall_s
        while process.poll() is None and not calls_cut() and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            beat = heartbeat(project) or {}
            in_flight = teacher.in_flight
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=300)
            figures.sigterm_exit_s.append(time.monotonic() - sent)
            say(
                f"SIGTERM in round {beat.get('round')} {beat.get('stage')} with "
                f"{in_flight} calls in flight: exit {code} after "
                f"{figures.sigterm_exit_s[-1]:.1f} s"
            )
    code = ended(process, figures, f"run --rounds {args.rounds}")
    say(f"daemon exited {code}; rounds finished: {finished_rounds(project)}")


# --- the figures ---------------------------------------------------------------------------------
def integrity(project: Path) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for name in ("pool.db", "checkpoints.db"):
        conn = sqlite3.connect(project / name, timeout=60)
        try:
            checks[f"integrity_check {name}"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
            checks[f"foreign_key_check {name}"] = len(
                conn.execute("PRAGMA foreign_key_check").fetchall()
            )
        finally:
            conn.close()
    missing = "NOT IN (SELECT id FROM examples)"
    checks["rejections -> missing example"] = one(
        project,
        f"SELECT count(*) FROM rejections WHERE example_id IS NOT NULL AND example_id {missing}",
    )
    checks["scores -> missing example"] = one(
        project, f"SELECT count(*) FROM scores WHERE example_id {missing}"
    )
    checks["examples -> missing parent"] = one(
        project,
        f"SELECT count(*) FROM examples WHERE parent_id IS NOT NULL AND parent_id {missing}",
    )
    checks["manifests -> missing example"] = one(
        project, f"SELECT count(*) FROM manifests WHERE example_id {missing}"
    )
    checks["manifests -> missing version"] = one(
        project,
        "SELECT count(*) FROM manifests WHERE version NOT IN (SELECT version FROM model_versions)",
    )
    # Not a fault: an item whose call failed waits for a later round (stages.py).
    checks["candidates left for a later round (info)"] = one(
        project, "SELECT count(*) FROM examples WHERE status = 'candidate' AND output IS NOT NULL"
    )
    checks["unfinished rounds"] = one(
        project, "SELECT count(*) FROM rounds WHERE finished_at IS NULL AND phase != 'failed'"
    )
    numbers = [r[0] for r in query(project, "SELECT number FROM rounds ORDER BY number")]
    checks["round numbers with a gap"] = int(numbers != list(range(1, len(numbers) + 1)))
    return checks


def duplicates(project: Path) -> dict[str, int]:
    from evoinstruct.text.rules import normalize

    prompts = Counter(
        (normalize(i), normalize(x or ""))
        for i, x in query(
            project, "SELECT instruction, input FROM examples WHERE source != 'rewritten'"
        )
    )
    rewrites = Counter(
        query(project, "SELECT parent_id, output FROM examples WHERE source = 'rewritten'")
    )
    return {
        "examples with the same prompt": sum(n - 1 for n in prompts.values()),
        "rewrites with the same parent and text": sum(n - 1 for n in rewrites.values()),
        "rejections recorded twice": one(
            project,
            "SELECT count(*) - count(DISTINCT stage || reason || ifnull(example_id, '') ||"
            " ifnull(text, '') || round || ifnull(raw_output, '') || ifnull(evidence, ''))"
            " FROM rejections",
        ),
        "scores recorded twice": one(
            project,
            "SELECT count(*) - count(DISTINCT example_id || scorer || dimension) FROM scores",
        ),
        "versions trained twice in a round": one(
            project,
            "SELECT ifnull(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM model_versions GROUP BY round)",
        ),
    }


def failed_calls(project: Path) -> Counter[str]:
    """Calls that failed after their retries, as the stages recorded them: by stage and kind."""
    return Counter(
        {
            f"{stage} {reason.removeprefix('model_failure:')}": n
            for stage, reason, n in query(
                project,
                "SELECT stage, reason, count(*) FROM rejections"
                " WHERE reason LIKE 'model_failure:%' GROUP BY stage, reason",
            )
        }
    )


def call_spans(teacher: Teacher, backoff_max_s: float) -> tuple[float, float]:
    """The longest attempt the teacher held, and the longest call: attempts of one request
    body that follow each other within a retry pause, first arrival to last release."""
    longest_attempt = max((end - start for _, _, start, end in teacher.held), default=0.0)
    by_body: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for key, _, start, end in teacher.held:
        by_body[key].append((start, end))
    longest_call = 0.0
    for spans in by_body.values():
        spans.sort()
        first, last_end = spans[0][0], spans[0][1]
        for start, end in spans[1:]:
            if start - last_end > backoff_max_s + 1.0:  # a new call with the same body
                longest_call = max(longest_call, last_end - first)
                first = start
            last_end = max(last_end, end)
        longest_call = max(longest_call, last_end - first)
    return longest_attempt, longest_call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=0, help="SIGKILLs of the running daemon")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="fraction of requests faulted"
    )
    parser.add_argument(
        "--faults", default="429,500,garbage,truncated,hang,drip", help="fault kinds to draw from"
    )
    parser.add_argument("--imports", type=int, default=0, help="concurrent seed imports in a run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds finished at least")
    parser.add_argument("--sigterm", action="store_true", help="one SIGTERM with calls in flight")
    parser.add_argument("--no-hostile", action="store_true", help="skip the malformed-input corpus")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="the teacher's timeout_s")
    parser.add_argument(
        "--train-every", type=int, default=2, help="rounds between trainings (0: none)"
    )
    parser.add_argument("--stall-s", type=float, default=300.0, help="give up a wait after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp dir")
    args = parser.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    aliases = {"hung": "hang"}
    kinds = [aliases.get(k, k) for k in kinds]

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="torture-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"workdir {workdir}; {' '.join(sys.argv[1:])}")
    figures = Figures()
    with Teacher(args.fault_rate if args.fault_rate else 0.0, kinds, args.seed) as teacher:
        project = build_project(workdir, teacher.url, args)
        log = project / "torture-daemon.log"
        say(f"project ready: {one(project, 'SELECT count(*) FROM examples')} seeds")
        if not args.no_hostile:
            hostile_phase(project, workdir, figures)
        monitor = Monitor(project, figures)
        monitor.start()
        seen_accepted: set[str] = set()
        if args.kills:
            seen_accepted = kill_phase(project, log, args, figures, monitor)
        else:
            run_phase(project, log, args, figures, monitor, teacher)
        finish(project, log, args.rounds, figures, monitor)
        monitor.stop.set()
        monitor.join()
        spans = call_spans(teacher, backoff_max_s=1.0)
        served = dict(teacher.faults_served)
        requests = teacher.requests

    while any(t.name != "MainThread" and not t.daemon for t in threading.enumerate()):
        time.sleep(0.1)  # imports still running in their thread
    gone = seen_accepted - accepted(project)
    statuses: Counter[str] = Counter()
    for example_id in gone:
        rows = query(project, "SELECT status FROM examples WHERE id = ?", (example_id,))
        statuses[rows[0][0] if rows else "missing"] += 1
    kinds_failed = failed_calls(project)
    from evoinstruct.models.openai_backend import call_deadline_s

    deadline = call_deadline_s(args.timeout_s, 2, 1.0)
    marked = one(
        project,
        "SELECT count(*) FROM examples WHERE instruction LIKE ? OR input LIKE ? OR output LIKE ?",
        (f"%{MARK}%",) * 3,
    )
    marked_raw = one(
        project, "SELECT count(*) FROM rejections WHERE raw_output LIKE ?", (f"%{MARK}%",)
    )
    imported_rows = import_duplicates = 0
    rows = {r["instruction"] for f in import_rows(args.imports) for r in f}
    if figures.imports:
        counts = Counter(
            r[0]
            for r in query(
                project,
                "SELECT instruction FROM examples WHERE instruction LIKE 'Import % task %'"
                " OR instruction LIKE 'Shared import task %'",
            )
        )
        imported_rows = sum(counts.values())
        import_duplicates = sum(n - 1 for n in counts.values()) + len(rows - set(counts))

    print()
    print("=== torture figures ===")
    print(f"command: {' '.join(['bench/torture.py', *sys.argv[1:]])}")
    print(f"rounds finished: {finished_rounds(project)}; daemon starts: {figures.starts}")
    print(f"kills: {figures.kills} {dict(figures.kills_by_phase)}")
    print(f"lost (accepted after a kill, not accepted at the end): {len(gone)} {dict(statuses)}")
    dups = duplicates(project)
    print(f"duplicated: {sum(dups.values())} {dups}")
    checks = integrity(project)
    orphaned = sum(v for k, v in checks.items() if "->" in k)
    print(f"orphaned: {orphaned}")
    print(f"failed starts: {len(figures.failed_starts)} {figures.failed_starts}")
    print(f"teacher requests: {requests}; faults served: {served}")
    print(f"calls failed after retries: {sum(kinds_failed.values())} {dict(kinds_failed)}")
    print(
        f"examples written from failed calls: {marked} (raw outputs holding a faulted reply: {marked_raw})"
    )
    print(f"longest stall: {figures.longest_stall_s:.1f} s ({figures.stall_at})")
    print(
        f"longest attempt held by the teacher: {spans[0]:.1f} s (attempt deadline {args.timeout_s:g} s);"
        f" longest call: {spans[1]:.1f} s (call deadline {deadline:g} s)"
    )
    if figures.sigterm_exit_s:
        print(f"SIGTERM to exit: {', '.join(f'{s:.1f} s' for s in figures.sigterm_exit_s)}")
    if figures.imports:
        failures = [r for r in figures.imports if r["exit"] != 0]
        inserted = sum(r.get("inserted", 0) for r in figures.imports)
        print(
            f"imports: {len(figures.imports)}, failed {len(failures)}; rows inserted {inserted},"
            f" in the pool {imported_rows} of {len(rows)} distinct; duplicated {import_duplicates}"
        )
        for failure in failures:
            print(f"  import failure: {failure}")
    if figures.hostile:
        print(f"hostile inputs: {figures.hostile}; failures: {figures.hostile_failures or 'none'}")
    print("integrity checks:")
    for name, value in checks.items():
        print(f"  {name}: {value}")
    bad = (
        len(gone)
        + sum(dups.values())
        + orphaned
        + len(figures.failed_starts)
        + marked
        + len(figures.hostile_failures)
        + sum(1 for k, v in checks.items() if k.startswith("integrity_check") and v != "ok")
        + (import_duplicates if figures.imports else 0)
    )
    print(f"workdir: {workdir}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
