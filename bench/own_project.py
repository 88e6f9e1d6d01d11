"""Your own project on a real model, as the README says, measured: one round, and stopping.

Part 1, the round: `evoinstruct init DIR --model smollm2`, `seed add seeds/seed_tasks_en.jsonl`,
`run --rounds 1` — wall time, exit code, and the longest stretch without an output line (the
daemon writes its progress, without a terminal, at least every 10 s).

Part 2, stopping: a second project (`--set trainer.train_min_new=1`, so that round 1 surely
trains) is stopped in each phase, and every next `run` must resume the step that was cut:
  generate  `evoinstruct stop` while the generate step's model is decoding;
  max-time  `run --max-seconds S` on the resumed round: how far past S the daemon exits;
  train     Ctrl-C (SIGINT to the daemon's process group, as a terminal sends it; the
            trainer has a group of its own and hears it from the daemon), then
            `evoinstruct stop`, each once training steps are running;
  evaluate  `evoinstruct stop` while the suite is being answered;
then a last `run` finishes the round. Each stop is timed from the request until the daemon
has exited (`exited_after_s`; `seconds`: until `evoinstruct stop` returned, which it does
then), with when the daemon heard it (`heard_after_s`: a `stop` command's own start-up) and
the exit codes.

Writes `results.json` in --out and prints a summary. A benchmark, not a test: it takes the
better part of an hour on a 2-core CPU; say what else ran beside it when quoting it.

Run: .venv/bin/python bench/own_project.py [--out DIR] [--skip-round] [--skip-stops]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from evoinstruct.graph.daemon.command import cli_command
from evoinstruct.store.stages import Stage

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 3 * 3600.0  # no wait below is meant to reach this


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=cwd, check=False)
    if done.returncode != 0:
        raise SystemExit(f"evoinstruct {' '.join(args)} failed: {done.stderr.strip()}")
    return done


class Daemon:
    """`evoinstruct run ...` in its own process group, its output lines timed as they come."""

    def __init__(self, project: Path, *args: str) -> None:
        self.project = project
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            cli_command("run", "--project", str(project), *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal's job is
        )
        self.lines: list[tuple[float, str]] = []
        self.exited_at: float | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        # Reaped the moment it exits, as a shell would: `evoinstruct stop` waits until the pid
        # is gone, and that exit time is what is measured.
        self.reaper = threading.Thread(target=self._reap, daemon=True)
        self.reaper.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def _reap(self) -> None:
        self.process.wait()
        self.exited_at = time.monotonic()

    def heard_stop_at(self) -> float | None:
        """When the daemon wrote that it heard the request (its log's clock)."""
        heard = [
            at
            for at, line in self.lines
            if "reached: giving" in line or "requested: giving" in line
        ]
        return heard[0] if heard else None

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def timed_text(self) -> str:
        """The output with each line's arrival, in seconds since the daemon started."""
        return "\n".join(f"{at:8.2f}  {line}" for at, line in self.lines)

    def wait(self) -> int:
        self.reaper.join(timeout=HANG_GUARD_S)
        self.reader.join(timeout=10)
        return self.process.wait()

    def longest_silence(self) -> float:
        times = [0.0, *(t for t, _ in self.lines), time.monotonic() - self.started]
        return max(b - a for a, b in itertools.pairwise(times))

    def heartbeat(self) -> dict[str, Any]:
        try:
            conn = sqlite3.connect(f"file:{self.project / 'pool.db'}?mode=ro", uri=True)
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM daemon WHERE id = 1").fetchone()
            conn.close()
        except sqlite3.Error:
            return {}
        if row is None or row["pid"] != self.process.pid:
            return {}
        found = dict(row)
        found["activity"] = json.loads(found["activity"]) if found.get("activity") else {}
        return found

    def until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while not predicate():
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited before {what}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} in {HANG_GUARD_S:.0f} s")
            time.sleep(0.2)

    def in_stage(self, stage: str, line: str | None = None) -> bool:
        """The daemon is in `stage`, and (`line`, a regex) has printed progress there."""
        if self.heartbeat().get("stage") != stage:
            return False
        return line is None or any(re.search(line, text) for _, text in self.lines)


def _as_typed() -> None:
    """The priority a command typed in a shell has, when the bench runs under `nice`."""
    with contextlib.suppress(PermissionError):  # not allowed to: timed as niced
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def stop_with_command(daemon: Daemon) -> dict[str, Any]:
    asked = time.monotonic()
    done = subprocess.run(
        cli_command("stop", "--project", str(daemon.project)),
        capture_output=True,
        text=True,
        preexec_fn=_as_typed,
    )
    returned = time.monotonic()
    code = daemon.wait()
    return {
        "how": "evoinstruct stop",
        "seconds": round(returned - asked, 2),  # until `evoinstruct stop` returned
        **_stop_times(daemon, asked),
        "stop_exit": done.returncode,
        "daemon_exit": code,
    }


