"""AlpaGasus LLM-as-judge: a 0–5 score per configured dimension, parsed robustly.

The judge sees (instruction, input, response) and answers with the score on
its first line and a short explanation after it — or, with `structured`, a
JSON object constrained by a schema. Parsing never invents a score: an answer
with no readable number is retried once with a reminder, then stored as a
missing score (value None) with its raw text, never as 0.

The batched scoring loop (`llm_scores`) also serves Deita's judge fallback.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evoinstruct.agents.outcome import count_call, failure_rejection
from evoinstruct.models.base import ChatModel, ChatRequest, Failure, Message, Result
from evoinstruct.models.structured import parse_json_as
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, Rejection, Score
from evoinstruct.store.stages import Stage

SCORER = "judge"
SCALE = (0.0, 5.0)  # the judge's scale: the prompt states it; a number outside it is no score
DIMENSIONS = ("accuracy", "helpfulness", "relevance", "level_of_detail", "harmlessness")


class JudgeConfig(BaseModel):
    """The LLM judge (METHODS 2.1)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Score examples with the LLM judge.")
    dimensions: list[str] = Field(
        default_factory=lambda: ["accuracy"],
        min_length=1,
        description=f"Dimensions to score, one call each; known: {', '.join(DIMENSIONS)}.",
    )
    threshold: float | None = Field(
        4.5,
        ge=0,
        le=5,
        description="Keep an example only if every dimension scores at least this (AlpaGasus: 4.5). The one place the judge's bar is set.",
    )
    on_missing: Literal["keep", "reject"] = Field(
        "reject",
        description="An answer the judge could not score even after a retry: reject it, or keep it unscored.",
    )
    temperature: float = Field(0.0, ge=0, description="Judge sampling temperature.")
    max_tokens: int = Field(256, ge=8, description="Room for the score and its explanation.")
    structured: bool = Field(
        False, description="Ask for JSON constrained by a schema (servers with structured output)."
    )
    retries: int = Field(1, ge=0, le=3, description="Re-asks of an unparseable answer.")

    @field_validator("dimensions")
    @classmethod
    def _clean_dimensions(cls, value: list[str]) -> list[str]:
        cleaned = [d.strip().lower().replace(" ", "_") for d in value]
        if any(not d for d in cleaned) or len(set(cleaned)) != len(cleaned):
            raise ValueError("dimensions must be distinct non-empty names")
        return cleaned


# --- parsing --------------------------------------------------------------------------------


@dataclass
class Judgement:
    """A parsed judge answer; value None means no score could be read."""

    value: float | None
    explanation: str = ""


_NUM = r"(\d+(?:\.\d+)?)"
_DEN = r"(?:\s*(?:/|out\s+of|分?满分|of)\s*(\d+))?"
_LABEL = (
    r"(?:score|rating|grade|accuracy|helpfulness|relevance|level[ _]of[ _]detail|harmlessness"
    r"|评分|得分|分数|打分|分值|准确性|有用性|相关性|详细程度|无害性)"
)
# "Accuracy: 95%" is a claim in the explanation, not a score.
_LABELED = re.compile(
    rf"{_LABEL}[\"'*\s]*(?:is|of|为|是)?\s*[:：=]?[\s*\"'\[]*(?:is|为|是)?\s*{_NUM}(?![\d.]|\s*%){_DEN}",
    re.IGNORECASE,
)
_FRACTION = re.compile(rf"(?<![\d.]){_NUM}\s*(?:/|out\s+of)\s*(\d+)", re.IGNORECASE)
_MARKED = re.compile(rf"(?:\*\*|\[\[)\s*{_NUM}{_DEN}\s*(?:\*\*|\]\])")
# "4分" is a score; "满分5分" (out of 5) and "10分钟" (minutes) are not.
_UNIT_ZH = re.compile(rf"(?<!满分)(?<!满分为)(?<!满分是)(?<![\d.]){_NUM}\s*分(?!钟)")
# A whole first line that is a score ("4.5", "**4**", "[[4]]", "8/10", "4分"), or a score, a
# separator and its reason ("4 - mostly right"); never a number starting a sentence ("5 apples").
_SCORE_LINE = re.compile(
    rf"^[\s#*>\[]*{_NUM}(?:\s*(?:/|out\s+of)\s*(\d+))?\s*(?:分|points?)?[\s*\]]*"
    rf"(?:[.。!！]?\s*$|[-–—:：|,，)]\s*\S)",
    re.IGNORECASE,
)


def _score_value(number: str, denominator: str | None, scale: tuple[float, float]) -> float | None:
    """The number as a score on `scale` (a fraction of another base rescaled), or None when it
    cannot be one: outside the scale, or more than its denominator. Never clamped."""
    low, high = scale
    value = float(number)
    if denominator is not None:
        base = float(denominator)
        if base <= 0 or value > base:
            return None
        if base != high:
            value = value / base * high
    return value if low <= value <= high else None


