"""In-process generation speed on SmolLM2-135M-Instruct: today's settings beside the new ones.

Two workloads, both through the backend's own `generate` (what the loop calls):
  suite      held-out suite prompts (packaged English tasks with 1-2 constraints), greedy,
             160 new tokens, in generate calls of --suite-batch requests (evaluate_suite's way);
  sampling   one rejection-sampling round: the responder's `respond()` on constrained tasks
             (packaged real-demo tasks, constraints attached by add_verifiable), --samples
             answers each at T=0.8 and 160 new tokens.

Configurations (`--configs`, name=engine:dtype_or_compute:batch_size):
  before     torch, bfloat16, batch 16 (main's SmolLM2 settings before this change)
  torch32    torch, float32 (the bfloat16 folder up-cast, exactly), batch 16
  ct2        ctranslate2 float32, batch 16
  ct2int8    ctranslate2 int8, batch 16

Each repeat runs every configuration once on the same workload, in turn (paired: whatever
else runs on the machine at that moment weighs on all of them alike); medians over repeats.
Tokens/s counts completion tokens (what the rows produced up to their end, not padding)
over wall seconds; per CPU second too (the process's own CPU, all threads), the figure less
moved by other work. The greedy suite answers of each configuration are compared with the
reference (torch float32, --reference) and scored with the suite's own checks, so a
difference in answers shows with its effect on accuracy.

    .venv/bin/python bench/inference.py [--suite 32] [--tasks 8] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIGS = (
    "before=torch:bfloat16:16,torch32=torch:float32:16,ct2=ctranslate2:float32:16,"
    "ct2int8=ctranslate2:int8:16"
)


@dataclass(frozen=True)
class Setup:
    name: str
    engine: str
    precision: str  # torch dtype, or ctranslate2 compute type
    batch_size: int

    @classmethod
    def parse(cls, text: str) -> Setup:
        name, _, spec = text.partition("=")
        engine, precision, batch = spec.split(":")
        return cls(name.strip(), engine, precision, int(batch))

    def model_config(self, path: Path) -> Any:
        from evoinstruct.models.config import ModelConfig

        fields: dict[str, Any] = {"engine": self.engine, "batch_size": self.batch_size}
        if self.engine == "torch":
            fields["dtype"] = self.precision
        else:
            fields.update(dtype="float32", engine_compute_type=self.precision)
        return ModelConfig(backend="transformers", path=str(path), device="cpu", **fields)


def suite_workload(n: int, max_tokens: int) -> tuple[Any, list[Any]]:
    from evoinstruct.trainer.config import SuiteConfig
    from evoinstruct.trainer.suite import Suite, packaged_tasks, task_item
    from evoinstruct.trainer.verifiable import suite_requests

    cfg = SuiteConfig(languages=["en"], max_constraints=2)
    tasks = [t for t in packaged_tasks() if t["language"] == "en"][:n]
    suite = Suite("bench", tuple(task_item(t, cfg) for t in tasks))
    return suite, suite_requests(suite, max_tokens)


def sampling_workload(n: int, seed: int = 0) -> list[Any]:
    """Constrained tasks as a round hands them to the responder (add_verifiable children)."""
    from importlib import resources

    from evoinstruct.agents.evolver import EvolverConfig, evolve
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.store.records import Example

    text = (resources.files("evoinstruct.prompts") / "seeds" / "real_demo_tasks_en.txt").read_text(
        encoding="utf-8"
    )
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    rng = Random(seed)
    parents = [Example(id=f"p{i}", instruction=t) for i, t in enumerate(rng.sample(lines, n))]
    config = EvolverConfig(operations=["add_verifiable"])
    config.verifiable.max_count = 2
    # add_verifiable makes no model call: no model is needed to draw the children.
    return asyncio.run(evolve(parents, None, PromptLibrary("en"), config, rng)).drafts  # type: ignore[arg-type]


def timed(run: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_suite(model: Any, requests: list[Any], batch: int) -> list[Any]:
    async def go() -> list[Any]:
        answers: list[Any] = []
        for at in range(0, len(requests), batch):
            answers.extend(await model.generate(requests[at : at + batch]))
        return answers

    return asyncio.run(go())


def run_sampling(model: Any, drafts: list[Any], samples: int, max_tokens: int) -> Any:
    from evoinstruct.agents.responder import ResponderConfig, respond
    from evoinstruct.prompts.library import PromptLibrary

    config = ResponderConfig(
        verifiable_samples=samples,
        verifiable_temperature=0.8,
        max_tokens=max_tokens,
        pick="shortest",
        repair=True,
    )
    # The responder's one generate() call; its token counts come from the backend.
    counted: list[Any] = []

    class Counting:
        model_id, adapter_version, adapter_digest = model.model_id, None, None

        async def generate(self, requests: list[Any]) -> list[Any]:
            results = await model.generate(requests)
            counted.extend(results)
            return results

    outcome = asyncio.run(respond(drafts, Counting(), PromptLibrary("en"), config, Random(0)))  # type: ignore[arg-type]
    return outcome, counted


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument(
        "--reference",
        default="torch32",
        help="configuration whose greedy answers are the reference",
    )
    parser.add_argument(
        "--baseline", default="before", help="configuration the speed-ups are relative to"
    )
    parser.add_argument("--suite", type=int, default=32, help="suite prompts")
    parser.add_argument(
        "--suite-batch",
        type=int,
        default=16,
        help="requests per generate call (trainer.suite.batch_size)",
    )
    parser.add_argument(
        "--tasks", type=int, default=8, help="constrained tasks in the sampling round"
    )
    parser.add_argument("--samples", type=int, default=6, help="answers per task")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch (and ctranslate2) threads")
    parser.add_argument("--workloads", default="suite,sampling")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from evoinstruct.models.threads import sleep_idle_threads

    sleep_idle_threads()  # as the product runs: idle OpenMP threads sleep
    import torch

    torch.set_num_threads(args.threads)
    from evoinstruct.cli.progress import quiet_libraries
    from evoinstruct.models.smollm2 import fetch_smollm2
    from evoinstruct.models.transformers_backend import TransformersModel
    from evoinstruct.trainer.verifiable import score_answers

    quiet_libraries()
    path = fetch_smollm2(dtype="bfloat16", progress=print)
    setups = [Setup.parse(c) for c in args.configs.split(",") if c.strip()]
    names = [s.name for s in setups]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    suite, requests = suite_workload(args.suite, args.max_tokens)
    drafts = sampling_workload(args.tasks)
    print(
        f"suite: {len(requests)} prompts, greedy, {args.max_tokens} tokens, calls of "
        f"{args.suite_batch}; sampling: {len(drafts)} tasks x {args.samples} answers, T=0.8; "
        f"{args.threads} thread(s), {args.repeats} repeats",
        flush=True,
    )
    models = {}
    for setup in setups:  # loaded (and converted, the first time) before any timing
        models[setup.name] = TransformersModel(setup.model_config(path))
        run_suite(models[setup.name], requests[:2], 2)  # warm-up: conversion, first load
    rates: dict[str, dict[str, list[float]]] = {w: {n: [] for n in names} for w in workloads}
    per_cpu: dict[str, dict[str, list[float]]] = {w: {n: [] for n in names} for w in workloads}
    answers: dict[str, list[Any]] = {}
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]  # neither goes first every time
        for workload in workloads:
            for name in order:
                setup = next(s for s in setups if s.name == name)
                model = models[name]
                if workload == "suite":
                    out, wall, cpu = timed(
                        lambda m=model, b=setup: run_suite(m, requests, args.suite_batch)
                    )
                    answers[name] = out
                    tokens = sum(r.completion_tokens for r in out)
                else:
                    (_, results), wall, cpu = timed(
                        lambda m=model: run_sampling(m, drafts, args.samples, args.max_tokens)
                    )
                    tokens = sum(r.completion_tokens for r in results)
                rates[workload][name].append(tokens / wall)
                per_cpu[workload][name].append(tokens / max(cpu, 1e-9))
                print(
                    f"  repeat {rep + 1} {workload:8s} {name:8s} {tokens:6d} tokens "
                    f"{wall:7.1f} s  {tokens / wall:6.1f} tok/s  {tokens / max(cpu, 1e-9):6.1f} tok/CPU-s",
                    flush=True,
                )
    report: dict[str, Any] = {"settings": vars(args), "workloads": {}}
    print(f"\nmedians over {args.repeats} repeats (x = speed-up over {args.baseline}, same run)")
    for workload in workloads:
        base = median(rates[workload].get(args.baseline, []))
        base_cpu = median(per_cpu[workload].get(args.baseline, []))
        print(f"{workload}:")
        report["workloads"][workload] = {}
        for name in names:
            rate, cpu_rate = median(rates[workload][name]), median(per_cpu[workload][name])
            print(
                f"  {name:8s} {rate:7.1f} tok/s  x{rate / base:4.1f}   "
                f"{cpu_rate:7.1f} tok/CPU-s  x{cpu_rate / base_cpu:4.1f}"
            )
            report["workloads"][workload][name] = {
                "tok_s": rates[workload][name],
                "tok_cpu_s": per_cpu[workload][name],
                "median_tok_s": rate,
                "median_tok_cpu_s": cpu_rate,
            }
    if "suite" in workloads and args.reference in answers:
        ref = answers[args.reference]
        print(f"greedy suite answers against {args.reference} ({len(ref)} prompts):")
        report["agreement"] = {}
        for name in names:
            got = answers[name]
            same = sum(
                a.choices == b.choices for a, b in zip(got, ref, strict=True) if a.ok and b.ok
            )
            outcomes = score_answers(suite, got)
            passed = sum(all(o.strict) for o in outcomes if o.answered)
            print(
                f"  {name:8s} identical {same}/{len(ref)}   prompt-level strict "
                f"{passed}/{len(outcomes)}"
            )
            report["agreement"][name] = {"identical": same, "passed": passed, "n": len(ref)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
