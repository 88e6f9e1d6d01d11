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

# Plain English task prompts for the seeds (a packaged text file: 98 short tasks and 420 of
# the length and kinds of the suite's): the packaged seeds hold 8 English tasks, too few
# parents for rounds of evolution. The held-out suite comes from another packaged list, and
# its builder drops any task sharing an n-gram with the pool, so these cannot leak into it.
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
    # Held-out English suite tasks (None: all packaged ones), split into in-distribution,
    # held-out phrasing and held-out type (trainer.suite.parts).
    suite: int | None = 40
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
    # How many of the packaged task prompts seed the project (None: all ~100). Round 1
    # answers every seed without an output, so fewer make a quicker first round.
    seed_tasks: int | None = None
    # Half the children need no rewrite by the model (a 135M model copies the template's
    # words into most rewrites, which rule 4 rejects); add_verifiable alone spends every
    # model call of a round on answers.
    operations: Sequence[str] = ("add_verifiable", "add_constraints")


def real_overrides(model_dir: Path, settings: RealSettings) -> list[str]:
    """`--set` overrides that run the loop on the converted SmolLM2 folder."""
    from evoinstruct.agents.models.smollm2 import config_overrides

    serves = json.dumps(list(settings.student_serves))
    return [
        *config_overrides(model_dir),
        "models.teacher.batch_size=16",
        "models.student.batch_size=16",
        f"roles.student_serves={serves}",
        # Few new tasks (the weak generator writes little that survives), many constrained
        # evolutions, each answered by rejection sampling.
        "loop.generate_calls=1",
        f"loop.evolve_per_round={settings.evolve}",
        "loop.rewrite=false",
        f"evolver.operations={json.dumps(list(settings.operations))}",
        "evolver.equality_check=false",
        "evolver.max_tokens=320",
        "generator.self_instruct_decoding.max_tokens=400",
        "generator.instance_decoding.max_tokens=200",
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
        *([f"trainer.suite.tasks_per_language={settings.suite}"] if settings.suite else []),
        "trainer.suite.max_tokens=160",
        "trainer.suite.batch_size=16",
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
    # vs_base_all, vs_base_by_part, files (IFEval-format files scored on their own)
    versions: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> label -> accuracy
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
        base = await evaluate_target(deps.store, deps.models, suite, config.trainer, "base")
        teacher = await evaluate_target(deps.store, deps.models, suite, config.trainer, "teacher")
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
    deps = deps_for_project(project, config)
    try:
        for version in deps.store.model_versions():
            scored = await evaluate_target(
                deps.store, deps.models, suite, config.trainer, version["version"]
            )
            evidence = gate_evidence(config.trainer, scored, base)
            gate = (version["metrics"].get("evaluation") or {}).get("gate") or {}
            result.versions.append(
                {
                    "version": version["version"],
                    "promoted": bool(version.get("promoted")),
                    "gate": gate.get("reason") or version.get("promotion_reason"),
                    "accuracy": scored.metrics["accuracy"],
                    "by_part": scored.metrics.get("by_part", {}),
                    "vs_base": evidence.comparison.to_dict(),
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


def accuracy_text(metrics: dict[str, Any], metric: str = "prompt_strict") -> str:
    found = metrics["accuracy"][metric] if "accuracy" in metrics else metrics[metric]
    return (
        f"{100 * found['value']:.1f}% (95% CI {100 * found['low']:.1f}-{100 * found['high']:.1f})"
    )