def _stop_times(daemon: Daemon, asked: float) -> dict[str, Any]:
    """When the request was made and heard, and the daemon's exit, on its log's clock."""
    assert daemon.exited_at is not None
    heard = daemon.heard_stop_at()
    return {
        "asked_at_s": round(asked - daemon.started, 2),
        "heard_after_s": None if heard is None else round(heard - (asked - daemon.started), 2),
        "exited_after_s": round(daemon.exited_at - asked, 2),
    }


def stop_with_ctrl_c(daemon: Daemon) -> dict[str, Any]:
    asked = time.monotonic()
    os.killpg(daemon.process.pid, signal.SIGINT)  # what a terminal sends its foreground job
    code = daemon.wait()
    return {"how": "Ctrl-C", **_stop_times(daemon, asked), "daemon_exit": code}


def resumed_at(daemon: Daemon) -> str | None:
    found = re.search(r"resuming round \d+ at (\S+)", daemon.text())
    return found.group(1) if found else None


def the_round(out: Path) -> dict[str, Any]:
    project = out / "round"
    shutil.rmtree(project, ignore_errors=True)
    cli("init", str(project), "--model", "smollm2")
    cli("seed", "add", str(project / "seeds" / "seed_tasks_en.jsonl"), "--project", str(project))
    daemon = Daemon(project, "--rounds", "1")
    code = daemon.wait()
    (out / "round.log").write_text(daemon.timed_text() + "\n", encoding="utf-8")
    return {
        "exit": code,
        "seconds": round(time.monotonic() - daemon.started, 1),
        "longest_silence_s": round(daemon.longest_silence(), 1),
        "last_line": daemon.lines[-1][1] if daemon.lines else None,
    }


def stops(out: Path, max_seconds: float) -> dict[str, Any]:
    project = out / "stops"
    shutil.rmtree(project, ignore_errors=True)
    cli("init", str(project), "--model", "smollm2")
    cli("seed", "add", str(project / "seeds" / "seed_tasks_en.jsonl"), "--project", str(project))
    sets = ["--set", "trainer.train_min_new=1"]
    results: dict[str, Any] = {}
    logs: list[str] = []

    def log(name: str, daemon: Daemon) -> None:
        logs.append(f"--- {name} ---\n{daemon.timed_text()}")
        (out / "stops.log").write_text("\n".join(logs) + "\n", encoding="utf-8")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {json.dumps(results.get(name))}", flush=True)

    daemon = Daemon(project, "--rounds", "1", *sets)
    daemon.until(
        lambda: (
            daemon.in_stage(Stage.GENERATE) and daemon.heartbeat()["activity"].get("tokens", 0) > 0
        ),
        "tokens in the generate step",
    )
    results[Stage.GENERATE] = stop_with_command(daemon)
    log(Stage.GENERATE, daemon)

    daemon = Daemon(project, "--rounds", "0", "--max-seconds", str(max_seconds), *sets)
    code = daemon.wait()
    assert daemon.exited_at is not None
    took = daemon.exited_at - daemon.started
    results["max_seconds"] = {
        "how": f"--max-seconds {max_seconds:g}",
        "resumed_at": resumed_at(daemon),
        "seconds": round(took, 2),
        "past_the_limit_s": round(took - max_seconds, 2),
        "daemon_exit": code,
    }
    log("max_seconds", daemon)

    for name, stop in (("train_ctrl_c", stop_with_ctrl_c), (Stage.TRAIN, stop_with_command)):
        daemon = Daemon(project, "--rounds", "0", *sets)
        daemon.until(
            lambda d=daemon: d.in_stage(Stage.TRAIN, r"train: [1-9]\d*/"), "training steps"
        )
        results[name] = {"resumed_at": resumed_at(daemon), **stop(daemon)}
        log(name, daemon)

    daemon = Daemon(project, "--rounds", "0", *sets)
    daemon.until(lambda: daemon.in_stage(Stage.EVALUATE, r"evaluate: [1-9]\d*/"), "suite answers")
    results[Stage.EVALUATE] = {"resumed_at": resumed_at(daemon), **stop_with_command(daemon)}
    log(Stage.EVALUATE, daemon)

    daemon = Daemon(project, "--rounds", "0", *sets)
    code = daemon.wait()
    log("finish", daemon)
    results["finish"] = {
        "resumed_at": resumed_at(daemon),
        "exit": code,
        "seconds": round(time.monotonic() - daemon.started, 1),
        "longest_silence_s": round(daemon.longest_silence(), 1),
        "last_line": daemon.lines[-1][1] if daemon.lines else None,
    }
    conn = sqlite3.connect(project / "pool.db")
    row = conn.execute("SELECT metrics FROM model_versions WHERE version = 'v1'").fetchone()
    conn.close()
    metrics = json.loads(row[0]) if row else {}
    results["v1_resumed_from"] = metrics.get("resumed_from")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "own_project")
    parser.add_argument("--skip-round", action="store_true", help="only the stops")
    parser.add_argument("--skip-stops", action="store_true", help="only the round")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="the time-limit run's S")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    if not args.skip_round:
        results["round"] = the_round(args.out)
        print(f"round: {json.dumps(results['round'])}", flush=True)
    if not args.skip_stops:
        results["stops"] = stops(args.out, args.max_seconds)
        for name, found in results["stops"].items():
            print(f"{name}: {json.dumps(found)}", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
