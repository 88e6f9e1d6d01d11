"""No crash loops: a step that keeps raising is given up on, never retried forever.

Every start is a fresh set of dependencies on the same project (a real SQLite pool
and a real LangGraph checkpointer), as a restarted daemon process would build them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evoinstruct.cli.inspect import rounds_report
from evoinstruct.graph.config import RunConfig, load_config
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions, DaemonResult, RoundFailed
from evoinstruct.graph.project import Project, init_project
from evoinstruct.graph.round import nodes
from evoinstruct.graph.round.deps import Deps, deps_for_project
from evoinstruct.models.factory import ModelSet
from evoinstruct.store.errors import ConfigError
from evoinstruct.store.seeds import add_seed_file
from evoinstruct.store.store import open_store
from tests.cli_helpers import run_cli
from tests.fake_teacher import scripted_teacher

PEFT_ERROR = "Target modules {'q_proj'} not found in the base model."


class PromoteCrashes:
    """A trainer whose promotion raises what peft raised in the field (not an EvoError)."""

    def __init__(self) -> None:
        self.promotions = 0

    def due(self, store: Any, round_number: int) -> tuple[bool, str]:
        return round_number == 1, "due in round 1 only"

    async def train(self, stopping: Any = None) -> dict[str, Any]:
        return {"version": "v1"}

    async def evaluate(
        self, store: Any, version: str, models: Any, prompts: Any, progress: Any = None
    ) -> Any:
        from evoinstruct.trainer.evaluate import GateDecision

        class Evaluation:
            decision = GateDecision(True, f"{version} beats the generator")

        return Evaluation()

    async def promote(self, store: Any, models: Any, version: str, reason: str) -> None:
        self.promotions += 1
        raise ValueError(PEFT_ERROR)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = init_project(tmp_path / "proj")
    with open_store(project.pool_path) as store:
        add_seed_file(store, project.root / "seeds" / "seed_tasks_en.jsonl")
    return project


def fresh_deps(project: Project, config: RunConfig, trainer: Any = None) -> Deps:
    teacher = scripted_teacher()
    models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
    deps = deps_for_project(project, config, models=models)
    if trainer is not None:
        deps.trainer = trainer
    return deps


async def start(project: Project, trainer: Any = None, rounds: int = 1) -> DaemonResult:
    """One daemon start, as `evoinstruct run --rounds N` makes it."""
    deps = fresh_deps(project, project.load_config(), trainer)
    try:
        return await Daemon(project, deps, DaemonOptions(rounds=rounds)).run()
    finally:
        deps.store.close()


def accepted(project: Project) -> set[str]:
    with open_store(project.pool_path) as store:
        return {e.id for e in store.iter_examples(status="accepted")}


class Broken:
    """One pipeline node made to raise a ValueError in one round, while `on`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, round: int) -> None:
        self.name, self.round, self.on = name, round, True
        self.calls: list[int] = []
        self.original = getattr(nodes, name)
        monkeypatch.setattr(nodes, name, self)  # build_graph looks nodes up on every start

    async def __call__(self, state: dict[str, Any], runtime: Any) -> dict[str, Any]:
        self.calls.append(state["round"])
        if self.on and state["round"] == self.round:
            raise ValueError(f"{self.name} hit a bug")
        return await self.original(state, runtime)


async def test_a_promote_crash_ends_the_branch_and_the_old_generator_goes_on(
    project: Project,
) -> None:
    trainer = PromoteCrashes()
    for n in range(1, 5):
        result = await start(project, trainer)
        assert result.rounds_run == [n] and result.resumed is None
    assert trainer.promotions == 1  # tried once, never again on a later start
    with open_store(project.pool_path) as store:
        first = store.round(1)
        assert first["phase"] == "finished" and first["finished_at"]
        assert first["counts"]["training"] == f"v1 not promoted: ValueError: {PEFT_ERROR}"
        assert store.step_failure(1) is None
        assert store.active_model() is None
        assert all(store.round(n)["model_version"] is None for n in range(2, 5))
        report = {r["round"]: r for r in rounds_report(store)}
    assert report[1]["training"].startswith("v1 not promoted: ValueError")


