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

PIPELINE = ("plan", "generate", "evolve", "respond", "critique", "rewrite", "select", "commit")


def route_after_commit(state: RoundState) -> Literal["train", "weak_to_strong", "__end__"]:
    """Train (or, in that mode, run the weak-to-strong experiment) when the commit node found
    the schedule due."""
    if not state.get("train"):
        return END
    return "weak_to_strong" if state.get("weak_to_strong") else "train"


def route_after_train(state: RoundState) -> Literal["evaluate", "__end__"]:
    return "evaluate" if state.get("trained_version") else END


def route_after_evaluate(state: RoundState) -> Literal["promote", "__end__"]:
    return "promote" if state.get("promoted") else END


def build_graph() -> StateGraph:
    """The round graph: an acyclic pipeline, then the optional training branch."""
    builder = StateGraph(RoundState, context_schema=Deps)
    for name in PIPELINE:
        builder.add_node(name, getattr(nodes, name))
    builder.add_node("train", training_nodes.train)
    builder.add_node("evaluate", training_nodes.evaluate)
    builder.add_node("promote", training_nodes.promote)
    builder.add_node("weak_to_strong", weak_to_strong.weak_to_strong)
    builder.add_edge(START, PIPELINE[0])
    for a, b in pairwise(PIPELINE):
        builder.add_edge(a, b)
    builder.add_conditional_edges("commit", route_after_commit, ["train", "weak_to_strong", END])
    builder.add_conditional_edges("train", route_after_train, ["evaluate", END])
    builder.add_conditional_edges("evaluate", route_after_evaluate, ["promote", END])
    builder.add_edge("promote", END)
    builder.add_edge("weak_to_strong", END)
    return builder


def studio_graph() -> StudioGraph:
    """For `langgraph dev` (`langgraph.json`): this builder, compiled without a checkpointer (the
    server brings its own), opening the project's dependencies at every run (see `studio`)."""
    return StudioGraph.from_compiled(build_graph().compile())
