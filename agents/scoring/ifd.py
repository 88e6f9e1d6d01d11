"""IFD (Cherry LLM): how much the instruction helps the model produce the answer.

IFD = mean answer loss given the instruction ÷ mean answer loss alone, both
from the student (or a configured scorer) through `model.loss`. Above 1 the
instruction does not help, so the critic drops the example; below, higher is
harder-but-learnable and is preferred: the selector keeps the top
`selector.ifd_top_fraction` by `top_ifd` (the paper kept the top 5–10%). The
backend tokenizes prompt and answer separately, so the answer span is the
same in both losses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.models.base import ChatModel, Message
from evoinstruct.store.errors import UnsupportedError
from evoinstruct.store.records import Example, Rejection, Score
from evoinstruct.store.stages import Stage

SCORER = "ifd"
DIMENSION = "ifd"


class IFDConfig(BaseModel):
    """Instruction-following difficulty (METHODS 2.3)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Compute IFD when a model with losses (the student) is given."
    )
    max_ifd: float = Field(
        1.0,
        gt=0,
        description="Drop examples whose IFD is above this (the instruction does not help).",
    )


@dataclass
class IFDOutcome:
    scores: list[Score] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def prompt_messages(example: Example) -> list[Message]:
    """The chat prompt the answer is conditioned on: system (if any) and the instruction."""
    user = example.instruction if not example.input else f"{example.instruction}\n\n{example.input}"
    messages: list[Message] = (
        [{"role": "system", "content": example.system}] if example.system else []
    )
    return [*messages, {"role": "user", "content": user}]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def ifd_value(conditioned: Sequence[float], alone: Sequence[float]) -> float | None:
    """Mean conditioned loss ÷ mean unconditioned loss; None if either is empty or zero."""
    numerator, denominator = _mean(conditioned), _mean(alone)
    if numerator is None or not denominator:
        return None
    return numerator / denominator


async def ifd_scores(
    batch: Sequence[Example], model: ChatModel, config: IFDConfig, counters: Counter[str]
) -> IFDOutcome:
    """IFD of every example from one batched `loss` call; IFD > max_ifd is a rejection."""
    outcome = IFDOutcome()
    if not batch:
        return outcome
    pairs = [(prompt_messages(e), e.output or "") for e in batch]
    pairs += [([], e.output or "") for e in batch]
    try:
        losses = await model.loss(pairs)
    except UnsupportedError:
        counters["ifd_unsupported"] += 1
        return outcome
    counters["loss_calls"] += len(pairs)
    for example, conditioned, alone in zip(
        batch, losses[: len(batch)], losses[len(batch) :], strict=True
    ):
        value = ifd_value(conditioned, alone)
        detail = {"loss_given_instruction": _mean(conditioned), "loss_alone": _mean(alone)}
        outcome.scores.append(
            Score(example.id, SCORER, DIMENSION, value, explanation=_describe(detail))
        )
        if value is None:
            counters["ifd_undefined"] += 1
        elif value > config.max_ifd:
            outcome.rejections.append(
                Rejection(
                    stage=Stage.CRITIQUE,
                    reason="ifd_above_1",
                    evidence={"ifd": value, "max_ifd": config.max_ifd, **detail},
                    example_id=example.id,
                    text=example.output,
                )
            )
    return outcome


def _describe(detail: dict[str, float | None]) -> str:
    return " ".join(f"{k}={v:.4f}" if v is not None else f"{k}=none" for k, v in detail.items())


def rank_by_ifd(scores: Sequence[Score], max_ifd: float = 1.0) -> list[str]:
    """Example ids with a usable IFD ≤ max_ifd, highest first (ties by id, deterministic).

    An id scored twice is ranked once, by its higher score.
    """
    usable = [
        s
        for s in scores
        if s.scorer == SCORER
        and s.dimension == DIMENSION
        and s.value is not None
        and s.value <= max_ifd
    ]
    usable.sort(key=lambda s: (-(s.value or 0.0), s.example_id))
    return list(dict.fromkeys(s.example_id for s in usable))


def top_ifd(scores: Sequence[Score], top_fraction: float, max_ifd: float = 1.0) -> list[str]:
    """Cherry LLM's choice: the top `top_fraction` of the IFD ranking (at least one if any)."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    ranked = rank_by_ifd(scores, max_ifd)
    if not ranked:
        return []
    keep = max(1, round(len(ranked) * top_fraction))
    return ranked[:keep]
