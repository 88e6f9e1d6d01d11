"""Store at scale: import 200,000 examples from one file, then time `status --json`.

Prints: import seconds, examples/s, peak RSS of the importing process, pool.db
size, and the latency of `evoinstruct status --json` (median and max of runs),
whose target is under 200 ms.

With `--selector N`: the selector's persistent indexes (agents.selection.pool_index) over a
pool of synthetic English/Chinese instructions (bench/novelty.py's generator, with
planted near copies) built at N/2 (`--grow-from`), grown to N round by round, then
restarted and rebuilt at N; with `--baseline REV` the same phases run on that
commit's code first, and a table prints each figure beside the baseline's: build
time, the catch-up per round while the pool grows (the stall), per-candidate
exact, near and novelty time (wall and CPU), RSS and file size.

    .venv/bin/python bench/store_scale.py --selector 100000 --baseline 6b8afaa
    nice -n 10 .venv/bin/python bench/store_scale.py --selector 1000000 --baseline 6b8afaa \
        --grow-from 0.9 --round-size 2000 --no-rebuild
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS_EN = (
    "explain describe compare list summarize translate classify write plan design evaluate".split()
)
TOPICS_EN = (
    "rivers markets poems databases gardens trains budgets galaxies recipes proteins".split()
)
WORDS_ZH = ["解释", "描述", "比较", "列出", "总结", "翻译", "分类", "写", "规划", "设计"]
TOPICS_ZH = ["河流", "市场", "诗歌", "数据库", "花园", "火车", "预算", "星系", "菜谱", "蛋白质"]


def write_dataset(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            if i % 3 == 2:
                instruction = f"{rng.choice(WORDS_ZH)}{rng.choice(TOPICS_ZH)}的第{i}个例子。"
            else:
                instruction = (
                    f"{rng.choice(WORDS_EN).title()} {rng.choice(TOPICS_EN)} case {i} in detail."
                )
            row = {
                "instruction": instruction,
                "input": "",
                "output": f"Answer {i}: " + "text " * rng.randint(5, 60),
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_import(project: Path, data: Path) -> dict[str, float]:
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from evoinstruct.store import open_store
from evoinstruct.store.seeds import add_seed_file
t = time.perf_counter()
with open_store({str(project / "pool.db")!r}) as store:
    report = add_seed_file(store, {str(data)!r})
elapsed = time.perf_counter() - t
print(json.dumps({{"seconds": elapsed, "inserted": report.inserted,
  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_status(project: Path, runs: int) -> list[float]:
    exe = Path(sys.executable).with_name("evoinstruct")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            [str(exe), "status", "--json", "-p", str(project)], check=True, capture_output=True
        )
        times.append((time.perf_counter() - t) * 1000)
    return times


# The selector benchmark's code runs in fresh processes, against this tree or a baseline
# commit's (extracted by `git archive`): `evoinstruct.*` then resolves in that tree.
TREE_FINDER = """
import importlib.abc, importlib.machinery, importlib.util, sys
from pathlib import Path
class _Tree(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        parts = name.split(".")
        if parts[0] != "evoinstruct" or len(parts) < 2:
            return None
        if len(parts) == 2:
            pkg = Path({tree!r}) / parts[1]
            return importlib.util.spec_from_file_location(
                name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
        return importlib.machinery.PathFinder.find_spec(name, path)
sys.meta_path.insert(0, _Tree())
"""

SELECTOR_SETUP = """
import sys, time
sys.path.insert(0, {root!r})
from bench.novelty import synthetic_instructions
from evoinstruct.store import open_store
from evoinstruct.store.records import ExampleDraft
base, grow, k = {base}, {grow}, {k}
items = synthetic_instructions(base + grow + k, seed=0)
t = time.perf_counter()
with open_store({pool!r}) as store:
    for start in range(0, base, 10000):
        batch = items[start : min(start + 10000, base)]
        drafts = [ExampleDraft(text, output="answer " + i, source="seed") for i, text in batch]
        store.add_candidates(drafts, round=0)
    for start in range(base, base + grow, 10000):  # accepted later, round by round
        batch = items[start : min(start + 10000, base + grow)]
        store.add_candidates([ExampleDraft(text, output="answer " + i) for i, text in batch], round=2)
    probes = [ExampleDraft(text, output="new") for _, text in items[base + grow :]]
    store.add_candidates(probes, round=1)
print("pool written in", round(time.perf_counter() - t, 1), "s", file=sys.stderr)
"""

SELECTOR_PHASE = """
import json, os, resource, statistics, sys, time
sys.path.insert(0, {root!r})
{finder}
import psutil
try:
    from evoinstruct.agents.selection.pool_indexes import open_pool_indexes
except ModuleNotFoundError:  # a --baseline from before agents/selection/
    from evoinstruct.agents.pool_indexes import open_pool_indexes
from evoinstruct.agents.selector import SelectorConfig, select
from evoinstruct.store import open_store
import asyncio
mode, round_size = {mode!r}, {round_size}
store = open_store({pool!r})
config = SelectorConfig(steps=["exact_dedup", "near_dedup", "novelty"], constraints="off")
# Where the baseline re-ranks its postings: when the pool has grown by this factor.
config.novelty.reindex_growth = {growth}
proc = psutil.Process()
t = time.perf_counter()
if mode == "memory":  # what a daemon built at every start before the index file existed
    from evoinstruct.agents.selector import SelectorIndexes
    indexes = SelectorIndexes.build(store.iter_examples(status="accepted"), config)
else:
    indexes = open_pool_indexes(store, config)
index = indexes.dedup
out = {{"mode": mode, "open_s": round(time.perf_counter() - t, 2),
       "accepted": store.count_examples(status="accepted"), "rss_open_mib": proc.memory_info().rss >> 20}}
if mode == "grow":
    pending = [e.id for e in store.iter_examples(status="candidate", round=2)]
    times, shown = [], time.monotonic()
    for start in range(0, len(pending), round_size):
        store.set_status(pending[start : start + round_size], "accepted")
        t = time.perf_counter()
        index.index.sync()
        times.append(time.perf_counter() - t)
        if time.monotonic() - shown > 5:
            shown = time.monotonic()
            print(f"  grow: {{start + round_size:,}} of {{len(pending):,}} accepted, "
                  f"last sync {{times[-1]:.2f}} s", file=sys.stderr, flush=True)
    out.update(rounds=len(times), round_size=round_size,
               sync_median_s=round(statistics.median(times), 3), sync_max_s=round(max(times), 2),
               max_at_round=times.index(max(times)) + 1, accepted_after=len(index.index))
else:
    candidates = list(store.iter_examples(status="candidate", round=1))
    per = {{}}
    for step in ("exact_dedup", "near_dedup", "novelty"):
        cfg = config.model_copy(update={{"steps": [step]}})
        t = time.perf_counter()
        asyncio.run(select(candidates, {{}}, indexes, cfg, commit=False))
        per[step] = round((time.perf_counter() - t) / len(candidates) * 1000, 3)
    wall, cpu = [], []
    for c in candidates:
        t, c0 = time.perf_counter(), time.process_time()
        indexes.novelty.best_match(c.instruction, c.id)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    q = statistics.quantiles(wall, n=100)
    out.update(ms_per_candidate=per, novelty_wall_mean=round(statistics.fmean(wall), 3),
               novelty_wall_p50=round(q[49], 3), novelty_wall_p99=round(q[98], 3),
               novelty_cpu_mean=round(statistics.fmean(cpu), 3))
    if mode == "query":  # the file's LSH candidates against the banding rule on every item
        try:
            from evoinstruct.agents.selection.pool_dedup import check_lsh
        except ModuleNotFoundError:  # a --baseline from before agents/selection/
            from evoinstruct.agents.pool_dedup import check_lsh
        check = check_lsh(index.index, [c.instruction for c in candidates[:200]])
        out["lsh_mismatches"] = f"{{check.mismatches}} of {{check.probes}}"
out["work"] = dict(getattr(index, "index", None) and index.index.work or {{}})
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
out["rss_end_mib"] = proc.memory_info().rss >> 20
print(json.dumps(out))
"""

# (label, phase, key): the figures printed side by side for the baseline and this tree.
FIGURES = [
    ("build at start·N, s", "build", "open_s"),
    ("catch-up per round to N, median s", "grow", "sync_median_s"),
    ("catch-up per round to N, max s (the stall)", "grow", "sync_max_s"),
    ("re-ranks while growing", "grow", "reindexes"),
    ("novelty ms/candidate at N (grown file), wall mean", "query", "novelty_wall_mean"),
    ("  same, CPU mean", "query", "novelty_cpu_mean"),
    ("  same, wall p50 / p99", "query", "novelty_wall_p50/novelty_wall_p99"),
    ("exact / near ms/candidate at N", "query", "exact_dedup/near_dedup"),
    ("LSH candidates unlike a full banding scan", "query", "lsh_mismatches"),
    ("restart at N, s", "query", "open_s"),
    ("RSS after restart / peak, MiB", "query", "rss_open_mib/peak_rss_mib"),
    ("pool.selector.db at N (grown), MiB", "query", "file_mib"),
    ("build at N, s", "rebuild", "open_s"),
    ("novelty ms/candidate at N (rebuilt file), wall mean", "rebuild", "novelty_wall_mean"),
    ("  same, CPU mean", "rebuild", "novelty_cpu_mean"),
    ("peak RSS of the build at N, MiB", "rebuild", "peak_rss_mib"),
    ("pool.selector.db at N (rebuilt), MiB", "rebuild", "file_mib"),
]


def _figure(result: dict, key: str) -> str:
    values = []
    for part in key.split("/"):
        value = result.get(part, result.get("ms_per_candidate", {}).get(part))
        if value is None:
            value = result.get("work", {}).get(part, 0 if part == "reindexes" else "-")
        values.append(str(value))
    return " / ".join(values)


def bench_selector(
    n: int,
    candidates: int,
    baseline: str | None,
    round_size: int,
    memory: bool,
    start: float,
    rebuild: bool,
) -> None:
    """The persistent selector indexes over a pool growing from start·n to n accepted examples.

    Per tree (the baseline commit's, then this one), each phase in a fresh process:
    build the index over start·n accepted synthetic instructions; accept the rest in
    rounds of `round_size`, timing each round's catch-up; restart and time the exact,
    near and novelty stages on `candidates` fresh candidates; delete the file, rebuild
    it at n and time again. The baseline re-ranks every posting when the pool has grown
    by `reindex_growth` (2, a doubling): it is set to 1/start, so that the re-rank of an
    n-example pool, the work a doubling to n costs, falls inside the run. With `memory`,
    this tree's in-memory indexes too, built at every start (at start·n). Without
    `rebuild`, no rebuild at n (at a million, the build at start·n already took long).
    """
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pool = tmp_path / "pool.db"
        base = int(n * start)
        # 2% more to accept: a few synthetic texts repeat and are dropped, and the baseline
        # re-ranks only once the pool has really grown by 1/start.
        grow = n - base + n // 50
        setup = SELECTOR_SETUP.format(
            root=str(ROOT), base=base, grow=grow, k=candidates, pool=str(pool)
        )
        subprocess.run([sys.executable, "-c", setup], check=True)
        trees = [("new", ROOT)]
        if baseline:
            old = tmp_path / "baseline-tree"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", baseline], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            trees.insert(0, ("baseline", old))
        results: dict[str, dict[str, dict]] = {}
        for label, tree in trees:
            work = tmp_path / label
            work.mkdir()
            shutil.copy(pool, work / "pool.db")
            finder = "" if tree == ROOT else TREE_FINDER.format(tree=str(tree))
            results[label] = {}
            phases = ["build", "grow", "query"] + (["rebuild"] if rebuild else [])
            if memory and tree == ROOT:
                phases.insert(0, "memory")
            for phase in phases:
                sidecar = work / "pool.selector.db"
                if phase == "rebuild":
                    for path in work.glob("pool.selector.db*"):
                        path.unlink()
                code = SELECTOR_PHASE.format(
                    root=str(ROOT),
                    finder=finder,
                    mode=phase,
                    pool=str(work / "pool.db"),
                    round_size=round_size,
                    growth=1 / start,
                )
                print(f"{label}: {phase} ...", file=sys.stderr, flush=True)
                done = subprocess.run(
                    [sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, text=True
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                result["file_mib"] = sidecar.stat().st_size >> 20 if sidecar.exists() else 0
                results[label][phase] = result
                print(f"{label} {phase}: {json.dumps(result)}", flush=True)
        print(
            f"\nselector indexes, N = {n:,} (built at {start:g}·N, grown to N in rounds of "
            f"{round_size:,}; the baseline re-ranks at {1 / start:.3g}x growth):"
        )
        width = max(len(label) for label, _, _ in FIGURES)
        header = "".join(f"{label:>22}" for label, _ in trees)
        print(f"{'':{width}}{header}")
        for label, phase, key in FIGURES:
            if phase not in results[trees[0][0]]:
                continue
            cells = "".join(f"{_figure(results[t][phase], key):>22}" for t, _ in trees)
            print(f"{label:{width}}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--status-runs", type=int, default=7)
    parser.add_argument(
        "--selector", type=int, default=0, help="pool size for the selector index benchmark"
    )
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument(
        "--baseline", help="a commit whose selector indexes to measure beside this tree's"
    )
    parser.add_argument("--round-size", type=int, default=1000, help="examples accepted per round")
    parser.add_argument(
        "--memory", action="store_true", help="also the in-memory indexes (rebuilt at each start)"
    )
    parser.add_argument(
        "--grow-from", type=float, default=0.5, help="the share of N the index is built on"
    )
    parser.add_argument("--no-rebuild", action="store_true", help="no rebuild at N")
    args = parser.parse_args()
    if args.selector:
        bench_selector(
            args.selector,
            args.candidates,
            args.baseline,
            args.round_size,
            args.memory,
            args.grow_from,
            not args.no_rebuild,
        )
        return
    from evoinstruct.graph.project import init_project

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        project = init_project(tmp_path / "proj").root
        data = tmp_path / "big.jsonl"
        write_dataset(data, args.examples)
        result = run_import(project, data)
        size_mb = (project / "pool.db").stat().st_size / 2**20
        times = time_status(project, args.status_runs)
        print(
            f"import: {result['inserted']:,} examples in {result['seconds']:.1f} s "
            f"({result['inserted'] / result['seconds']:,.0f}/s), peak RSS {result['peak_rss_mb']:.0f} MiB, "
            f"pool.db {size_mb:.0f} MiB"
        )
        print(
            f"status --json: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms "
            f"over {len(times)} runs (target < 200 ms, process start included)"
        )


if __name__ == "__main__":
    main()
