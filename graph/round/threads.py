"""A round is one thread of the graph's checkpointer: its id names the round, and the run config
the daemon, `inspect` and LangGraph Studio pass with it (no LangGraph import: the daemon's
start and `inspect` read it before any graph is built)."""

from __future__ import annotations

from typing import Any


def thread_id(round: int) -> str:
    return f"round-{round:06d}"


def run_config(round: int) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id(round)}, "metadata": {"round": round}}
