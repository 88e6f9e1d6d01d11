"""The stage names are one enum, and what it stores is the plain string it always was."""

from __future__ import annotations

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START

from evoinstruct.cli.report.funnel import STAGE_ORDER
from evoinstruct.graph.round.build import build_graph
from evoinstruct.graph.round.stages import StageContext
from evoinstruct.store.records import ExampleDraft, Rejection
from evoinstruct.store.stages import PIPELINE, TRAINING, Stage


def test_the_builder_runs_the_pipeline_in_stage_order() -> None:
    edges = {(a, b) for a, b in build_graph().edges}
    order, node = [], START
    while nexts := [b for a, b in edges if a == node]:
        (node,) = nexts  # the pipeline has one way through
        order.append(node)
    assert order == list(PIPELINE)
    assert all(type(name) is str for name in order)  # checkpoints keep plain strings
    assert set(TRAINING) | {Stage.WEAK_TO_STRONG} <= set(build_graph().nodes)


def test_pipeline_and_funnel_follow_the_enum_order() -> None:
    members = list(Stage)
    for order in (PIPELINE, STAGE_ORDER):
        positions = [members.index(s) for s in order]
        assert positions == sorted(positions)


def test_every_stage_round_trips_through_the_store_unchanged(store) -> None:
    (kept,) = store.add_candidates([ExampleDraft("Name a colour.", output="Blue.")], round=1).ids
    ctx = StageContext(store, 1, batch_size=10)
    rejections = [Rejection(stage, f"reason_{stage}", text=f"t {stage}") for stage in Stage]
    store.record_rejections(rejections, 1)
    rows = store.rejections(round=1)
    assert sorted(row["stage"] for row in rows) == sorted(s.value for s in Stage)
    assert all(type(row["stage"]) is str for row in rows)
    counts = store.rejection_counts(1)
    for stage in Stage:
        assert counts[stage.value] == {f"reason_{stage.value}": 1}
        # A done mark written with the enum is the mark a stored string finds, and back.
        store.mark_done([kept], ctx.mark(stage))
        assert ctx.finished(store.get(kept), stage.value)
        assert ctx.mark(stage) == f"{stage.value}_r1"


def test_round_counts_keyed_by_stage_checkpoint_as_plain_strings() -> None:
    serde = JsonPlusSerializer()
    by_enum = {"counts": {stage: {"n": 1} for stage in Stage}}
    by_text = {"counts": {stage.value: {"n": 1} for stage in Stage}}
    assert serde.dumps_typed(by_enum) == serde.dumps_typed(by_text)
