"""The daemon at scale: rounds of the whole graph on a pool of 100,000 accepted examples.

Prints four figures the daemon must keep healthy as a pool grows:

1. orchestration time per round outside model calls (graph, store, selector,
   checkpoints), from an in-process run of `--rounds` rounds with the
   deterministic teacher double (behind the store's response cache, as in a
   real run); the first round is reported apart because it builds the
   selector indexes from the whole pool;
2. RSS after every round: first, last, max and the least-squares slope;
3. the size of `checkpoints.db` (+ `-wal`) after pruning and the threads left;
4. resume after a kill: the daemon as a real process against a loopback
   OpenAI server in this process, SIGKILLed mid-round and restarted; the time
   from the restart's process start to the first request reaching the server
   (requests the response cache answers never reach it), and to the end of
   the resumed round (process exit).

`--profile` runs the in-process rounds under cProfile and prints the top functions.
Run: .venv/bin/python bench/daemon.py [--examples 100000] [--rounds 20] [--kills 3]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import json
import os
import pstats
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

EN_VERBS = "Explain Describe Compare Summarize Evaluate Outline Plan Critique".split()
EN_TOPICS = (
    "rivers markets poems databases gardens trains budgets galaxies recipes proteins".split()
)
ZH_VERBS = ["解释", "描述", "比较", "总结", "评价", "规划", "设计", "列出"]
ZH_TOPICS = ["河流", "市场", "诗歌", "数据库", "花园", "火车", "预算", "星系", "菜谱", "蛋白质"]


def write_pool(path: Path, n: int, seed: int = 0) -> None:
    """Alpaca rows with outputs (imported as accepted seeds): two English to one Chinese."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            if i % 3 == 2:
                instruction = f"{rng.choice(ZH_VERBS)}第{i}号{rng.choice(ZH_TOPICS)}的特点。"
                output = f"第{i}号的回答：" + "内容" * rng.randint(5, 40) + "。"
            else:
                instruction = (
                    f"{rng.choice(EN_VERBS)} {rng.choice(EN_TOPICS)} number {i} for a class."
                )
                output = f"Answer {i}: " + "text " * rng.randint(5, 60)
            row = {"instruction": instruction, "input": "", "output": output}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_project(root: Path, n: int) -> tuple[Path, float]:
    """A fresh project whose pool holds `n` accepted examples; returns it and the import time."""
    from evoinstruct.graph.project import init_project
    from evoinstruct.store.seeds import add_seed_file

    project = init_project(root).root
    data = root.parent / "pool.jsonl"
    write_pool(data, n)
    started = time.perf_counter()
    with project_store(project) as store:
        report = add_seed_file(store, data)
    data.unlink()
    assert report.inserted == n, report
    return project, time.perf_counter() - started


def project_store(project: Path):
    from evoinstruct.store import open_store

    return open_store(project / "pool.db")


