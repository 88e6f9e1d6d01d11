"""The loop on a real model, offline: SmolLM2-135M-Instruct as teacher and student.

`evoinstruct demo --real` and `bench/evolution.py` share these settings: what makes a weak
model produce something worth keeping. Sampled decoding; verifiable constraints attached by
the evolver and checked in code, so no capable judge is needed (a 135M judge parses as a
score about one time in ten); rejection sampling by the responder, with format constraints
repaired in code when no answer meets them; a LoRA version trained every round; and the
promotion gate deciding on the project's held-out verifiable suite.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from evoinstruct.graph.daemon.loop import DaemonOptions, ProgressSink
from evoinstruct.graph.project import Project, init_project

# Plain English task prompts for the seeds (a packaged text file, ~100 lines): the packaged
# seeds hold 8 English tasks, too few parents for rounds of evolution. The held-out suite
# comes from another packaged list, and its builder drops any task sharing an n-gram with
# the pool, so these cannot leak into it.
REAL_TASKS_FILE = "real_demo_tasks_en.txt"


@dataclass
class RealSettings:
    """How much one round does; the demo uses small numbers, the benchmark larger ones."""

    evolve: int = 16  # evolutions per round
    samples: int = 4  # answers drawn per constrained task (rejection sampling)
    steps: int = 30  # LoRA optimizer steps per version
    # New accepted examples a version waits for: 60 steps on a couple of dozen examples is
    # twenty epochs, and such a version mostly unlearns (measured: v1 on 23 examples).
    min_new: int = 10
    suite: int = 40  # held-out English suite prompts
    max_constraints: int = 3  # registry constraints attached per child, at most
    # A 135M model rambles past any token limit; its cut answers still pass some constraints
    # (no commas, lowercase, keywords), so a weak model may keep and check them.
    keep_truncated: bool = False
    # The suite reads answers cut at its own token limit, so answers that end well inside a
    # budget near it are what the student should learn; a longer budget mostly buys rambling.
    answer_tokens: int = 320
    # Which passing answer the responder keeps: the shortest trains the student on its own
    # answers that end early, against the truncation that fails most suite answers (the run
    # whose v1 the gate promoted at +10.2 points used it).
    pick: Literal["first", "shortest"] = "shortest"
    student_serves: Sequence[str] = ("generator",)
    # Generation calls per round: each asks for 8 new tasks on 4 demos and keeps about 1.5
    # of them on the base model (measured), so the pool grows by model-written tasks too,
    # which later rounds constrain and the student learns to write (trainer.generation_share).
    generate_calls: int = 8
    # Half the children need no rewrite by the model (a 135M model copies the template's
    # words into most rewrites, which rule 4 rejects); add_verifiable alone spends every
    # model call of a round on answers.
    operations: Sequence[str] = ("add_verifiable", "add_constraints")


def real_overrides(model_dir: Path, settings: RealSettings) -> list[str]:
    """`--set` overrides that run the loop on the converted SmolLM2 folder."""
    from evoinstruct.agents.models.smollm2 import config_overrides

    serves = json.dumps(list(settings.student_serves))
    return [
        *config_overrides(model_dir, dtype="bfloat16"),
        "models.teacher.batch_size=16",
        "models.student.batch_size=16",
        f"roles.student_serves={serves}",
        # Model-written tasks beside many constrained evolutions (each answered by rejection
        # sampling). What makes a 135M generator yield (bench figures in the README): few
        # demos (it copies them into its list), nucleus 0.9 at temperature 0.7 (1.0 rambles,
        # 0.5 repeats), a short answer, and no instances: it cannot write them (2 of 18
        # novel tasks kept), so the responder answers its tasks as it answers the others.
        f"loop.generate_calls={settings.generate_calls}",
        "generator.demos_human=3",
        "generator.demos_machine=1",
        "generator.self_instruct_decoding.temperature=0.7",
        "generator.self_instruct_decoding.top_p=0.9",
        "generator.self_instruct_decoding.max_tokens=300",
        "generator.generate_instances=false",
        f"loop.evolve_per_round={settings.evolve}",
        "loop.rewrite=false",
        f"evolver.operations={json.dumps(list(settings.operations))}",
        "evolver.equality_check=false",
        "evolver.max_tokens=320",
        f"responder.verifiable_samples={settings.samples}",
        f"evolver.verifiable.max_count={settings.max_constraints}",
        f"responder.on_truncated={json.dumps('keep' if settings.keep_truncated else 'reject')}",
        "responder.verifiable_temperature=0.8",
        # A 135M model never writes all-lowercase or wraps an answer in quotes by chance; the
        # repaired, re-verified answers are what teach it those formats.
        "responder.repair=true",
        f"responder.max_tokens={settings.answer_tokens}",
        f"responder.pick={json.dumps(settings.pick)}",
        "critic.judge.enabled=false",
        "critic.ifd.enabled=false",
        'selector.steps=["exact_dedup", "near_dedup", "novelty", "thresholds"]',
        "trainer.train_every=1",
        f"trainer.train_min_new={settings.min_new}",
        f"trainer.max_steps={settings.steps}",
        "trainer.batch_size=4",
        "trainer.grad_accumulation=2",
        "trainer.learning_rate=0.0005",
        "trainer.max_length=384",
        'trainer.gate.metric="verifiable"',
        'trainer.suite.languages=["en"]',
        f"trainer.suite.tasks_per_language={settings.suite}",
        "trainer.suite.max_tokens=160",
        "trainer.suite.batch_size=16",
    ]


@dataclass
class RealResult:
    project: Project
    rounds: list[int] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)  # suite accuracies of the base model
    teacher: dict[str, Any] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(
        default_factory=list
    )  # version, promoted, gate, accuracy
    seconds: float = 0.0


def prepare_real_project(
    directory: Path, settings: RealSettings, *, force: bool = False, cache_dir: Path | None = None
) -> Project:
    """A project on SmolLM2 (fetched and converted once), seeded in English, its config written."""
    from evoinstruct.agents.models.smollm2 import fetch_smollm2
    from evoinstruct.graph.config_toml import render_toml
    from evoinstruct.graph.project import CONFIG_HEADER
    from evoinstruct.store.seeds import add_seed_file

    model_dir = fetch_smollm2(cache_dir, dtype="bfloat16")
    project = init_project(directory, force=force)
    overrides = real_overrides(model_dir, settings)
    config = project.load_config(overrides)
    # The project's own file holds the settings, so every later command agrees with the run.
    project.config_path.write_text(render_toml(config, CONFIG_HEADER), encoding="utf-8")
    extra = project.root / "seeds" / REAL_TASKS_FILE
    packaged = resources.files("evoinstruct.prompts") / "seeds" / REAL_TASKS_FILE
    extra.write_text(packaged.read_text(encoding="utf-8"), encoding="utf-8")
    with project.open_store() as store:
        add_seed_file(store, project.root / "seeds" / "seed_tasks_en.jsonl")
        add_seed_file(store, extra)
    return project


async def run_real(
    project: Project,
    rounds: int,
    progress: ProgressSink | None = None,
) -> RealResult:
    """Build the held-out suite, score the base model and the teacher, run rounds (each one
    trains a version the gate may promote), then score every version on the suite."""
    from evoinstruct.graph.daemon.runner import run_daemon
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.trainer.suite import ensure_suite
    from evoinstruct.trainer.targets import evaluate_target
    from evoinstruct.trainer.verifiable import compare

    say = progress or (lambda kind, event: None)
    started = time.monotonic()
    result = RealResult(project)
    config = project.load_config()
    deps = deps_for_project(project, config)
    try:
        suite = ensure_suite(deps.store, config.trainer.suite).suite
        say("note", {"text": f"held-out suite: {len(suite.items)} prompts ({suite.hash[:12]})"})
        base = await evaluate_target(deps.store, deps.models, suite, config.trainer, "base")
        teacher = await evaluate_target(deps.store, deps.models, suite, config.trainer, "teacher")
        result.base, result.teacher = base.metrics["accuracy"], teacher.metrics["accuracy"]
        say("note", {"text": f"base model on the suite: {accuracy_text(base.metrics)}"})
    finally:
        await deps.models.aclose()
        deps.store.close()
    for _ in range(rounds):
        done = await run_daemon(project, [], DaemonOptions(rounds=1), progress)
        result.rounds.extend(done.rounds_run)
    deps = deps_for_project(project, config)
    try:
        for version in deps.store.model_versions():
            scored = await evaluate_target(
                deps.store, deps.models, suite, config.trainer, version["version"]
            )
            paired = compare(scored, base, "prompt_strict")
            gate = (version["metrics"].get("evaluation") or {}).get("gate") or {}
            result.versions.append(
                {
                    "version": version["version"],
                    "promoted": bool(version.get("promoted")),
                    "gate": gate.get("reason") or version.get("promotion_reason"),
                    "accuracy": scored.metrics["accuracy"],
                    "vs_base": paired.to_dict(),
                }
            )
    finally:
        await deps.models.aclose()
        deps.store.close()
    result.seconds = time.monotonic() - started
    return result


def accuracy_text(metrics: dict[str, Any], metric: str = "prompt_strict") -> str:
    found = metrics["accuracy"][metric] if "accuracy" in metrics else metrics[metric]
    return (
        f"{100 * found['value']:.1f}% (95% CI {100 * found['low']:.1f}-{100 * found['high']:.1f})"
    )
