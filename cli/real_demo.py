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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from evoinstruct.graph.daemon.loop import DaemonOptions, ProgressSink
from evoinstruct.graph.profiles import WEAK_MODEL
from evoinstruct.graph.project import Project, init_project
from evoinstruct.store.stages import Stage

# Plain English task prompts for the seeds (a packaged text file: 98 short tasks and 420 of
# the length and kinds of the suite's): the packaged seeds hold 8 English tasks, too few
# parents for rounds of evolution. The held-out suite comes from another packaged list, and
# its builder drops any task sharing an n-gram with the pool, so these cannot leak into it.
REAL_TASKS_FILE = "real_demo_tasks_en.txt"


@dataclass
class RealSettings:
    """How much one round does: the weak-model profile's values (graph.profiles), or others.

    A field left None keeps the profile's value; the demo sets only a 40-prompt suite, the
    benchmark sizes its runs with its own flags.
    """

    evolve: int | None = None  # evolutions per round
    samples: int | None = None  # answers drawn per constrained task (rejection sampling)
    steps: int | None = None  # LoRA optimizer steps per version
    # New accepted examples a version waits for: 60 steps on a couple of dozen examples is
    # twenty epochs, and such a version mostly unlearns (measured: v1 on 23 examples).
    min_new: int | None = None
    # Held-out English suite tasks (None: the profile's), split into in-distribution,
    # held-out phrasing and held-out type (trainer.suite.parts).
    suite: int | None = None
    max_constraints: int | None = None  # registry constraints attached per child, at most
    # A 135M model rambles past any token limit; its cut answers still pass some constraints
    # (no commas, lowercase, keywords), so a weak model may keep and check them.
    keep_truncated: bool | None = None
    answer_tokens: int | None = None  # the responder's token limit
    pick: Literal["first", "shortest"] | None = None  # which passing answer is kept
    operations: Sequence[str] | None = None  # the evolver's operations
    # Roles the promoted student takes over (not a profile setting: the loop's default).
    student_serves: Sequence[str] = ("generator",)
    # How many of the packaged task prompts seed the project (None: all). Round 1 answers
    # every seed without an output, so fewer make a quicker first round.
    seed_tasks: int | None = None
    generate_calls: int | None = None  # Self-Instruct calls per round

    def replacements(self) -> dict[str, Any]:
        """The profile keys this run sets to other values."""
        values = {
            "loop.generate_calls": self.generate_calls,
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
    # Per suite part ("in_distribution", "held_out_phrasing", ...): {"n", "accuracy"}.
    base_parts: dict[str, Any] = field(default_factory=dict)
    teacher_parts: dict[str, Any] = field(default_factory=dict)
    # version, promoted, gate, accuracy, by_part, vs_base (the gated held-out parts),
    # vs_gate_baseline (the same parts against the version the gate compared it with),
    # vs_base_all, vs_base_by_part, files (IFEval-format files scored on their own)
    versions: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> label -> accuracy
    seconds: float = 0.0
    stopped: bool = False  # a stop (signal or `evoinstruct stop`) ended it before scoring


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
    text = packaged.read_text(encoding="utf-8")
    if settings.seed_tasks is not None:
        tasks = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        text = "\n".join(tasks[: settings.seed_tasks]) + "\n"
    extra.write_text(text, encoding="utf-8")
    with project.open_store() as store:
        add_seed_file(store, project.root / "seeds" / "seed_tasks_en.jsonl")
        add_seed_file(store, extra)
    return project


async def run_real(
    project: Project,
    rounds: int,
    progress: ProgressSink | None = None,
    *,
    files: Sequence[Path] = (),
) -> RealResult:
    """Build the held-out suite, score the base model and the teacher, run rounds (each one
    trains a version the gate may promote), then score every version on the suite, per part.

    `files` are IFEval-format files scored on their own (never part of the project's suite,
    so the gate never selects on them): the base model and every version answer each.
    """
    from evoinstruct.graph.daemon.runner import run_daemon
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.trainer.evaluate import gate_evidence
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
        parts = ", ".join(f"{k} {v}" for k, v in suite.part_counts().items())
        say("note", {"text": f"held-out suite: {len(suite)} prompts ({parts}; {suite.short})"})
        base = await evaluate_target(
            deps.store, deps.models, suite, config.trainer, "base", progress=answering(say, "base")
        )
        teacher = await evaluate_target(
            deps.store,
            deps.models,
            suite,
            config.trainer,
            "teacher",
            progress=answering(say, "teacher"),
        )
        result.base, result.teacher = base.metrics["accuracy"], teacher.metrics["accuracy"]
        result.base_parts = base.metrics.get("by_part", {})
        result.teacher_parts = teacher.metrics.get("by_part", {})
        say("note", {"text": f"base model on the suite: {accuracy_text(base.metrics)}"})
    finally:
        await deps.models.aclose()
        deps.store.close()
    for _ in range(rounds):
        done = await run_daemon(project, [], DaemonOptions(rounds=1), progress)
        result.rounds.extend(done.rounds_run)
        if done.stopped_by_signal:
            # The user asked to stop: no next round, and no hour of scoring either.
            result.stopped = True
            result.seconds = time.monotonic() - started
            return result
    deps = deps_for_project(project, config)
    try:
        scored_by_version: dict[str, Any] = {}
        for version in deps.store.model_versions():
            scored = await evaluate_target(
                deps.store,
                deps.models,
                suite,
                config.trainer,
                version["version"],
                progress=answering(say, version["version"]),
            )
            scored_by_version[version["version"]] = scored
            evidence = gate_evidence(config.trainer, scored, base)
            evaluation = version["metrics"].get("evaluation") or {}
            gate = evaluation.get("gate") or {}
            # The gate compared the version with the generator of its day, not the base model.
            incumbent = evaluation.get("baseline_version")
            if incumbent not in scored_by_version:
                incumbent = None  # not scored here (e.g. rolled back): say base, as it is
            against = scored_by_version[incumbent] if incumbent else base
            decided = gate_evidence(config.trainer, scored, against).comparison.to_dict()
            result.versions.append(
                {
                    "version": version["version"],
                    "promoted": bool(version.get("promoted")),
                    "gate": gate.get("reason") or version.get("promotion_reason"),
                    "accuracy": scored.metrics["accuracy"],
                    "by_part": scored.metrics.get("by_part", {}),
                    "vs_base": evidence.comparison.to_dict(),
                    "vs_gate_baseline": {**decided, "baseline_version": incumbent or "base"},
                    "vs_base_all": compare(scored, base, "prompt_strict").to_dict(),
                    "vs_base_by_part": {k: c.to_dict() for k, c in evidence.by_part.items()},
                }
            )
        for path in files:
            versions = ["base", *(row["version"] for row in result.versions)]
            result.files[Path(path).name] = await score_file(
                project, deps, config.trainer, Path(path), versions, say
            )
    finally:
        await deps.models.aclose()
        deps.store.close()
    result.seconds = time.monotonic() - started
    return result


async def score_file(
    project: Project,
    deps: Any,
    cfg: Any,
    path: Path,
    targets: Sequence[str],
    say: ProgressSink,
) -> dict[str, Any]:
    """Each target's accuracies on an IFEval-format file alone, kept in a store of its own
    beside the project (`<project>/files.db`): the project's suite and gate never see it."""
    from collections import Counter

    from evoinstruct.store import open_store
    from evoinstruct.trainer.suite import Suite, ifeval_items, suite_hash
    from evoinstruct.trainer.targets import resolve_target
    from evoinstruct.trainer.verifiable import compare, run_suite

    skipped: Counter[str] = Counter()
    items = tuple(ifeval_items(path, skipped))
    suite = Suite(suite_hash(items), items)
    out: dict[str, Any] = {"prompts": len(items), "skipped": dict(skipped), "results": {}}
    with open_store(project.root / "files.db") as side:
        side.save_eval_suite(suite.hash, [i.to_dict() for i in items], {"file": str(path)})
        scored = {}
        for target in targets:
            chosen = await resolve_target(deps.store, deps.models, target)
            try:
                row = chosen.version_row
                scored[target] = await run_suite(
                    side,
                    suite,
                    chosen.model,
                    cfg.suite,
                    label=chosen.label,
                    adapter_path=row["path"] if row else None,
                    confidence=cfg.gate.confidence,
                    progress=answering(say, f"{target} on {path.name}"),
                )
            finally:
                await chosen.close()
            say("note", {"text": f"{path.name}, {target}: {accuracy_text(scored[target].metrics)}"})
    for target, found in scored.items():
        entry = {"accuracy": found.metrics["accuracy"]}
        if target != "base":
            entry["vs_base"] = compare(found, scored["base"], "prompt_strict").to_dict()
        out["results"][target] = entry
    return out


def answering(say: ProgressSink, model: str) -> Callable[[int, int], None]:
    """Suite answers done by one model outside any round, as events for the live view: the
    base model's 720 answers take minutes on a CPU before round 1 starts."""

    def report(done: int, total: int) -> None:
        event = {"round": None, "stage": Stage.EVALUATE, "model": model}
        say("event", {**event, "done": done, "total": total})

    return report


def accuracy_text(metrics: dict[str, Any], metric: str = "prompt_strict") -> str:
    found = metrics["accuracy"][metric] if "accuracy" in metrics else metrics[metric]
    return (
        f"{100 * found['value']:.1f}% (95% CI {100 * found['low']:.1f}-{100 * found['high']:.1f})"
    )
