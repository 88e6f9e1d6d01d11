"""Store at scale: import 200,000 examples from one file, then time `status --json`.

Prints: import seconds, examples/s, peak RSS of the importing process, pool.db
size, and the latency of `evoinstruct status --json` (median and max of runs),
whose target is under 200 ms.

With `--selector N`: the selector's indexes over a pool of N accepted synthetic
English/Chinese instructions (bench/novelty.py's generator, with planted near
copies), in memory (rebuilt at every start) against the persistent index file
(agents.pool_index). Each measurement runs in a fresh process and prints build
or open seconds, per-candidate query time of the exact, near and novelty
stages on candidates not in the pool, and the process's RSS; the restart run
also checks the file's LSH candidates against an exhaustive banding scan.

    .venv/bin/python bench/store_scale.py --selector 100000
    .venv/bin/python bench/store_scale.py --selector 1000000 --skip-memory
"""

from __future__ import annotations

import argparse
import json
import random
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


SELECTOR_SETUP = """
import sys, time
sys.path.insert(0, {root!r})
from bench.novelty import synthetic_instructions
from evoinstruct.store import open_store
from evoinstruct.store.records import ExampleDraft
items = synthetic_instructions({n} + {k}, seed=0)
t = time.perf_counter()
with open_store({pool!r}) as store:
    for start in range(0, {n}, 10000):
        batch = items[start : min(start + 10000, {n})]
        store.add_candidates([ExampleDraft(text, output="answer " + i, source="seed") for i, text in batch], round=0)
    store.add_candidates([ExampleDraft(text, output="new") for _, text in items[{n}:]], round=1)
print("pool written in", round(time.perf_counter() - t, 1), "s")
"""

SELECTOR_RUN = """
import asyncio, json, resource, sys, time
import psutil
sys.path.insert(0, {root!r})
from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes, select
from evoinstruct.store import open_store
mode = {mode!r}
store = open_store({pool!r})
config = SelectorConfig(steps=["exact_dedup", "near_dedup", "novelty"], constraints="off")
rss0 = psutil.Process().memory_info().rss
t = time.perf_counter()
if mode == "memory":
    indexes = SelectorIndexes.build(store.iter_examples(status="accepted"), config)
else:
    from evoinstruct.agents.pool_index import open_pool_indexes
    indexes = open_pool_indexes(store, config)
opened = time.perf_counter() - t
rss_open = psutil.Process().memory_info().rss
candidates = list(store.iter_examples(status="candidate"))
per = {{}}
for step in ("exact_dedup", "near_dedup", "novelty"):
    cfg = config.model_copy(update={{"steps": [step]}})
    t = time.perf_counter()
    out = asyncio.run(select(candidates, {{}}, indexes, cfg, commit=False))
    per[step] = (time.perf_counter() - t) / len(candidates) * 1000
    per[step + "_rejected"] = len(out.rejections)
result = {{"mode": mode, "open_s": round(opened, 2), "rss_base_mib": rss0 >> 20,
  "rss_open_mib": rss_open >> 20, "rss_end_mib": psutil.Process().memory_info().rss >> 20,
  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10,
  "ms_per_candidate": {{k: round(v, 3) for k, v in per.items()}}}}
if mode != "memory":
    index = indexes.dedup.index
    result["work"] = dict(index.work)
    if mode == "restart":
        from evoinstruct.agents.pool_dedup import check_lsh
        t = time.perf_counter()
        index.reindex()
        result["reindex_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        check = check_lsh(index, [c.instruction for c in candidates[:200]])
        result["lsh_check"] = {{"probes": check.probes, "candidates": check.candidates,
          "mismatches": check.mismatches, "seconds": round(time.perf_counter() - t, 1)}}
print(json.dumps(result))
"""


def bench_selector(n: int, candidates: int, skip_memory: bool) -> None:
    """In-memory vs persistent selector indexes over n accepted examples (see the docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        pool = str(Path(tmp) / "pool.db")
        setup = SELECTOR_SETUP.format(root=str(ROOT), n=n, k=candidates, pool=pool)
        print(
            subprocess.run(
                [sys.executable, "-c", setup], check=True, capture_output=True, text=True
            ).stdout.strip()
        )
        modes = ["build", "restart"] if skip_memory else ["memory", "build", "restart"]
        for mode in modes:
            code = SELECTOR_RUN.format(root=str(ROOT), mode=mode, pool=pool)
            out = subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True
            )
            print(out.stdout.strip().splitlines()[-1], flush=True)
        sizes = {p.name: p.stat().st_size >> 20 for p in Path(tmp).iterdir()}
        print("files (MiB):", json.dumps(sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--status-runs", type=int, default=7)
    parser.add_argument(
        "--selector", type=int, default=0, help="pool size for the selector index benchmark"
    )
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--skip-memory", action="store_true", help="no in-memory run (too big)")
    args = parser.parse_args()
    if args.selector:
        bench_selector(args.selector, args.candidates, args.skip_memory)
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
