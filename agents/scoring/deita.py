"""Deita complexity and quality scores, and their product.

With a scorer model the score is the expected value of a softmax over the
next-token logits of the options "1".."6" after a short prompt (Deita's
scorers). When no scorer is configured, or its backend cannot give logits
(UnsupportedError), the LLM judge answers the same prompts in text and the
fallbacks are counted. Combined = complexity × quality (one turn per example).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evoinstruct.agents.scoring.judge import ScoreTask, llm_scores
from evoinstruct.models.base import ChatModel, Message, model_version
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import UnsupportedError
from evoinstruct.store.records import Example, Rejection, Score

SCORER = "deita"
KINDS = ("complexity", "quality")
COMBINED = "combined"
DIMENSIONS = (*KINDS, COMBINED)


class DeitaConfig(BaseModel):
    """Deita's scorers (METHODS 2.2)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Compute Deita complexity and quality scores.")
    options: list[str] = Field(
        default_factory=lambda: ["1", "2", "3", "4", "5", "6"],
        description="Score tokens whose next-token probabilities are read; the prompt's scale.",
    )
    fallback_to_judge: bool = Field(
        True, description="Without a usable scorer, ask the judge model in text (counted)."
    )
    temperature: float = Field(0.0, ge=0, description="Judge fallback temperature.")
    max_tokens: int = Field(64, ge=4, description="Judge fallback answer length.")
    retries: int = Field(1, ge=0, le=3, description="Re-asks of an unparseable fallback answer.")

    @field_validator("options")
    @classmethod
    def _numeric(cls, value: list[str]) -> list[str]:
        try:
            [float(v) for v in value]
        except ValueError as exc:
            raise ValueError("options must be numbers such as '1'..'6'") from exc
        if len(value) < 2:
            raise ValueError("options needs at least two values")
        return value

    @property
    def scale(self) -> tuple[float, float]:
        numbers = [float(v) for v in self.options]
        return min(numbers), max(numbers)


@dataclass
class DeitaOutcome:
    """Scores, failures of the judge fallback, and which model scored (None: nothing ran)."""

    scores: list[Score] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    model_version: str | None = None


def expected_score(probs: Sequence[float], options: Sequence[str]) -> float | None:
    """Σ p_i · value_i over the options, renormalized; None when the probabilities are unusable."""
    if len(probs) != len(options):
        return None
    total = sum(probs)
    if total <= 0 or any(p < 0 for p in probs):
        return None
    return sum(p * float(o) for p, o in zip(probs, options, strict=True)) / total


def deita_messages(
    example: Example, kind: str, prompts: PromptLibrary, config: DeitaConfig
) -> list[Message]:
    """The scoring prompt of one kind (complexity sees the instruction, quality the response)."""
    low, high = config.scale
    variables = {"instruction": example.instruction, "input": example.input}
    if kind == "quality":
        variables["response"] = example.output or ""
    text = prompts.render(f"deita_{kind}", scale_min=low, scale_max=high, **variables)
    return [{"role": "user", "content": text}]


async def _from_logits(
    tasks: Sequence[ScoreTask], scorer: ChatModel, config: DeitaConfig, counters: Counter[str]
) -> list[Score]:
    """Expected-value scores from one batched `option_probs` call."""
    probs = await scorer.option_probs([t.messages for t in tasks], config.options)
    counters["scorer_calls"] += len(tasks)
    scores = []
    for task, row in zip(tasks, probs, strict=True):
        value = expected_score(row, config.options)
        if value is None:
            counters["deita_unusable_probs"] += 1
        scores.append(
            Score(task.example_id, SCORER, task.dimension, value, raw_output=json.dumps(row))
        )
    return scores


def combined_scores(scores: Sequence[Score]) -> list[Score]:
    """complexity × quality for every example that has both."""
    by_example: dict[str, dict[str, float]] = {}
    for score in scores:
        if score.value is not None and score.dimension in KINDS:
            by_example.setdefault(score.example_id, {})[score.dimension] = score.value
    return [
        Score(example_id, SCORER, COMBINED, values["complexity"] * values["quality"])
        for example_id, values in by_example.items()
        if len(values) == len(KINDS)
    ]


async def deita_scores(
    batch: Sequence[Example],
    *,
    scorer: ChatModel | None,
    judge: ChatModel | None,
    prompts: PromptLibrary,
    config: DeitaConfig,
    counters: Counter[str],
) -> DeitaOutcome:
    """Complexity, quality and combined scores for every example of the batch."""
    tasks = [
        ScoreTask(example.id, kind, deita_messages(example, kind, prompts, config))
        for example in batch
        for kind in KINDS
    ]
    outcome = DeitaOutcome()
    if not tasks:
        return outcome
    if scorer is not None:
        try:
            outcome.scores = await _from_logits(tasks, scorer, config, counters)
        except UnsupportedError:
            counters["deita_scorer_unsupported"] += 1
        else:
            outcome.scores += combined_scores(outcome.scores)
            outcome.model_version = model_version(scorer)
            return outcome
    if judge is None or not config.fallback_to_judge:
        counters["deita_skipped"] += len(batch)
        return outcome
    counters["deita_fallbacks"] += len(batch)
    scored = await llm_scores(
        judge,
        tasks,
        scorer=SCORER,
        prompts=prompts,
        counters=counters,
        scale=config.scale,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        retries=config.retries,
    )
    outcome.scores = scored.scores + combined_scores(scored.scores)
    outcome.rejections = scored.rejections
    outcome.model_version = model_version(judge)
    return outcome
