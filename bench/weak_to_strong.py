"""Benchmark: weak-to-strong supervision offline, SmolLM2-135M-Instruct supervised by a cut copy.

Prints the weak supervisor, the untuned strong model, the strong student trained on the
weak model's labels and the one trained on verified answers (the ceiling), each on the
held-out suite with a 95% interval, the paired gaps, and PGR with its joint bootstrap
interval; writes them to OUT/weak_to_strong.json and draws OUT/weak_to_strong.png (the
report's figure). What runs:

1. the weak model: `make_weak_smollm2()` (cached in the model cache; made once by
   `python -m evoinstruct.trainer weak-model`, recipe in evoinstruct.trainer.weak_model);
2. a project in OUT/project whose config makes the full SmolLM2 (float32, on the CPU) the
   teacher and the student, the weak model `[models.weak]` (`roles.weak`), and
   `[weak_to_strong]` the experiment's settings;
3. its pool: the half of the packaged tasks the weak model never saw, each with `--draws`
   constraint draws, answered by the full model through the responder (`--samples`
   answers, repair, the shortest passing one); only verified answers are accepted;
4. the experiment (`trainer.weak_to_strong.run_weak_to_strong`, students trained here).

    .venv/bin/python bench/weak_to_strong.py --out OUT [--suite 100] [--draws 2] \\
        [--samples 4] [--answer-tokens 160] [--steps 60] [--threads 1]

Run again with the same OUT to continue a killed run (the pool, the labels, a trained
student and every suite result are kept), or to print and plot a finished one again.
One torch thread by default: on a shared 2-core machine two threads contend and run
many times slower.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

MODELS_SHOWN = {
    "weak": "weak supervisor",
    "strong_base": "strong, untuned",
    "strong_on_weak": "strong on weak labels",
    "ceiling": "ceiling (verified answers)",
}


def overrides(weak_dir: Path, strong_dir: Path, args: argparse.Namespace) -> list[str]:
    """The project's settings: SmolLM2's tables, the weak model, the trainer and the suite."""
    from evoinstruct.models.smollm2 import config_overrides, served_table

    weak = served_table(weak_dir, dtype="float32")  # served as the strong model is
    return [
        *config_overrides(strong_dir, dtype="float32"),
        *(f"models.weak.{k}={json.dumps(v)}" for k, v in weak.items()),
        "models.teacher.batch_size=16",
        "models.student.batch_size=16",
        'roles.weak="weak"',
        "weak_to_strong.enabled=true",
        "weak_to_strong.prompts=1000",
        f"weak_to_strong.max_tokens={args.answer_tokens}",
        "weak_to_strong.batch_size=16",
        f"responder.verifiable_samples={args.samples}",
        "responder.verifiable_temperature=0.8",
        f"responder.max_tokens={args.answer_tokens}",
        "responder.repair=true",
        'responder.pick="shortest"',
        f"trainer.max_steps={args.steps}",
        "trainer.batch_size=4",
        "trainer.grad_accumulation=2",
        "trainer.learning_rate=0.0005",
        "trainer.max_length=384",
        "trainer.save_steps=20",
        # No version is trained here: every verified prompt may serve the experiment.
        "trainer.heldout_fraction=0.0",
        'trainer.suite.languages=["en"]',
        f"trainer.suite.tasks_per_language={args.suite}",
        "trainer.suite.max_tokens=160",
        "trainer.suite.batch_size=16",
    ]


def say(text: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.0f}s] {text}", flush=True)


def prepare(args: argparse.Namespace, started: float) -> Any:
    """The project in OUT/project, its config written (made on the first run only)."""
    from evoinstruct.graph.config_toml import render_toml
    from evoinstruct.graph.project import CONFIG_HEADER, Project, init_project
    from evoinstruct.models.smollm2 import fetch_smollm2
    from evoinstruct.trainer.weak_model import make_weak_smollm2

    weak_dir = args.weak or make_weak_smollm2(progress=lambda m: say(m, started))
    strong_dir = fetch_smollm2(dtype="float32")
    root = args.out / "project"
    if (root / "evoinstruct.toml").is_file():
        return Project(root.resolve()).require()
    project = init_project(root)
    config = project.load_config(overrides(weak_dir, strong_dir, args))
    project.config_path.write_text(render_toml(config, CONFIG_HEADER), encoding="utf-8")
    return project


async def fill_pool(deps: Any, args: argparse.Namespace, started: float) -> dict[str, int]:
    """The verified pool on the tasks the weak model never saw (skipped when it is there)."""
    from evoinstruct.trainer.verified_data import add_verified
    from evoinstruct.trainer.weak_model import packaged_tasks, split_tasks

    done = args.out / "pool.json"  # written once the pool is complete
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    tasks = split_tasks(packaged_tasks())[1][: args.tasks]
    say(f"pool: {len(tasks)} tasks x {args.draws} constraint draws, answered by the full model",
        started)  # fmt: skip
    counts = await add_verified(
        deps.store, tasks, deps.models.for_role("responder"), deps.prompts, deps.config.responder,
        draws=args.draws, max_constraints=args.max_constraints, seed=deps.config.project.seed,
        batch_size=16, progress=lambda stage, done, total: say(f"{stage}: {done}/{total}", started),
    )  # fmt: skip
    counts["seconds"] = round(time.monotonic() - started)
    done.write_text(json.dumps(counts), encoding="utf-8")
    return counts


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.trainer.progress import StepSay
    from evoinstruct.trainer.weak_to_strong import run_weak_to_strong, train_in_process
    from evoinstruct.trainer.weak_to_strong_config import KIND

    started = time.monotonic()
    # In a thread: making the weak model runs an event loop of its own.
    project = await asyncio.to_thread(prepare, args, started)
    config = project.load_config()
    deps = deps_for_project(project, config)
    try:
        finished = [r for r in deps.store.experiments(KIND) if r["result"]]
        if finished:
            say(f"{finished[-1]['name']} finished earlier; printing it", started)
            return {"result": finished[-1]["result"], "pool": None}
        pool = await fill_pool(deps, args, started)
        say(f"pool: {pool}", started)
        trainer = config.trainer
        result = await run_weak_to_strong(
            deps.store, deps.models, deps.prompts, trainer, config.weak_to_strong, project.root,
            train=train_in_process(
                trainer, project.root, deps.store, [StepSay(lambda m: say(m, started), "training")]
            ),
            progress=lambda stage, done, total: say(f"{stage}: {done}/{total}", started),
        )  # fmt: skip
        return {"result": result, "pool": pool, "seconds": time.monotonic() - started}
    finally:
        await deps.models.aclose()
        deps.store.close()


def _interval(found: dict[str, float]) -> str:
    return f"{100 * found['value']:5.1f}% [{100 * found['low']:.1f}, {100 * found['high']:.1f}]"


def print_result(result: dict[str, Any]) -> None:
    from evoinstruct.trainer.pgr import pgr_text
    from evoinstruct.trainer.weak_to_strong import PAIRS

    metric = result["metric"]
    everything = result["pgr"]["all"]
    print(f"\n{result['name']}: {metric} on {everything['n']} suite prompts")
    for key, label in MODELS_SHOWN.items():
        print(f"  {label:28} {_interval(everything['accuracy'][key])}")
    print(f"  {'PGR':28} {pgr_text(everything)}")
    for a, b in PAIRS:
        name, paired = f"{a} - {b}", result["paired"][f"{a} - {b}"]
        print(
            f"  {name:28} {100 * paired['diff']:+5.1f} points "
            f"[{100 * paired['low']:+.1f}, {100 * paired['high']:+.1f}], p={paired['p_value']:.3g}"
        )
    for part, found in result["pgr"].get("by_part", {}).items():
        print(f"  part {part} (n={found['n']}): PGR {pgr_text(found)}")
    labels = result["labels"]
    print(
        f"  trained on {labels['answered']} prompts; weak labels cut at the token limit: "
        f"{labels['truncated']}"
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from evoinstruct.cli.report.plot_base import _plotting
    from evoinstruct.cli.report.plots_weak_to_strong import plot_weak_to_strong

    with _plotting():
        plot_weak_to_strong([result]).savefig(path, dpi=110, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="working directory (resumable)")
    parser.add_argument("--suite", type=int, default=100, help="English suite tasks")
    parser.add_argument(
        "--tasks", type=int, default=None, help="pool tasks (default: all of the other half)"
    )
    parser.add_argument("--draws", type=int, default=2, help="constraint draws per pool task")
    parser.add_argument("--samples", type=int, default=4, help="answers drawn per prompt")
    parser.add_argument("--max-constraints", type=int, default=2)
    parser.add_argument("--answer-tokens", type=int, default=160, help="answers and weak labels")
    parser.add_argument("--steps", type=int, default=60, help="LoRA steps of each student")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--weak", type=Path, default=None, help="a weak model folder (default: the recipe's)"
    )
    args = parser.parse_args()

    from evoinstruct.models.threads import sleep_idle_threads

    sleep_idle_threads()  # as the product runs: idle OpenMP threads sleep
    import torch

    from evoinstruct.cli.progress import quiet_libraries

    torch.set_num_threads(args.threads)
    quiet_libraries()  # as the CLI: no load report when the second student's adapter loads
    args.out.mkdir(parents=True, exist_ok=True)
    done = asyncio.run(run(args))
    result = done["result"]
    print_result(result)
    args.out.joinpath("weak_to_strong.json").write_text(
        json.dumps({**done, "settings": vars(args)}, indent=2, default=str),
        encoding="utf-8",
    )
    plot(result, args.out / "weak_to_strong.png")
    print(f"\nwrote {args.out / 'weak_to_strong.json'} and {args.out / 'weak_to_strong.png'}")


if __name__ == "__main__":
    main()
