"""The graph at three levels: nodes and routers directly, one node of the compiled graph, a whole round."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime

from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.project import Project
from evoinstruct.graph.round import nodes
from evoinstruct.graph.round.build import (
    PIPELINE,
    build_graph,
    route_after_commit,
    route_after_evaluate,
)
from evoinstruct.graph.round.threads import run_config
from evoinstruct.store.records import ExampleDraft, Rejection
from evoinstruct.store.seeds import add_seed_file


@pytest.fixture
def deps(seeded_deps):
    return seeded_deps


def test_routers_are_pure_functions_of_state() -> None:
    assert route_after_commit({"train": True}) == "train"
    assert route_after_commit({"train": False}) == "__end__"
    assert route_after_commit({}) == "__end__"
    assert route_after_evaluate({"promoted": True}) == "promote"
    assert route_after_evaluate({"promoted": False}) == "__end__"


async def test_plan_node_is_seeded_by_the_round(deps) -> None:
    runtime = Runtime(context=deps)
    first = await nodes.plan({"round": 1}, runtime)
    again = await nodes.plan({"round": 1}, runtime)
    assert first["parent_ids"] == again["parent_ids"]
    assert len(first["parent_ids"]) == deps.config.loop.evolve_per_round
    assert set(first.keys()) == {"parent_ids", "counts"}  # a partial update, never the whole state


async def test_generate_node_adds_candidates_with_provenance(deps) -> None:
    update = await nodes.generate({"round": 1}, Runtime(context=deps))
    new = [e for e in deps.store.iter_examples(source="generated")]
    assert update["counts"]["generate"]["new"] == len(new) > 0
    for example in new:
        assert example.round == 1 and example.status == "candidate"
        assert example.template and example.model_version == "scripted"
        assert example.output  # Self-Instruct instances give each task an output
    # A re-run (a crash after the writes) adds nothing.
    again = await nodes.generate({"round": 1}, Runtime(context=deps))
    assert again["counts"]["generate"]["new"] == 0


async def test_one_node_of_the_compiled_graph(deps) -> None:
    """Run only `critique` of a compiled graph, from a state as if `respond` had just finished."""
    await nodes.generate({"round": 1}, Runtime(context=deps))
    graph = build_graph().compile(checkpointer=InMemorySaver(), interrupt_after=["critique"])
    config = run_config(1)
    await graph.aupdate_state(config, {"round": 1, "counts": {}}, as_node="respond")
    async for _ in graph.astream(None, config, context=deps):
        pass
    snapshot = await graph.aget_state(config)
    assert snapshot.next == ("rewrite",)
    assert "critique" in snapshot.values["counts"]
    judged = [e for e in deps.store.iter_examples(source="generated")]
    scores = deps.store.scores_for([e.id for e in judged])
    assert all(any(s.scorer == "judge" for s in scores[e.id]) for e in judged)


async def test_whole_round_grows_the_pool_with_full_lineage(deps) -> None:
    before = deps.store.pool_stats()["by_status"]["accepted"]
    result = await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    assert result.rounds_run == [1]
    stats = deps.store.pool_stats()
    assert stats["by_status"]["accepted"] > before and stats["by_status"]["candidate"] == 0
    for example in deps.store.iter_examples():
        if example.source == "seed":
            continue
        assert example.round == 1 and example.template and example.model_version
        if example.source in ("evolved", "rewritten"):
            parent = deps.store.get(example.parent_id)
            assert parent is not None and example.operation
        if example.source == "evolved":
            assert example.depth == parent.depth + 1
    round_row = deps.store.round(1)
    assert round_row["finished_at"] and round_row["counts"]["stages"]["select"]["accepted"] > 0
    assert set(round_row["counts"]["stages"]) == set(PIPELINE) - {"commit"}


class RecordingTrainer:
    """Stands in for TrainerSteps where only the routing is under test."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.trained: list[int] = []

    def due(self, store, round_number: int) -> tuple[bool, str]:
        return round_number % self.every == 0, f"every {self.every}"

    async def train(self, stopping=None) -> dict:
        self.trained.append(len(self.trained) + 1)
        return {"version": f"v{len(self.trained)}"}

    async def evaluate(self, store, version, models, prompts, progress=None):
        from evoinstruct.trainer.evaluate import GateDecision

        class Evaluation:
            decision = GateDecision(False, "test gate: keep the teacher")

        return Evaluation()


