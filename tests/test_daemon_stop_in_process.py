"""A stop ends the daemon within seconds whatever runs, with in-process models: mid-generate
(the model's thread stops between tokens), mid-train (the trainer checkpoints within a
micro-batch and exits) and mid-evaluation (the suite's generate stops between tokens). The
next start resumes the step that was cut short, and nothing it had finished is lost.

The tiny model is slowed to one token per 100 ms where a step must still be running when the
stop arrives; every wait is on observed progress, and the bounds are a few tokens or a
micro-batch plus the daemon's grace, not the machine's speed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions, DaemonResult
from evoinstruct.graph.project import Project, init_project
from evoinstruct.graph.round.deps import Deps, deps_for_project
from evoinstruct.models.factory import ModelSet, build_model
from evoinstruct.store.seeds import add_seed_file
from tests.fake_teacher import scripted_teacher
from tests.test_daemon_stop import _next_step
from tests.test_stop_in_process import slowed, until

GRACE_S = 1.0


class Run:
    """One project, a daemon at a time on it, and every event the daemons emitted."""

    def __init__(self, project: Project, deps: Deps) -> None:
        self.project, self.deps = project, deps
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.task: asyncio.Task[DaemonResult] | None = None

    def start(self, **options: Any) -> None:
        daemon = Daemon(
            self.project,
            self.deps,
            DaemonOptions(stop_grace_s=GRACE_S, **options),
            lambda kind, event: self.events.append((kind, event)),
        )
        self.task = asyncio.create_task(daemon.run())

    def seen(self, stage: str, at_least: int = 1) -> bool:
        return any(
            kind == "event" and e.get("stage") == stage and (e.get("done") or 0) >= at_least
            for kind, e in self.events
        )

    async def stop(self) -> tuple[DaemonResult, float]:
        """`evoinstruct stop`'s stop file; how long the daemon took to return."""
        assert self.task is not None
        self.project.stop_path.touch()
        asked = time.monotonic()
        async with asyncio.timeout(120):  # a hang guard; callers check the bound
            result = await self.task
        return result, time.monotonic() - asked

    async def finish(self) -> DaemonResult:
        assert self.task is not None
        async with asyncio.timeout(600):  # a hang guard
            return await self.task


def _project(tmp_path: Path, tiny: Path, *overrides: str, teacher_in_process: bool) -> Run:
    """A project whose student is the tiny model, and whose teacher is the tiny model too
    (`teacher_in_process`) or the scripted teacher, seeded in English."""
    project = init_project(tmp_path / "proj")
    teacher = [f'models.teacher={{backend="transformers", path="{tiny}", device="cpu"}}']
    config = project.load_config(
        [
            *(teacher if teacher_in_process else []),
            f'models.student.path="{tiny}"',
            'models.student.device="cpu"',
            f'trainer.base_model="{tiny}"',
            'trainer.device="cpu"',
            "trainer.train_every=1",
            "trainer.train_min_new=1",
            "trainer.heldout_fraction=0.2",
            "trainer.max_length=128",
            "generator.instance_decoding.max_tokens=16",
            "generator.self_instruct_decoding.max_tokens=48",
            "loop.generate_calls=1",
            "loop.evolve_per_round=2",
            "loop.rewrite=false",
            *overrides,
        ]
    )
    scripted = scripted_teacher()
    slow = {"on": False}  # whether models built from now on are slowed

    def builder(cfg: Any, cache: Any = None) -> Any:
        if cfg.backend != "transformers":
            return scripted
        model = build_model(cfg, cache=cache)
        if slow["on"]:
            slowed(getattr(model, "inner", model))
        return model

    # The response cache on the project's store, as the daemon's own models have it.
    cache = project.open_store()
    models = ModelSet(config.models, config.roles, builder=builder, cache=cache)
    deps = deps_for_project(project, config, models=models)
    deps.extras["slow"] = slow
    deps.extras["cache"] = cache
    add_seed_file(deps.store, project.root / "seeds" / "seed_tasks_en.jsonl")
    return Run(project, deps)


def _cached_answers(run: Run) -> int:
    return run.deps.store.db.execute("SELECT count(*) FROM response_cache").fetchone()[0]


