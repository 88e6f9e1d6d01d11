"""The loop on a real model, offline: SmolLM2-135M-Instruct as teacher and student.

`evoinstruct demo --real` and `bench/evolution.py` run on the project `evoinstruct init
--model smollm2` makes: the weak-model profile (graph.profiles) is what makes a weak model
produce something worth keeping. Verifiable constraints attached by the evolver and checked
in code, so no capable judge is needed (a 135M judge parses as a score about one time in
ten); rejection sampling by the responder, with format constraints repaired in code when no
answer meets them; a LoRA version trained every round; and the promotion gate deciding on
the project's held-out verifiable suite. The demo and the bench only size their runs.
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
from evoinstruct.graph.profiles import WEAK_MODEL
from evoinstruct.graph.project import Project, init_project

# Plain English task prompts for the seeds (a packaged text file, ~100 lines): the packaged
# seeds hold 8 English tasks, too few parents for rounds of evolution. The held-out suite
# comes from another packaged list, and its builder drops any task sharing an n-gram with
# the pool, so these cannot leak into it.
REAL_TASKS_FILE = "real_demo_tasks_en.txt"


@dataclass
class RealSettings:
    """How much one round does: the weak-model profile's values (graph.profiles), or others.

    A field left None keeps the profile's value; the demo keeps them all, the benchmark sizes
    its runs with its own flags.
    """

    evolve: int | None = None  # evolutions per round
    samples: int | None = None  # answers drawn per constrained task (rejection sampling)
    steps: int | None = None  # LoRA optimizer steps per version
    # New accepted examples a version waits for: 60 steps on a couple of dozen examples is
    # twenty epochs, and such a version mostly unlearns (measured: v1 on 23 examples).
    min_new: int | None = None
    suite: int | None = None  # held-out English suite prompts
    max_constraints: int | None = None  # registry constraints attached per child, at most
    # A 135M model rambles past any token limit; its cut answers still pass some constraints
    # (no commas, lowercase, keywords), so a weak model may keep and check them.
    keep_truncated: bool | None = None
    answer_tokens: int | None = None  # the responder's token limit
    pick: Literal["first", "shortest"] | None = None  # which passing answer is kept
    operations: Sequence[str] | None = None  # the evolver's operations
    # Roles the promoted student takes over (not a profile setting: the loop's default).
    student_serves: Sequence[str] = ("generator",)

    def replacements(self) -> dict[str, Any]:
        """The profile keys this run sets to other values."""
        values = {
            "loop.evolve_per_round": self.evolve,
            "responder.verifiable_samples": self.samples,
            "trainer.max_steps": self.steps,
            "trainer.train_min_new": self.min_new,
            "trainer.suite.tasks_per_language": self.suite,
            "evolver.verifiable.max_count": self.max_constraints,
            "responder.on_truncated": None
            if self.keep_truncated is None
            else ("keep" if self.keep_truncated else "reject"),
            "responder.max_tokens": self.answer_tokens,
            "responder.pick": self.pick,
            "evolver.operations": None if self.operations is None else list(self.operations),
        }
        return {key: value for key, value in values.items() if value is not None}


def real_overrides(settings: RealSettings) -> list[str]:
    """`--set` overrides of a SmolLM2 project (`graph.real_project.smollm2_config`) for a run
    sized by `settings`: the profile's keys it replaces, and the roles the student serves."""
    serves = json.dumps(list(settings.student_serves))
    return [
        *WEAK_MODEL.overrides(replace=settings.replacements()),
        f"roles.student_serves={serves}",
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
    """A project on SmolLM2 (fetched and converted once) with the weak-model profile, sized
    by `settings`, seeded in English, its config written."""
    from evoinstruct.graph.config import with_overrides
    from evoinstruct.graph.real_project import smollm2_config
    from evoinstruct.store.seeds import add_seed_file

    setup = smollm2_config(cache_dir=cache_dir)
    setup.config = with_overrides(setup.config, real_overrides(settings))
    # The project's own file holds the settings, so every later command agrees with the run.
    project = init_project(
        directory, setup.config, force=force, header=setup.header, notes=setup.notes
    )
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
