"""All wiring in one place: nodes, edges, the training branch and its router.

The daemon compiles this builder with its SQLite checkpointer; LangGraph Studio
(`langgraph.json`) serves it through `studio_graph`, with the dev server's checkpointer.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from langgraph.graph import END, START, StateGraph

from evoinstruct.graph.round import nodes, training_nodes, weak_to_strong
from evoinstruct.graph.round.deps import Deps
from evoinstruct.graph.round.state import RoundState
from evoinstruct.graph.round.studio import StudioGraph
from evoinstruct.store.stages import PIPELINE, Stage


def route_after_commit(state: RoundState) -> Literal[Stage.TRAIN, Stage.WEAK_TO_STRONG, "__end__"]:
    """Train (or, in that mode, run the weak-to-strong experiment) when the commit node found
    the schedule due."""
    if not state.get("train"):
        return END
    return Stage.WEAK_TO_STRONG if state.get("weak_to_strong") else Stage.TRAIN


def route_after_train(state: RoundState) -> Literal[Stage.EVALUATE, "__end__"]:
    return Stage.EVALUATE if state.get("trained_version") else END


def route_after_evaluate(state: RoundState) -> Literal[Stage.PROMOTE, "__end__"]:
    return Stage.PROMOTE if state.get("promoted") else END


def build_graph() -> StateGraph:
    """The round graph: an acyclic pipeline, then the optional training branch.

    Node names are the stages' plain strings: LangGraph keeps them in the checkpoints.
    """
    builder = StateGraph(RoundState, context_schema=Deps)
    for stage in PIPELINE:
        builder.add_node(str(stage), getattr(nodes, stage))
    builder.add_node(str(Stage.TRAIN), training_nodes.train)
    builder.add_node(str(Stage.EVALUATE), training_nodes.evaluate)
    builder.add_node(str(Stage.PROMOTE), training_nodes.promote)
    builder.add_node(str(Stage.WEAK_TO_STRONG), weak_to_strong.weak_to_strong)
    builder.add_edge(START, str(PIPELINE[0]))
    for a, b in pairwise(PIPELINE):
        builder.add_edge(str(a), str(b))
    builder.add_conditional_edges(
        str(Stage.COMMIT),
        route_after_commit,
        [str(Stage.TRAIN), str(Stage.WEAK_TO_STRONG), END],
    )
    builder.add_conditional_edges(str(Stage.TRAIN), route_after_train, [str(Stage.EVALUATE), END])
    builder.add_conditional_edges(
        str(Stage.EVALUATE), route_after_evaluate, [str(Stage.PROMOTE), END]
    )
    builder.add_edge(str(Stage.PROMOTE), END)
    builder.add_edge(str(Stage.WEAK_TO_STRONG), END)
    return builder


def studio_graph() -> StudioGraph:
    """For `langgraph dev` (`langgraph.json`): this builder, compiled without a checkpointer (the
    server brings its own), opening the project's dependencies at every run (see `studio`)."""
    return StudioGraph.from_compiled(build_graph().compile())
