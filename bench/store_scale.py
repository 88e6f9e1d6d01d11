"""Store at scale: import 200,000 examples from one file, then time `status --json`.

Prints: import seconds, examples/s, peak RSS of the importing process, pool.db
size, and the latency of `evoinstruct status --json` (median and max of runs),
whose target is under 200 ms.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--status-runs", type=int, default=7)
    args = parser.parse_args()
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