async def test_training_branch_is_taken_exactly_when_due(deps) -> None:
    deps.trainer = RecordingTrainer(every=2)
    result = await Daemon(deps.project, deps, DaemonOptions(rounds=4)).run()
    assert result.rounds_run == [1, 2, 3, 4]
    assert deps.trainer.trained == [1, 2]  # after rounds 2 and 4 only


async def test_no_training_when_the_trainer_has_no_base_model(deps) -> None:
    assert deps.config.trainer.base_model is None
    await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    assert deps.store.round(1)["counts"]["training"] == "trainer.base_model is not set"


def test_studio_factory_compiles_without_a_checkpointer() -> None:
    from evoinstruct.graph.round.build import studio_graph

    graph = studio_graph()
    assert graph.checkpointer is None
    assert set(PIPELINE) <= set(graph.get_graph().nodes)


def test_a_second_daemon_on_one_project_is_refused(deps) -> None:
    from filelock import FileLock

    from evoinstruct.store.errors import ProjectError

    with (
        FileLock(str(deps.project.lock_path)),
        pytest.raises(ProjectError, match="already running"),
    ):
        asyncio.run(Daemon(deps.project, deps, DaemonOptions(rounds=1)).run())


def test_seed_added_between_rounds_is_picked_up(deps, tmp_path: Path) -> None:
    asyncio.run(Daemon(deps.project, deps, DaemonOptions(rounds=1)).run())
    seeds = tmp_path / "more.txt"
    seeds.write_text(
        "Explain how a lighthouse lens focuses light for passing ships.\n", encoding="utf-8"
    )
    add_seed_file(deps.store, seeds)
    new_seed = next(
        e for e in deps.store.iter_examples(source="seed") if "lighthouse" in e.instruction
    )
    assert new_seed.status == "candidate" and new_seed.output is None
    asyncio.run(Daemon(deps.project, deps, DaemonOptions(rounds=1)).run())
    answered = deps.store.get(new_seed.id)
    # Answered by the responder in round 2, judged like any answer, and kept: a human
    # prompt is never dropped (a low score is recorded with it) nor rewritten away.
    assert answered.output and answered.meta["done_respond_r2"] == 1
    assert answered.status == "accepted" and answered.source == "seed"
    assert any(s.scorer == "judge" for s in deps.store.scores_for([answered.id])[answered.id])
    assert not [c for c in deps.store.children(answered.id) if c.source == "rewritten"]


async def test_a_judge_outage_leaves_candidates_for_the_next_round(deps) -> None:
    """Failed judge calls are no verdict: select waits, and the next round judges them."""
    from evoinstruct.models.base import Failure
    from tests.fake_teacher import teacher_reply

    outage = {"on": True}

    def reply(request):
        text = request.messages[-1]["content"]
        if outage["on"] and "Give a score from" in text:
            return Failure("connection", "judge unreachable")
        return teacher_reply(list(request.messages))

    teacher = deps.extras["teacher"]
    teacher.default = reply
    await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    waiting = [e for e in deps.store.iter_examples(status="candidate") if e.output]
    assert waiting, "the unjudged answers should still be candidates"
    assert not deps.store.rejections(reason="missing_score")
    outage["on"] = False
    await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    for example in deps.store.get_many([e.id for e in waiting]):
        assert example.status != "candidate"
        assert any(
            s.scorer == "judge" and s.value is not None
            for s in deps.store.scores_for([example.id])[example.id]
        )