@pytest.mark.slow
async def test_stop_mid_generate_returns_within_a_token_and_resumes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = _project(
        tmp_path,
        tiny_model_dir,
        # 400 tokens at 100 ms: the generate call would run 40 s.
        "generator.self_instruct_decoding.max_tokens=400",
        "trainer.train_every=100",
        teacher_in_process=True,
    )
    run.deps.extras["slow"]["on"] = True
    run.start(rounds=1)
    activity = run.deps.models.activity

    def decoding_shown() -> bool:  # the live view has been told of tokens being decoded
        return any(kind == "activity" and e["tokens"] > 0 for kind, e in run.events)

    await until(decoding_shown, "the generate call decoding, in the live view")
    assert (run.deps.store.daemon_info() or {}).get("stage") == "generate"
    result, took = await run.stop()
    assert result.stopped_by_signal and result.rounds_run == []
    # The grace, then a token or two for the thread to notice.
    assert took < GRACE_S + 3, f"{took:.1f} s"
    assert activity.snapshot().in_flight == 0
    assert await _next_step(run.project, 1) == ("generate",)

    run.deps.extras["slow"]["on"] = False
    run.deps.models = ModelSet(
        run.deps.config.models, run.deps.config.roles, builder=build_model, cache=run.deps.store
    )
    run.events.clear()
    run.start(rounds=0)
    # The next start runs the generate step again, to its end (then it is stopped again).
    await until(
        lambda: any(k == "node_done" and e["node"] == "generate" for k, e in run.events),
        "the resumed generate step",
        hang_guard_s=240,
    )
    assert ("resume", {"round": 1, "next": ["generate"]}) in run.events
    result, _ = await run.stop()
    assert result.resumed == 1
    assert await _next_step(run.project, 1) not in (("generate",), ())
    await run.deps.models.aclose()
    run.deps.store.close()
    run.deps.extras["cache"].close()


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_stop_mid_train_and_mid_evaluation_each_return_in_seconds_and_resume(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = _project(
        tmp_path,
        tiny_model_dir,
        # Long enough to be running when the stop comes; no periodic checkpoint.
        "trainer.max_steps=40",
        "trainer.batch_size=2",
        "trainer.grad_accumulation=2",
        "trainer.save_steps=1000",
        'trainer.gate.metric="verifiable"',
        "trainer.gate.teacher_reference=false",
        "trainer.suite.tasks_per_language=4",
        "trainer.suite.max_tokens=200",
        "trainer.suite.batch_size=2",
        "trainer.suite.bootstrap_samples=200",
        teacher_in_process=False,
    )
    run.start(rounds=1)
    await until(
        lambda: run.seen("train", at_least=2), "training steps", 240, lambda: run.events[-3:]
    )
    result, took = await run.stop()
    assert result.stopped_by_signal and result.rounds_run == []
    # The trainer hears of the stop at once and stops within a micro-batch and a save.
    assert took < 10, f"{took:.1f} s"
    assert await _next_step(run.project, 1) == ("train",)
    # A stop is no failed training: the round still has commit's note (why it trains).
    assert run.deps.store.round(1)["counts"]["training"].endswith("new accepted examples")
    checkpoints = sorted((run.project.models_dir / ".v1.partial" / "checkpoints").iterdir())
    stopped_at = int(checkpoints[-1].name.split("-")[1])
    assert 2 <= stopped_at < 40

    # Resumed, training goes on from that checkpoint; the suite's answers are slowed, so the
    # evaluation is still running when the next stop comes.
    run.deps.extras["slow"]["on"] = True
    cached_before = _cached_answers(run)
    run.start(rounds=0)
    await until(
        lambda: run.seen("evaluate", at_least=2), "suite answers", 240, lambda: run.events[-3:]
    )
    result, took = await run.stop()
    assert result.stopped_by_signal and took < GRACE_S + 3, f"{took:.1f} s"
    assert await _next_step(run.project, 1) == ("evaluate",)
    # No grace for the suite: its answers are kept as they come (the response cache, which
    # the resumed evaluation reads), and it never ends in seconds.
    assert _cached_answers(run) - cached_before >= 2
    notes = [e["text"] for kind, e in run.events if kind == "note"]
    assert "stop requested: step evaluate keeps what it has answered" in notes
    assert not any(n.startswith("stop requested: giving step evaluate") for n in notes)
    metrics = run.deps.store.model_version("v1")["metrics"]
    assert metrics["resumed_from"] == f"checkpoint-{stopped_at}"

    run.deps.extras["slow"]["on"] = False
    run.start(rounds=0)
    result = await run.finish()
    assert result.rounds_run == [1] and not result.stopped_by_signal
    evaluation = run.deps.store.model_version("v1")["metrics"]["evaluation"]
    assert evaluation["gate_metric"] == "verifiable"
    await run.deps.models.aclose()
    run.deps.store.close()
    run.deps.extras["cache"].close()