async def test_a_node_that_keeps_crashing_is_given_up_after_three_starts(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await start(project)).rounds_run == [1]
    kept = accepted(project)
    assert kept
    broken = Broken(monkeypatch, "select", round=2)

    for attempt in (1, 2, 3):
        with pytest.raises(RoundFailed) as failed:
            await start(project)
        message = str(failed.value)
        assert message.startswith("round 2 failed at select: ValueError: select hit a bug")
        assert "\n" not in message and failed.value.exit_code == 1
        with open_store(project.pool_path) as store:
            failure = store.step_failure(2)
            assert (failure["step"], failure["attempts"]) == ("select", attempt)
            assert "Traceback" in failure["traceback"]
            assert not store.round(2)["finished_at"]
    assert broken.calls == [2, 2, 2]

    result = await start(project)  # the fourth start gives round 2 up and goes on
    assert result.closed_as_failed == 2 and result.rounds_run == [3]
    assert broken.calls == [2, 2, 2, 3]  # round 2's select was not tried a fourth time
    with open_store(project.pool_path) as store:
        closed = store.round(2)
        assert closed["phase"] == "failed" and closed["finished_at"]
        assert closed["counts"]["failed"] == (
            "select failed 3 starts in a row: ValueError: select hit a bug"
        )
        assert store.round(3)["phase"] == "finished"
        row = {r["round"]: r for r in rounds_report(store)}[2]
        assert row["phase"] == "failed" and row["failed"].startswith("select failed 3 starts")
    assert kept <= accepted(project)  # round 1's examples are all still accepted

    # A closed round stays closed: the next start simply runs a new round.
    result = await start(project)
    assert result.closed_as_failed is None and result.resumed is None
    assert result.rounds_run == [4]


async def test_a_step_that_recovers_resets_its_count(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Broken(monkeypatch, "critique", round=1)
    for attempt in (1, 2):
        with pytest.raises(RoundFailed, match=rf"^round 1 failed at critique: .*\({attempt} of 3"):
            await start(project)
    broken.on = False
    result = await start(project, rounds=0)  # resumes round 1 at critique, which now works
    assert result.resumed == 1 and result.rounds_run == [1]
    with open_store(project.pool_path) as store:
        assert store.step_failure(1) is None and store.round(1)["phase"] == "finished"
        # The count is per step, in a row: another step starts again at one.
        store.start_round(2, {})
        assert store.record_step_failure(2, "respond", "ValueError: a") == 1
        assert store.record_step_failure(2, "respond", "ValueError: b") == 2
        assert store.record_step_failure(2, "critique", "ValueError: c") == 1
        store.clear_step_failure(2)
        assert store.step_failure(2) is None


def test_max_step_failures_is_at_least_one() -> None:
    assert load_config(None, environ={}).loop.max_step_failures == 3
    with pytest.raises(ConfigError, match=r"loop\.max_step_failures"):
        load_config(None, ["loop.max_step_failures=0"], environ={})


def test_the_cli_reports_a_node_crash_in_one_line(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 and one `error:` line, no traceback; with no rounds left after the give-up
    (`--rounds 0`), the closing start exits 1 in one line too."""

    from evoinstruct.graph.round import deps as round_deps

    # `run_daemon` looks this up at call time: the CLI's daemon gets the scripted teacher.
    monkeypatch.setattr(
        round_deps,
        "deps_for_project",
        lambda project, config, models=None: fresh_deps(project, config),
    )
    Broken(monkeypatch, "evolve", round=1)
    args = ["run", "--project", project.root, "--no-check", "--set", "loop.max_step_failures=2"]
    for attempt in (1, 2):
        result = run_cli(capsys, *args)
        assert result.code == 1, result.err
        assert result.err.startswith("error: round 1 failed at evolve: ValueError: evolve hit")
        assert len(result.err.strip().splitlines()) == 1
        assert "Traceback" not in result.err + result.out
        then = "(1 of 2 failures in a row)" if attempt == 1 else "next start closes round 1"
        assert then in result.err
    result = run_cli(capsys, *args, "--rounds", "0")
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert result.err.startswith("error: round 1 closed as failed (evolve failed 2 starts")
    assert "closed as failed" in result.out  # the progress view said so as it happened
    with open_store(project.pool_path) as store:
        assert store.round(1)["phase"] == "failed"
