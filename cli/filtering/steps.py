"""The step names of `evoinstruct filter`, importable without loading the agents."""

from __future__ import annotations

STEPS = (
    "dedup",
    "novelty",
    "decontaminate",
    "judge",
    "ifd",
    "tags",
    "deita",
    "diversity",
    "rewrite",
)
DEFAULT_STEPS = ("dedup", "judge")
