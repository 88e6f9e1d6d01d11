"""The stage drivers the daemon's nodes and `evoinstruct filter` share, on a real SQLite pool.

One retry policy (a failed call is no verdict, its example waits), one
transaction per batch, and filter inputs that the selector may drop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langgraph.runtime import Runtime

from evoinstruct.agents.responder import RespondOutcome
from evoinstruct.agents.selector import SelectOutcome
from evoinstruct.cli.filtering.pipeline import run_filter
from evoinstruct.graph.config import load_config
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.round import nodes, stages
from evoinstruct.graph.round.stages import StageContext
from evoinstruct.models.base import Failure
from evoinstruct.models.factory import ModelSet
from evoinstruct.store.records import ExampleDraft, Rejection
from tests.fake_teacher import teacher_reply

REWRITE_PROMPT = "Below is an instruction of the type"


@pytest.fixture
def deps(seeded_deps):
    return seeded_deps


async def test_the_daemon_and_the_filter_critique_through_one_driver(
    deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driven: list[tuple[str, str]] = []
    run_batches = stages.run_batches

    async def spy(ctx: StageContext, stage: str, *args, **kwargs):
        driven.append((ctx.prefix, stage))
        return await run_batches(ctx, stage, *args, **kwargs)

    monkeypatch.setattr(stages, "run_batches", spy)
    await nodes.generate({"round": 1}, Runtime(context=deps))
    await nodes.critique({"round": 1}, Runtime(context=deps))
    data = tmp_path / "data.jsonl"
    rows = [{"instruction": "Explain why the sky is blue.", "output": "Rayleigh scattering."}]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    config = load_config(None, environ={})
    teacher = deps.extras["teacher"]
    models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
    await run_filter(data, tmp_path / "out.jsonl", config=config, models=models, steps="judge")
    assert driven == [("", "critique"), ("filter_", "critique")]


async def test_a_failed_rewrite_call_leaves_the_example_for_the_next_round(deps) -> None:
    """The daemon used to mark a failed rewrite done and select the example un-rewritten."""
    outage = {"on": True}

    def reply(request):
        text = request.messages[-1]["content"]
        if outage["on"] and text.startswith(REWRITE_PROMPT):
            return Failure("server", "HTTP 503 Service Unavailable")
        return teacher_reply(list(request.messages))

    deps.extras["teacher"].default = reply
    await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    failed = {r["example_id"] for r in deps.store.rejections(round=1, stage="rewrite")}
    assert failed, "some kept answers should have met the outage"
    for example in deps.store.get_many(sorted(failed)):
        assert example.status == "candidate"
        assert "done_rewrite_r1" not in example.meta and "done_select_r1" not in example.meta
        assert not deps.store.children(example.id)
    stages_r1 = deps.store.round(1)["counts"]["stages"]
    assert stages_r1["rewrite"]["unfinished"] == len(failed)

    outage["on"] = False
    await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
    for example in deps.store.get_many(sorted(failed)):
        assert example.meta.get("done_rewrite_r2") == 1 and example.status != "candidate"


async def test_a_crash_inside_a_critique_batch_writes_nothing_of_it(
    deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores, rejections and done marks of a batch are one transaction in the daemon too."""
    await nodes.generate({"round": 1}, Runtime(context=deps))
    todo = [e.id for e in deps.store.pending(1, "critique_r1", has_output=True)]
    assert todo
    mark_done = deps.store.mark_done

    def killed(ids, stage):
        if stage == "critique_r1":  # the batch's last write, after its scores and rejections
            raise RuntimeError("killed mid-batch")
        return mark_done(ids, stage)

    monkeypatch.setattr(deps.store, "mark_done", killed)
    with pytest.raises(RuntimeError, match="killed mid-batch"):
        await nodes.critique({"round": 1}, Runtime(context=deps))
    assert not any(deps.store.scores_for(todo).values())
    assert not deps.store.rejections(round=1, stage="critique")
    assert {e.status for e in deps.store.get_many(todo)} == {"candidate"}

    monkeypatch.setattr(deps.store, "mark_done", mark_done)
    await nodes.critique({"round": 1}, Runtime(context=deps))  # the re-run does it all
    assert all(deps.store.scores_for(todo).values())
    assert not deps.store.pending(1, "critique_r1", has_output=True)


async def test_select_lets_seeds_through_and_may_drop_filter_inputs(store) -> None:
    ids = store.add_candidates(
        [
            ExampleDraft("A seed task.", output="Its answer.", source="seed"),
            ExampleDraft("A data set row.", output="Its answer.", source="filter_input"),
        ],
        round=1,
        status="candidate",
    ).ids
    seen: list[list[str]] = []

    async def drop_all(machine):
        seen.append([e.id for e in machine])
        rejections = [Rejection("select", "over_budget", example_id=e.id) for e in machine]
        return SelectOutcome(rejections=rejections)

    ctx = StageContext(store, 1, batch_size=8)
    chosen = await stages.select(ctx, store.get_many(ids), drop_all)
    assert seen == [[ids[1]]]  # only the filter input competed
    assert chosen.accepted == [ids[0]]
    assert [e.status for e in store.get_many(ids)] == ["accepted", "rejected"]
    assert all(e.meta.get("done_select_r1") for e in store.get_many(ids))


async def test_batches_pass_failed_items_by_and_count_what_is_left(store) -> None:
    ids = store.add_candidates(
        [ExampleDraft(f"Task number {i}.", output="ok") for i in range(5)], round=1
    ).ids
    ctx = StageContext(store, 1, batch_size=2)
    calls: list[list[str]] = []

    async def answer(batch):
        calls.append([e.id for e in batch])
        outcome = RespondOutcome()
        outcome.fail(Failure("timeout", "read timed out"), batch[0])
        return outcome

    books = await stages.run_batches(
        ctx, "probe", answer, lambda batch, outcome: None, lambda o: 0, has_output=True
    )
    assert calls == [ids[0:2], ids[2:4], ids[4:5]]  # each failed item met once
    assert (books.tried, books.unfinished) == (5, 3)
    assert [e.id for e in store.pending(1, "probe_r1", has_output=True)] == [
        ids[0],
        ids[2],
        ids[4],
    ]
