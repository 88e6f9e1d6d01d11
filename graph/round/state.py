"""The graph's state: the round, the active model version, a plan and per-stage counts.

The pool never enters the state: nodes find their work in the store by round
and status, so the checkpoint written after every step stays a few hundred bytes.
"""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict


def merge_counts(
    left: dict[str, dict[str, int]], right: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """Per-stage counters; a stage that re-runs after a crash replaces its own entry."""
    return {**(left or {}), **(right or {})}


class RoundState(TypedDict, total=False):
    round: int
    model_version: str | None
    parent_ids: list[str]
    counts: Annotated[dict[str, dict[str, int]], merge_counts]
    train: bool
    weak_to_strong: bool  # the training branch runs the weak-to-strong experiment instead
    trained_version: str | None
    promoted: bool
    notes: Annotated[list[str], operator.add]