async def test_an_equality_check_outage_is_no_verdict(deps) -> None:
    """A failed equality call (an HTTP 503) neither rejects nor marks the evolved child:
    it waits, unjudged, and the next round's check decides it."""
    from evoinstruct.models.base import Failure
    from tests.fake_teacher import teacher_reply

    outage = {"on": True}

    def reply(request):
        text = request.messages[-1]["content"]
        if outage["on"] and text.startswith("Compare the two instructions below"):
            return Failure("server", "HTTP 503 Service Unavailable")
        return teacher_reply(list(request.messages))

    deps.extras["teacher"].default = reply
    await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    evolved = list(deps.store.iter_examples(source="evolved"))
    waiting = [e for e in evolved if e.output and e.status == "candidate"]
    assert waiting, "children whose check failed should still be candidates"
    assert not [e for e in evolved if e.status == "accepted"]  # none skipped the check
    for child in waiting:
        assert "done_eliminate_r1" not in child.meta and "done_critique_r1" not in child.meta
    assert all(Rejection.from_row(r).is_verdict for r in deps.store.rejections())
    assert deps.store.round(1)["counts"]["stages"]["respond"]["unchecked"] == len(waiting)

    outage["on"] = False
    await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    for child in deps.store.get_many([e.id for e in waiting]):
        assert child.meta.get("done_eliminate_r2") == 1
        assert child.status != "candidate"


def test_project_paths(tmp_path: Path) -> None:
    project = Project(tmp_path)
    assert project.checkpoints_path.name == "checkpoints.db" and project.pool_path.name == "pool.db"


async def test_project_prompt_overrides_reach_the_agents(deps) -> None:
    """A user's own template in <project>/prompts/ replaces the packaged one for that round."""
    custom = deps.project.prompts_dir / "en"
    custom.mkdir(parents=True)
    (custom / "respond.jinja2").write_text(
        "{# variables: instruction, input | output: the answer #}\nHOUSE STYLE. {{ instruction }} {{ input }}\n",
        encoding="utf-8",
    )
    from evoinstruct.prompts.library import PromptLibrary

    deps.prompts = PromptLibrary("en", override_dir=deps.project.prompts_dir)
    ids = deps.store.add_candidates(
        [ExampleDraft("Name three rivers in Asia.")],
        1,
    ).ids
    await nodes.respond({"round": 1}, Runtime(context=deps))
    teacher = deps.extras["teacher"]
    assert any(
        r.messages[-1]["content"].startswith("HOUSE STYLE. Name three rivers")
        for r in teacher.calls
    )
    assert deps.store.get(ids[0]).output


class FailingTrainer(RecordingTrainer):
    async def train(self, stopping=None) -> dict:
        from evoinstruct.store.errors import EvoError

        raise EvoError("no base model to train: set trainer.base_model")


async def test_a_failed_training_ends_the_branch_and_the_daemon_goes_on(deps) -> None:
    deps.trainer = FailingTrainer(every=1)
    result = await Daemon(deps.project, deps, DaemonOptions(rounds=2)).run()
    assert result.rounds_run == [1, 2]  # round 1's failure did not wedge round 2
    assert deps.store.round(1)["counts"]["training"].startswith("training failed: no base model")
    assert deps.store.active_model() is None


async def test_select_measures_diversity_against_the_accepted_pool(deps) -> None:
    """A candidate that says what an earlier round's accepted example said is not diverse."""
    answer = "Tides come from the pull of the moon and the sun on the oceans, twice a day."
    old = deps.store.add_candidates([ExampleDraft("Why are there tides?", output=answer)], 1).ids[0]
    deps.store.set_status([old], "accepted")
    fresh = deps.store.add_candidates(
        [ExampleDraft("Why are there tides in the sea?", output=answer)], 2
    )
    other = deps.store.add_candidates(
        [
            ExampleDraft(
                "List three uses of copper wire.",
                output="Electrical wiring, motors and plumbing joints.",
            )
        ],
        2,
    )
    ids = fresh.ids + other.ids
    deps.store.mark_done(ids, "critique_r2")
    update = await nodes.select({"round": 2}, Runtime(context=deps))
    assert deps.store.get(fresh.ids[0]).status == "rejected"
    assert deps.store.get(other.ids[0]).status == "accepted"
    assert update["counts"]["select"].get("not_diverse") == 1


async def test_a_round_says_whether_a_version_trains_and_why(deps) -> None:
    """The schedule's reason reaches the finished round's line, where the user is looking."""
    import io

    from evoinstruct.cli.progress import ProgressView

    deps.trainer = RecordingTrainer(every=2)
    out = io.StringIO()
    with ProgressView(out, live=False) as view:
        await Daemon(deps.project, deps, DaemonOptions(rounds=2), progress=view).run()
    lines = [line for line in out.getvalue().splitlines() if " finished: " in line]
    assert "no version this round: every 2" in lines[0]
    assert "a version trains: every 2" in lines[1]