def _first_score(
    patterns: Sequence[re.Pattern[str]], text: str, scale: tuple[float, float]
) -> float | None:
    for pattern in patterns:
        for match in pattern.finditer(text):
            start = match.start(1)
            if start and text[start - 1] in "-−":
                continue  # "-1" is a negative number, not a score of 1
            groups = match.groups()
            denominator = groups[1] if len(groups) > 1 else None
            if pattern is _FRACTION and float(denominator or 0) != scale[1]:
                continue  # an unlabelled "180 / 2" is arithmetic; only "x/5" reads as a score
            value = _score_value(groups[0], denominator, scale)
            if value is not None:
                return value
    return None


def parse_score(text: str | None, scale: tuple[float, float] = SCALE) -> Judgement:
    """Read a score the judge gave as a score: the first line first, then marked forms anywhere.

    Accepts a first line that is the score ("4.5", "**4**", "[[4]]", "4/5", "4分", "4 - why"),
    and labelled, marked or fractional forms ("Score: 4.5", "4.5/5", "评分：4分", {"score": 4}).
    A number outside `scale`, a negative one, or a bare number inside a sentence ("12
    multiplied by 3 is 36.", "180 / 2 = 90 km", "5 apples") is not a score: value None,
    never clamped into range.
    """
    text = (text or "").strip()
    if not text:
        return Judgement(None, "")
    first, _, rest = text.partition("\n")
    found = _first_score((_LABELED, _MARKED, _UNIT_ZH, _FRACTION, _SCORE_LINE), first, scale)
    if found is not None:
        return Judgement(found, rest.strip() or first.strip())
    return Judgement(_first_score((_LABELED, _MARKED, _UNIT_ZH, _FRACTION), text, scale), text)


def parse_judgement(text: str | None) -> Judgement:
    """The judge's 0–5 answer: score on the first line, explanation after it."""
    return parse_score(text, SCALE)


class JudgementJSON(BaseModel):
    """The structured answer the judge_json prompt asks for."""

    model_config = ConfigDict(extra="ignore")

    score: float
    explanation: str = ""

    @field_validator("score", mode="before")
    @classmethod
    def _not_a_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("a score is a number, not a boolean")
        return value


def parse_judgement_json(text: str | None, scale: tuple[float, float] = SCALE) -> Judgement:
    """A structured answer {"score": .., "explanation": ..}; free-text parsing as fallback
    (a truncated object still shows `"score": 4.5` to the regex)."""
    try:
        parsed = parse_json_as(JudgementJSON, text or "")
    except ValidationError:
        return parse_score(text, scale)
    return Judgement(_score_value(str(parsed.score), None, scale), parsed.explanation)


def judge_schema(scale: tuple[float, float] = SCALE) -> dict:
    """The JSON schema of a structured judgement."""
    return {
        "title": "judgement",
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": scale[0], "maximum": scale[1]},
            "explanation": {"type": "string"},
        },
        "required": ["score", "explanation"],
        "additionalProperties": False,
    }


# --- batched calls with accounting ----------------------------------------------------------


async def generate_counted(
    model: ChatModel, requests: Sequence[ChatRequest], counters: Counter[str]
) -> list[Result]:
    """One batched `generate`, with calls, tokens, truncations and failures counted."""
    if not requests:
        return []
    results = await model.generate(list(requests))
    for result in results:
        count_call(counters, result)
    return results


@dataclass
class ScoreTask:
    """One scoring request: which example, which dimension, the rendered messages."""

    example_id: str
    dimension: str
    messages: list[Message]


@dataclass
class LLMScoreOutcome:
    scores: list[Score] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