# --- part 1: rounds in process ---------------------------------------------------------
class TimedTeacher:
    """The deterministic teacher double, timing every `generate` call.

    The call log of the scripted double is emptied after each call: it would
    otherwise grow with every request and hide the daemon's own memory profile.
    """

    def __init__(self) -> None:
        from tests.fake_teacher import scripted_teacher

        self.inner = scripted_teacher()
        self.seconds = 0.0
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def generate(self, requests: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self.inner.generate(requests)
        finally:
            self.seconds += time.perf_counter() - started
            self.requests += len(requests)
            self.inner.calls.clear()


def run_rounds(project: Path, rounds: int) -> dict[str, Any]:
    """`rounds` rounds with `Daemon`; per-round wall time, model time and RSS."""
    from evoinstruct.agents.models.cache import CachedModel
    from evoinstruct.agents.models.factory import ModelSet
    from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
    from evoinstruct.graph.project import Project
    from evoinstruct.graph.round.deps import deps_for_project

    proj = Project(project)
    config = proj.load_config()
    teacher = TimedTeacher()
    deps = deps_for_project(proj, config, models=object())
    deps.models = ModelSet(
        config.models,
        config.roles,
        cache=deps.store,
        builder=lambda cfg, cache=None: CachedModel(teacher, cache) if cache else teacher,
    )
    process = psutil.Process()
    marks: list[tuple[float, float]] = []  # (wall clock, model seconds) at each boundary
    rss: list[float] = []
    node_orch: dict[str, list[float]] = {}
    last_node = [0.0, 0.0]

    def progress(kind: str, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if kind == "node_done":
            # A node's time outside model calls, since the previous node (or round) ended.
            orch = (now - last_node[0]) - (teacher.seconds - last_node[1])
            node_orch.setdefault(event["node"], []).append(orch)
            last_node[:] = [now, teacher.seconds]
        elif kind == "round_done":
            marks.append((now, teacher.seconds))
            rss.append(process.memory_info().rss / 2**20)

    async def main() -> Any:
        daemon = Daemon(proj, deps, DaemonOptions(rounds=rounds), progress)
        marks.append((time.perf_counter(), teacher.seconds))
        last_node[:] = [marks[0][0], 0.0]
        rss.append(process.memory_info().rss / 2**20)
        try:
            return await daemon.run()
        finally:
            await deps.models.aclose()
            deps.store.close()

    result = asyncio.run(main())
    assert len(result.rounds_run) == rounds, result
    walls = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    models = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return {
        "wall": walls,
        "model": models,
        "orch": [w - m for w, m in zip(walls, models, strict=True)],
        "rss": rss,
        "requests": teacher.requests,
        "nodes": node_orch,
    }


def slope(values: list[float]) -> float:
    """Least-squares slope per step."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


# --- part 2: checkpoints ---------------------------------------------------------------
def checkpoint_figures(project: Path) -> dict[str, Any]:
    db = project / "checkpoints.db"
    wal = project / "checkpoints.db-wal"
    conn = sqlite3.connect(db)
    try:
        threads = [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")]
        rows = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        writes = conn.execute("SELECT count(*) FROM writes").fetchone()[0]
    finally:
        conn.close()
    return {
        "db_mb": db.stat().st_size / 2**20,
        "wal_mb": wal.stat().st_size / 2**20 if wal.exists() else 0.0,
        "threads": sorted(threads),
        "checkpoints": rows,
        "writes": writes,
    }


# --- part 3: resume after a kill -------------------------------------------------------
def resume_after_kills(
    project: Path, kills: int, delay: float, log: Path
) -> list[dict[str, float]]:
    """Kill a running round after its first requests; time the restart to its first request."""
    from tests.fake_teacher import server_reply
    from tests.openai_server import OpenAITestServer

    results = []
    rng = random.Random(5)
    env = {**os.environ, "OPENAI_API_KEY": "bench-not-a-secret"}
    with OpenAITestServer(reply=server_reply, delay=delay) as server:
        overrides = [
            "--set",
            f"models.teacher.base_url={server.url}",
            "--set",
            "models.teacher.model=tiny",
        ]
        for attempt in range(kills):
            before = server.requests
            victim = _daemon(project, "1", overrides, env, log)
            # Kill after a few requests of the new round: mid-generate, -respond or -critique.
            wanted = before + rng.randint(3, 40)
            if not _wait(_reached(server, wanted, victim), 600):
                raise RuntimeError("the daemon never reached the server")
            if victim.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited ({victim.returncode}) before the kill; see {log}"
                )
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed_at = server.requests
            time.sleep(0.2)  # requests in flight at the kill have arrived by now
            seen = server.requests
            started = time.monotonic()
            resumed = _daemon(project, "0", overrides, env, log)
            code = resumed.wait(timeout=900)
            finished = time.monotonic()
            if code != 0:
                raise RuntimeError(f"the resumed daemon exited {code}; see {log}")
            first = server.arrivals[seen] if server.requests > seen else None
            results.append(
                {
                    "attempt": attempt + 1,
                    "killed_after": killed_at - before,
                    "first_request_s": (first - started) if first is not None else float("nan"),
                    "round_done_s": finished - started,
                    "requests_after": server.requests - seen,
                }
            )
    return results


def _reached(server: Any, wanted: int, process: subprocess.Popen) -> Any:
    return lambda: server.requests >= wanted or process.poll() is not None


def _daemon(project: Path, rounds: str, overrides: list[str], env: dict[str, str], log: Path):
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evoinstruct.graph.cli.main",
                "run",
                "--project",
                str(project),
                "--rounds",
                rounds,
                *overrides,
            ],
            cwd=str(ROOT),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# --- report ----------------------------------------------------------------------------
def report(
    args: argparse.Namespace,
    import_s: float,
    rounds: dict[str, Any],
    ckpt: dict[str, Any],
    resumes: list[dict[str, float]],
) -> None:
    orch, rss = rounds["orch"], rounds["rss"]
    rest = orch[1:] or orch
    print(f"\n== bench/daemon.py: {args.examples:,} accepted examples, {args.rounds} rounds ==")
    print(f"pool import                     {import_s:8.1f} s")
    print(
        f"round 1 wall / model / orch     {rounds['wall'][0]:8.2f} / {rounds['model'][0]:.2f} / {orch[0]:.2f} s"
    )
    print(f"rounds 2.. orch median / max    {statistics.median(rest):8.2f} / {max(rest):.2f} s")
    print(
        f"rounds 2.. wall median          {statistics.median(rounds['wall'][1:] or rounds['wall']):8.2f} s"
    )
    print(f"model requests (all rounds)     {rounds['requests']:8d}")
    nodes = sorted(rounds["nodes"].items(), key=lambda kv: -statistics.median(kv[1][1:] or kv[1]))
    per_node = ", ".join(f"{k} {1000 * statistics.median(v[1:] or v):.0f}" for k, v in nodes)
    print(f"orch per node, median ms (r2..) {per_node}")
    print("node orch, round 1 (s)          " + ", ".join(f"{k} {v[0]:.2f}" for k, v in nodes))
    print(
        f"RSS before r1/after r1/last/max {rss[0]:5.0f} / {rss[1]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} MiB, "
        f"{slope(rss[2:]) * 1024:+.0f} KiB/round over rounds 2..{len(rss) - 1}"
    )
    print(f"RSS per round (MiB)             {' '.join(f'{r:.0f}' for r in rss[1:])}")
    print(
        f"checkpoints.db + wal            {ckpt['db_mb']:8.2f} + {ckpt['wal_mb']:.2f} MiB, "
        f"{len(ckpt['threads'])} threads ({ckpt['threads'][0]}..{ckpt['threads'][-1]}), "
        f"{ckpt['checkpoints']} checkpoints, {ckpt['writes']} writes"
    )
    for r in resumes:
        print(
            f"resume #{r['attempt']} (killed after {r['killed_after']:3d} req)  "
            f"first request {r['first_request_s']:6.2f} s, round done {r['round_done_s']:6.2f} s, "
            f"{r['requests_after']} requests after restart"
        )
    if resumes:
        firsts = [r["first_request_s"] for r in resumes]
        dones = [r["round_done_s"] for r in resumes]
        print(
            f"resume median                   first request {statistics.median(firsts):.2f} s, round done {statistics.median(dones):.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=100_000, help="accepted examples in the pool"
    )
    parser.add_argument("--rounds", type=int, default=20, help="in-process rounds")
    parser.add_argument(
        "--kills", type=int, default=3, help="kill-and-resume repetitions (0 skips)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.02, help="loopback server seconds per answer"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process rounds")
    parser.add_argument(
        "--keep", type=Path, default=None, help="build the project here and keep it"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        print(f"building a pool of {args.examples:,} examples ...", flush=True)
        project, import_s = build_project(base / "proj", args.examples)
        print(f"running {args.rounds} rounds in process ...", flush=True)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        rounds = run_rounds(project, args.rounds)
        if profiler:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
            print(out.getvalue())
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
            print(out.getvalue())
        ckpt = checkpoint_figures(project)
        resumes = []
        if args.kills:
            print(f"killing and resuming the daemon {args.kills} times ...", flush=True)
            resumes = resume_after_kills(project, args.kills, args.delay, base / "bench-daemon.log")
        report(args, import_s, rounds, ckpt, resumes)


if __name__ == "__main__":
    main()
