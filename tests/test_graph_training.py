"""The training branch for real: the graph trains the tiny student, evaluates it, promotes it,
and the next round generates with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evoinstruct.graph.config import RunConfig
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.project import Project, init_project
from evoinstruct.graph.round.deps import Deps, deps_for_project
from evoinstruct.graph.round.training import activate_student
from evoinstruct.models.factory import ModelSet, build_model
from evoinstruct.store.seeds import add_seed_file
from tests.fake_teacher import scripted_teacher


def _is_generation_prompt(request) -> bool:
    return any(m["content"].startswith("Here are some example tasks") for m in request.messages)


@dataclass
class TrainingRun:
    """A project whose student is the tiny model and whose other roles are the scripted
    teacher, seeded in both languages."""

    project: Project
    config: RunConfig
    teacher: Any
    models: ModelSet
    deps: Deps
    builder: Callable[..., Any]


def _training_run(tmp_path: Path, tiny_model_dir: Path, *overrides: str) -> TrainingRun:
    project = init_project(tmp_path / "proj")
    config = project.load_config(
        [
            f'models.student.path="{tiny_model_dir}"',
            'models.student.device="cpu"',
            f'trainer.base_model="{tiny_model_dir}"',
            "trainer.train_every=1",
            "trainer.train_min_new=1",
            "trainer.batch_size=8",
            "trainer.grad_accumulation=1",
            'trainer.device="cpu"',
            "trainer.heldout_fraction=0.2",
            "trainer.max_length=256",
            "generator.instance_decoding.max_tokens=32",
            "generator.self_instruct_decoding.max_tokens=48",
            *overrides,
        ]
    )
    teacher = scripted_teacher()

    def builder(cfg, cache=None):
        return build_model(cfg) if cfg.backend == "transformers" else teacher

    models = ModelSet(config.models, config.roles, builder=builder)
    deps = deps_for_project(project, config, models=models)
    for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
        add_seed_file(deps.store, project.root / "seeds" / name)
    return TrainingRun(project, config, teacher, models, deps, builder)


@pytest.mark.slow
async def test_round_trains_promotes_and_the_student_generates_next(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = _training_run(
        tmp_path,
        tiny_model_dir,
        "trainer.max_steps=30",
        "trainer.learning_rate=0.003",
        "trainer.save_steps=10",
        "trainer.pairwise.enabled=true",
        "trainer.pairwise.num_prompts=4",
        "trainer.pairwise.max_tokens=16",
    )
    project, config, teacher, models, deps, builder = (
        run.project,
        run.config,
        run.teacher,
        run.models,
        run.deps,
        run.builder,
    )

    events: list[dict] = []
    await Daemon(
        project, deps, DaemonOptions(rounds=1), lambda kind, event: events.append(event)
    ).run()
    versions = deps.store.model_versions()
    assert [v["version"] for v in versions] == ["v1"]
    # The live view saw the trainer's steps as they came, with the logged loss.
    steps = [e for e in events if e.get("stage") == "train" and not e.get("final")]
    assert [e["done"] for e in steps if e.get("total") == 30][-1] == 30
    assert any(e.get("loss") is not None for e in steps)
    metrics = deps.store.model_version("v1")["metrics"]
    assert metrics["evaluation"]["heldout_loss"] < metrics["evaluation"]["baseline_loss"]
    # The teacher judged the new student against the generator, in both answer orders.
    pairwise = metrics["evaluation"]["pairwise"]
    judged = [
        r
        for r in teacher.calls
        if r.messages[-1]["content"].startswith("You are an impartial judge")
    ]
    assert (
        pairwise is not None
        and len(judged) == pairwise["n"] + pairwise["invalid"] + pairwise["failed"] > 0
    )
    assert pairwise["winning_score"] is not None
    assert deps.store.active_model()["version"] == "v1"
    assert (project.models_dir / "v1" / "adapter_config.json").is_file()

    teacher_generation_calls = sum(_is_generation_prompt(r) for r in teacher.calls)
    await Daemon(project, deps, DaemonOptions(rounds=1)).run()
    assert deps.store.round(2)["model_version"] == "v1"
    # The teacher wrote no task lists in round 2: the promoted student did.
    assert sum(_is_generation_prompt(r) for r in teacher.calls) == teacher_generation_calls
    student = deps.models.for_role("generator")
    active = deps.store.active_model()["version"]  # round 2 may have trained and promoted v2
    assert student is models.get("student") and student.adapter_version == active
    assert deps.store.round(2)["counts"]["stages"]["generate"]["calls"] > 0

    # A restarted daemon hands the active version to a fresh student model.
    fresh = ModelSet(config.models, config.roles, builder=builder)
    assert await activate_student(deps.store, fresh) == active
    assert fresh.for_role("generator").adapter_version == active
    deps.store.close()


@pytest.mark.slow
async def test_round_gates_on_the_held_out_suite(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With the verifiable gate the round's verdict comes from the suite, not the loss: the
    untuned base student answers it once, the new version once, the teacher once."""
    run = _training_run(
        tmp_path,
        tiny_model_dir,
        "trainer.max_steps=10",
        'trainer.gate.metric="verifiable"',
        "trainer.suite.tasks_per_language=3",
        "trainer.suite.max_tokens=8",
        "trainer.suite.bootstrap_samples=200",
    )
    project, deps = run.project, run.deps

    await Daemon(project, deps, DaemonOptions(rounds=1)).run()
    evaluation = deps.store.model_version("v1")["metrics"]["evaluation"]
    assert evaluation["gate_metric"] == "verifiable"
    comparison = evaluation["verifiable"]["comparison"]
    # The gate compares the held-out parts only: the in-distribution prompts are not its units.
    items = deps.store.eval_suite()["items"]
    gated = [i for i in items if i.get("part") in set(comparison["parts"])]
    assert len(items) == 6 and 0 < len(gated) < len(items)
    assert comparison["n"] == len(gated)
    assert comparison["low"] <= comparison["diff"] <= comparison["high"]
    note = deps.store.round(1)["counts"]["training"]
    assert note.startswith("v1: verifiable ") and "of the base model" in note
    assert "teacher" in note and "(diagnostic)" in note
    assert evaluation["gate"]["promote"] is (deps.store.active_model() is not None)
    results = deps.store.eval_results(evaluation["verifiable"]["suite"])
    assert sorted(r["label"] for r in results) == ["base", "teacher", "v1"]
    # The suite's prompts were kept out of the training data of v1.
    suite_prompts = {i["prompt"] for i in deps.store.eval_suite()["items"]}
    trained = deps.store.get_many(deps.store.training_manifest("v1", role="train"))
    assert trained and not suite_prompts & {e.instruction for e in trained}
    deps.store.close()