async def llm_scores(
    model: ChatModel,
    tasks: Sequence[ScoreTask],
    *,
    scorer: str,
    prompts: PromptLibrary,
    counters: Counter[str],
    scale: tuple[float, float] = SCALE,
    temperature: float = 0.0,
    max_tokens: int = 256,
    structured: bool = False,
    retries: int = 1,
) -> LLMScoreOutcome:
    """Score every task in one batch, re-ask unparseable answers once per retry, in batches.

    A failure becomes a rejection; an answer that stays unparseable becomes a
    Score with value None and the raw text.
    """
    schema = judge_schema(scale) if structured else None
    parse: Callable[[str], Judgement] = (
        (lambda t: parse_judgement_json(t, scale))
        if structured
        else (lambda t: parse_score(t, scale))
    )
    requests = [
        ChatRequest(
            messages=t.messages, temperature=temperature, max_tokens=max_tokens, json_schema=schema
        )
        for t in tasks
    ]
    outcome = LLMScoreOutcome()
    pending = list(range(len(tasks)))
    for attempt in range(retries + 1):
        results = await generate_counted(model, [requests[i] for i in pending], counters)
        unreadable: list[tuple[int, str]] = []
        for index, result in zip(pending, results, strict=True):
            task = tasks[index]
            if isinstance(result, Failure):
                outcome.rejections.append(
                    failure_rejection(result, task.example_id, Stage.CRITIQUE)
                )
                continue
            judgement = parse(result.text)
            if judgement.value is None:
                unreadable.append((index, result.text))
                continue
            outcome.scores.append(
                Score(
                    task.example_id,
                    scorer,
                    task.dimension,
                    judgement.value,
                    raw_output=result.text,
                    explanation=judgement.explanation,
                )
            )
        if attempt == retries:
            counters[f"{scorer}_unparseable"] += len(unreadable)
            outcome.scores.extend(
                Score(tasks[i].example_id, scorer, tasks[i].dimension, None, raw_output=raw)
                for i, raw in unreadable
            )
            break
        if not unreadable:
            break
        counters[f"{scorer}_retries"] += len(unreadable)
        reminder = prompts.render("judge_retry", scale_min=scale[0], scale_max=scale[1])
        for index, raw in unreadable:
            requests[index] = _with_reminder(requests[index], raw, reminder)
        pending = [index for index, _ in unreadable]
    return outcome


def _with_reminder(request: ChatRequest, answer: str, reminder: str) -> ChatRequest:
    """The same conversation plus the unreadable answer and a reminder of the format.

    Re-sending the identical request at temperature 0 would return the same
    (cached) answer; the reminder makes the retry a new request.
    """
    messages = [
        *request.messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": reminder},
    ]
    return ChatRequest(
        messages=messages,
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        json_schema=request.json_schema,
    )


# --- the judge pass -------------------------------------------------------------------------


@dataclass
class JudgeOutcome:
    """Judge scores for every (example, dimension) and the rejections they imply."""

    scores: list[Score] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def judge_messages(
    example: Example, dimension: str, prompts: PromptLibrary, structured: bool
) -> list[Message]:
    """The rendered judge prompt for one example and one dimension."""
    text = prompts.render(
        "judge_json" if structured else "judge",
        instruction=example.instruction,
        input=example.input,
        response=example.output or "",
        dimension=dimension,
        scale_min=SCALE[0],
        scale_max=SCALE[1],
    )
    return [{"role": "user", "content": text}]


def threshold_rejections(
    scores: Sequence[Score], config: JudgeConfig, texts: dict[str, str | None]
) -> list[Rejection]:
    """One rejection per example with a dimension below the threshold (or missing, if asked)."""
    rejected: dict[str, Rejection] = {}
    for score in scores:
        if score.example_id in rejected or config.threshold is None:
            continue
        if score.value is None and config.on_missing == "reject":
            reason = "judge_missing"
        elif score.value is not None and score.value < config.threshold:
            reason = "judge_below_threshold"
        else:
            continue
        rejected[score.example_id] = Rejection(
            stage=Stage.CRITIQUE,
            reason=reason,
            evidence={
                "dimension": score.dimension,
                "score": score.value,
                "threshold": config.threshold,
            },
            raw_output=score.raw_output,
            example_id=score.example_id,
            text=texts.get(score.example_id),
        )
    return list(rejected.values())


async def judge_examples(
    batch: Sequence[Example],
    model: ChatModel,
    prompts: PromptLibrary,
    config: JudgeConfig,
    counters: Counter[str],
) -> JudgeOutcome:
    """Score every example on every configured dimension in one batch of calls."""
    tasks = [
        ScoreTask(
            example.id, dimension, judge_messages(example, dimension, prompts, config.structured)
        )
        for example in batch
        for dimension in config.dimensions
    ]
    scored = await llm_scores(
        model,
        tasks,
        scorer=SCORER,
        prompts=prompts,
        counters=counters,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        structured=config.structured,
        retries=config.retries,
    )
    texts = {example.id: example.output for example in batch}
    rejections = scored.rejections + threshold_rejections(scored.scores, config, texts)
    return JudgeOutcome(scores=scored.scores, rejections=rejections)


def distribution(scores: Sequence[Score], dimension: str, step: float = 0.5) -> dict[str, int]:
    """Counts of scores per bin of `step` (judges clump at 4–4.5); missing ones under "none"."""
    counts: Counter[str] = Counter()
    for score in scores:
        if score.dimension != dimension:
            continue
        if score.value is None:
            counts["none"] += 1
        else:
            counts[f"{(score.value // step) * step:g}"] += 1
    return dict(sorted(counts.items()))
