"""Can the student learn to write instructions that survive? The generation half, measured alone.

The loop's students learn the generation task from a small share of their training mix
(`trainer.generation_share`): a Self-Instruct call's prompt answered with the tasks of
that call the loop accepted (Humpback-style self-curation, `trainer.generation_data`).
In the evolution bench's runs that is a handful of calls a version, and the promoted
student wrote no more accepted tasks per call than the base model. This bench asks how
far the same mechanism goes when the student is given enough of it:

1. a SmolLM2 project (offline, the weak-model profile) runs `--rounds` rounds in which
   the base model makes `--calls` Self-Instruct calls a round and nothing is evolved or
   trained (the base model answers the tasks it accepts, so they can be accepted);
2. one version trains with `--share` of its mix on the generation examples those calls
   left (the rest the loop's usual mix: the accepted examples, seeds, replay);
3. the base model and that version write tasks on the same `--measure-calls` demo sets,
   drawn from the pool as the generate step draws them, and their yields (tasks kept by
   the generator's filters and the pool's novelty check, per call) are compared call by
   call: paired bootstrap interval of the difference. The demo sets come from the pool
   the generation examples were made from: a version that writes back tasks it learned
   loses them to the novelty check, so the comparison leans against the trained version.

It prints the rounds' generate records (kept per call and the drop reasons), the mix the
version trained on, both generators' yields and drop reasons, the paired difference, and
writes `generator_training.json` in --out. Rounds and the version already made in --out
are reused (`--resume` adds no rounds; a finished version is measured again, or with
`--retrain` a new one is trained beside it).

Run: .venv/bin/python bench/generator_training.py --rounds 3 --calls 40 --share 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def make_rounds(args: argparse.Namespace, root: Path) -> Any:
    """The project in --out/project, with --rounds rounds of generation by the base model."""
    from evoinstruct.cli.progress import stage_text
    from evoinstruct.cli.real_demo import RealSettings, prepare_real_project
    from evoinstruct.graph.daemon.loop import DaemonOptions
    from evoinstruct.graph.daemon.runner import run_daemon
    from evoinstruct.graph.project import Project
    from evoinstruct.trainer.suite import ensure_suite

    if (root / "evoinstruct.toml").is_file():
        project = Project(root).require()
        rounds = 0 if args.resume else args.rounds
    else:
        settings = RealSettings(
            evolve=0,  # the generation half alone: no evolution, so no rejection sampling
            generate_calls=args.calls,
            seed_tasks=args.seed_tasks,
            answer_tokens=args.answer_tokens,
            min_new=10**9,  # no version inside the rounds: this bench trains one after them
        )
        project = prepare_real_project(root, settings, force=True)
        rounds = args.rounds
    with project.open_store() as store:
        # Before any round: the suite's prompts stay out of every training set.
        ensure_suite(store, project.load_config().trainer.suite)
    last = [time.monotonic()]

    def progress(kind: str, event: dict[str, Any]) -> None:
        if kind == "event" and event.get("final"):
            brief = {k: event[k] for k in ("done", "total", "accepted", "rejected") if k in event}
            say(f"round {event.get('round')} {event.get('stage')}: {json.dumps(brief)}")
            last[0] = time.monotonic()
        elif kind == "event" and time.monotonic() - last[0] >= 30:
            say(stage_text(event))
            last[0] = time.monotonic()
        elif kind == "note":
            say(event["text"])

    for _ in range(rounds):
        done = asyncio.run(run_daemon(project, [], DaemonOptions(rounds=1), progress))
        if done.stopped_by_signal:
            raise SystemExit(130)
    return project


def train_generator(project: Any, args: argparse.Namespace) -> str:
    """The version trained with --share of its mix on generation examples and --steps (made
    once: a later run with the same two measures it again)."""
    from evoinstruct.trainer.config import TrainerConfig
    from evoinstruct.trainer.progress import StepSay
    from evoinstruct.trainer.train import train

    wanted = {"generation_share": args.share, "max_steps": args.steps}
    with project.open_store() as store:
        for row in [] if args.retrain else store.model_versions():
            if all(row["config"].get(k) == v for k, v in wanted.items()):
                say(f"{row['version']} (round {row['round']}) trained earlier with {wanted}")
                return row["version"]
    # Validated, not copied: the shares must leave room for new examples.
    cfg = TrainerConfig.model_validate({**project.load_config().trainer.model_dump(), **wanted})
    result = train(cfg, project.root, callbacks=[StepSay(say, "generator version")])
    say(f"trained {result.version}: train loss {result.metrics.get('train_loss')}")
    return result.version


def mix_counts(project: Any, version: str) -> dict[str, int]:
    """How many examples of each role (new, seed, replay, generation) the version trained on."""
    with project.open_store() as store:
        return dict(store.model_version(version)["metrics"]["examples"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of generation")
    parser.add_argument("--calls", type=int, default=40, help="Self-Instruct calls a round")
    parser.add_argument("--share", type=float, default=0.5, help="generation share of the mix")
    parser.add_argument("--steps", type=int, default=60, help="LoRA optimizer steps")
    parser.add_argument("--measure-calls", type=int, default=48, help="shared demo sets")
    parser.add_argument("--seed-tasks", type=int, default=200, help="packaged task prompts seeded")
    parser.add_argument("--answer-tokens", type=int, default=160, help="token limit per answer")
    parser.add_argument("--resume", action="store_true", help="no new rounds on --out's project")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="a new version even if one with --share and --steps exists",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "generator_training"))
    args = parser.parse_args()
    from evoinstruct.models.threads import sleep_idle_threads

    sleep_idle_threads()  # as the product runs: idle OpenMP threads sleep
    import torch

    torch.set_num_threads(args.threads)
    from evoinstruct.cli.generator_measure import measure_generators
    from evoinstruct.cli.progress import quiet_libraries

    quiet_libraries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    project = make_rounds(args, out / "project")
    say(f"rounds done in {time.monotonic() - started:.0f} s")
    version = train_generator(project, args)
    mix = mix_counts(project, version)
    say(f"{version} trained on {json.dumps(mix)}")
    say(f"measuring: base vs {version} on {args.measure_calls} shared demo sets")
    measured = asyncio.run(measure_generators(project, [version], calls=args.measure_calls))
    for row in measured["record"]:
        say(f"record: {json.dumps(row)}")
    for label, score in measured["scores"].items():
        say(f"{label}: {json.dumps(score)}")
    (paired,) = measured["paired"]
    say(
        f"{version} - base: {paired['diff']:+.2f} kept tasks per call "
        f"(95% CI {paired['low']:+.2f}..{paired['high']:+.2f}, p={paired['p_value']:.3g}; "
        f"{paired['calls_better']} calls better, {paired['calls_worse']} worse)"
    )
    report = {
        "args": vars(args),
        "version": version,
        "mix": mix,
        "measured": measured,
        "seconds": time.monotonic() - started,
    }
    (out / "generator_training.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
