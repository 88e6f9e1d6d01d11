"""Benchmark: LoRA training throughput on the tiny llama, with and without packing.

The data set has skewed lengths (most answers short, a few long), the case
where padding wastes most of a batch and packing should pay off. Each
configuration runs one epoch over the same examples in its own process, so
its peak RSS is its own. Prints one line per configuration and a JSON summary.

    .venv/bin/python bench/train.py [--examples 400] [--max-length 512] [--threads 1]

Tokens/s counts real (non-padding) tokens trained per second of Trainer
runtime. One torch thread by default: on a shared 2-core machine two threads
contend with everything else and run several times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = "the sea sky water prime number book Paris capital France poem spring 春天 天空 北京 读书".split()


def skewed_drafts(n: int, seed: int = 0):
    """Answers whose lengths follow a heavy-tailed (Pareto) distribution, capped at ~450 words."""
    from evoinstruct.store.records import ExampleDraft

    rng = random.Random(seed)
    drafts = []
    for i in range(n):
        words = min(450, int(4 * rng.paretovariate(1.1)))
        answer = " ".join(rng.choice(WORDS) for _ in range(words))
        drafts.append(
            ExampleDraft(instruction=f"Write about item {i}: {rng.choice(WORDS)}.", output=answer)
        )
    return drafts


def run_one(args: argparse.Namespace) -> dict:
    """One training run in this process; returns its figures."""
    from evoinstruct.models.threads import sleep_idle_threads

    sleep_idle_threads()  # as the product runs: idle OpenMP threads sleep
    import torch

    from evoinstruct.store import open_store
    from evoinstruct.trainer.config import TrainerConfig
    from evoinstruct.trainer.train import train

    torch.set_num_threads(args.threads)
    project = Path(args.workdir) / ("packed" if args.packing else "padded")
    store = open_store(project / "pool.db")
    ids = store.add_candidates(skewed_drafts(args.examples), 1).ids
    store.set_status(ids, "accepted")
    cfg = TrainerConfig(
        base_model=args.model,
        device="cpu",
        epochs=1,
        batch_size=args.batch_size,
        grad_accumulation=1,
        max_length=args.max_length,
        packing=args.packing,
        heldout_fraction=0.0,
        seed_share=0.0,
        save_steps=100_000,
        logging_steps=10,
    )
    result = train(cfg, project, store=store)
    store.close()
    metrics = result.metrics
    tokens = metrics["tokenization"]["tokens"]
    return {
        "packing": args.packing,
        "examples": metrics["tokenization"]["examples"],
        "truncated": metrics["tokenization"]["truncated"],
        "rows": metrics["tokenization"]["blocks"] or metrics["tokenization"]["examples"],
        "steps": metrics["global_step"],
        "tokens": tokens,
        "tokens_seen": metrics["tokens_seen"],
        "runtime_s": round(metrics["train_runtime_s"], 2),
        "tokens_per_s": round(metrics["tokens_seen"] / metrics["train_runtime_s"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--packing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return

    from transformers.utils import logging as hf_logging

    from evoinstruct.models.tiny import DEFAULT_CORPUS, build_tiny_llama

    hf_logging.disable_progress_bar()

    with tempfile.TemporaryDirectory() as workdir:
        model = build_tiny_llama(
            Path(workdir) / "tiny",
            corpus=[*DEFAULT_CORPUS, " ".join(WORDS)],
            hidden_size=args.hidden_size,
        )
        results = []
        for packing in (False, True):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--model", str(model),
                "--workdir", workdir,
                "--examples", str(args.examples),
                "--max-length", str(args.max_length),
                "--batch-size", str(args.batch_size),
                "--threads", str(args.threads),
            ]  # fmt: skip
            if packing:
                cmd.append("--packing")
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(row)
            print(
                f"packing={row['packing']!s:5}  rows={row['rows']:4}  steps={row['steps']:3}  "
                f"tokens={row['tokens']:6}  {row['tokens_per_s']:8.1f} tokens/s  "
                f"runtime={row['runtime_s']:6.2f}s  peak RSS={row['peak_rss_mb']:.0f} MB  "
                f"truncated={row['truncated']}"
            )
        speedup = results[1]["tokens_per_s"] / results[0]["tokens_per_s"]
        print(f"packing speed-up: {speedup:.2f}x")
        print(json.dumps({"runs": results, "packing_speedup": round(speedup, 2)}))


if __name__ == "__main__":
    main()
