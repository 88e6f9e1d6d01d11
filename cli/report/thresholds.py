"""The filters' thresholds, read from the resolved config stored with each round.

Only what a round actually ran with is drawn: a round whose stored config
lacks a setting (a hand-made round, or an `evoinstruct filter` generation,
which stores a fingerprint rather than the config) gets no line, never a
default guessed from today's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Bound = Literal["min", "max"]


@dataclass(frozen=True)
class Threshold:
    """One bound a filter applies: keep values >= (min) or <= (max) `value`; `key` names the setting."""

    bound: Bound
    value: float
    key: str

    @property
    def label(self) -> str:
        sign = "≥" if self.bound == "min" else "≤"
        return f"keep {sign} {self.value:g} ({self.key})"


_STATS_BOUNDS: dict[str, tuple[tuple[Bound, str], ...]] = {
    "instruction_words": (("min", "min_instruction_words"),),
    "output_words": (("min", "min_output_words"), ("max", "max_output_words")),
    "mtld": (("min", "min_mtld"),),
    "repetition": (("max", "max_repetition"),),
}
_SELECTOR_TABLES: tuple[tuple[Bound, str], ...] = (("min", "min_scores"), ("max", "max_scores"))


def _get(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _enabled(config: dict[str, Any], path: str) -> bool:
    # A part whose flag is missing from the stored config ran with whatever it had: no line.
    return _get(config, path) is True


def score_thresholds(config: dict[str, Any], scorer: str, dimension: str) -> list[Threshold]:
    """The bounds a (scorer, dimension) score is held to under this round's config."""
    out: list[Threshold] = []

    def add(bound: Bound, path: str, value: Any = None) -> None:
        number = _number(_get(config, path) if value is None else value)
        if number is not None:
            out.append(Threshold(bound, number, path))

    if scorer == "judge" and _enabled(config, "critic.judge.enabled"):
        add("min", "critic.judge.threshold")
    if scorer == "ifd" and dimension == "ifd" and _enabled(config, "critic.ifd.enabled"):
        add("max", "critic.ifd.max_ifd")
    if scorer == "stats" and _enabled(config, "critic.stats.enabled"):
        for bound, name in _STATS_BOUNDS.get(dimension, ()):
            add(bound, f"critic.stats.{name}")
    # The selector bounds a dimension whichever scorer gave it (it averages them).
    steps = _get(config, "selector.steps")
    if scorer != "judge" and isinstance(steps, list) and "thresholds" in steps:
        for bound, table in _SELECTOR_TABLES:
            limits = _get(config, f"selector.{table}")
            if isinstance(limits, dict) and dimension in limits:
                add(bound, f"selector.{table}.{dimension}", limits[dimension])
    return out


def length_thresholds(
    config: dict[str, Any], field: Literal["instruction", "response"]
) -> list[Threshold]:
    """Word-count bounds on the instruction (with its input) or the response: the critic's
    statistics' own, and any the selector puts on the same measure."""
    dimension = "instruction_words" if field == "instruction" else "output_words"
    return score_thresholds(config, "stats", dimension)
