"""Seed import of a JSON array against the same rows as JSON Lines.

Writes N synthetic bilingual Alpaca rows (default 52,002, the size of
alpaca_data.json, as an indented array like that file) in both containers, then
prints for each: seconds to read and check the file (`read_seed_file`, the fastest
of --repeat runs) and seconds for the whole import into a fresh project
(`add_seed_file`, what `seed add` runs).
Reading an array used to rescan the text for every record's line number: minutes
for 52k rows, where JSON Lines took about a second. The two should now be close.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VERBS_EN = "Explain Describe Compare List Summarize Translate Classify Rewrite".split()
TOPICS_EN = "rivers markets poems databases gardens trains budgets galaxies".split()
VERBS_ZH = ["解释", "描述", "比较", "列出", "总结", "翻译", "分类", "改写"]
TOPICS_ZH = ["河流", "市场", "诗歌", "数据库", "花园", "火车", "预算", "星系"]


def rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2:
            instruction = f"{rng.choice(VERBS_ZH)}{rng.choice(TOPICS_ZH)}：第{i}个问题。"
            output = "答案：" + "这是一个测试句子。" * rng.randint(2, 30)
        else:
            instruction = f"{rng.choice(VERBS_EN)} {rng.choice(TOPICS_EN)}, case {i}."
            output = "Answer: " + "a short test sentence. " * rng.randint(2, 30)
        # Half the rows carry an input, as in alpaca_data.json; U+2028 is kept inside.
        text_input = f"Context {i}\u2028line two" if i % 4 == 0 else ""
        out.append({"instruction": instruction, "input": text_input, "output": output})
    return out


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=52_002)
    parser.add_argument("--repeat", type=int, default=3, help="reads timed; the fastest counts")
    args = parser.parse_args()
    from evoinstruct.graph.project import init_project
    from evoinstruct.store import open_store
    from evoinstruct.store.seeds import add_seed_file, read_seed_file

    data = rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        array = tmp_path / "alpaca_data.json"
        array.write_text(json.dumps(data, ensure_ascii=False, indent=4), encoding="utf-8")
        lines = tmp_path / "alpaca_data.jsonl"
        lines.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8"
        )
        results = {}
        for name, path in (("json-array", array), ("jsonl", lines)):
            read_s = float("inf")
            for _ in range(args.repeat):  # the fastest of a few: the machine is shared
                seconds, seeds = timed(read_seed_file, path)
                assert len(seeds.drafts) == args.rows
                read_s = min(read_s, seconds)
            project = init_project(tmp_path / f"proj-{name}").root
            with open_store(project / "pool.db") as store:
                import_s, report = timed(add_seed_file, store, path)
            assert report.inserted == args.rows, report
            size = path.stat().st_size / 2**20
            results[name] = (read_s, import_s)
            print(
                f"{name:10s} {args.rows:,} rows, {size:.1f} MiB: "
                f"read {read_s:.2f} s, import (read + write) {import_s:.2f} s"
            )
        ratio = results["json-array"][0] / results["jsonl"][0]
        print(f"read time, JSON array / JSONL: {ratio:.2f}x")


if __name__ == "__main__":
    main()
