"""Model-free statistics of an example: length, MTLD, repetition, refusals, language.

These are the critic's cheap first pass (EasyInstruct's order: statistics
before any model call). Every measure works on English and Chinese: a CJK
character counts as one token, a run of other letters or digits as one word,
so "用Python写代码" is 5 tokens. Lengths are words and the language is en / zh / other
as `evoinstruct.text.rules` counts and decides them (the constraint checkers' words:
"GPT-4" is two); MTLD and repetition use the selection filters' tokens
(`agents.text.tokenize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.text import tokenize
from evoinstruct.store.records import Example, Rejection, Score
from evoinstruct.store.stages import Stage
from evoinstruct.text.rules import count_words, language_of

SCORER = "stats"
# The measures `measure` records, each a score dimension of scorer "stats".
DIMENSIONS = ("instruction_words", "output_words", "mtld", "repetition", "refusal")

DEFAULT_REFUSALS = [
    "as an ai",
    "as a language model",
    "as an artificial intelligence",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable to",
    "i am unable to",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize, but",
    "作为一个人工智能",
    "作为人工智能",
    "作为一个ai",
    "作为ai",
    "作为一个语言模型",
    "作为语言模型",
    "我无法",
    "我不能",
    "很抱歉，我",
    "抱歉，我",
]


class StatsConfig(BaseModel):
    """Thresholds of the model-free filters; a None threshold records the measure only."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Compute statistics and apply their thresholds.")
    min_output_words: int = Field(
        1, ge=0, description="Reject a response with fewer words (a CJK character counts one)."
    )
    max_output_words: int | None = Field(
        None, ge=1, description="Reject a response with more words; None disables."
    )
    min_instruction_words: int = Field(
        1, ge=0, description="Reject an instruction (with its input) with fewer words."
    )
    min_mtld: float | None = Field(
        None, ge=0, description="Reject a response whose MTLD is lower; None records only."
    )
    mtld_threshold: float = Field(
        0.72, gt=0, lt=1, description="MTLD factor threshold (McCarthy & Jarvis 2010)."
    )
    mtld_min_tokens: int = Field(
        10, ge=1, description="Below this many tokens MTLD is not computed (too unstable)."
    )
    repetition_n: int = Field(3, ge=1, description="n of the n-grams the repetition ratio counts.")
    max_repetition: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="Reject a response whose share of repeated n-grams is higher; None disables.",
    )
    repetition_min_ngrams: int = Field(
        10, ge=1, description="Below this many n-grams the repetition rule does not apply."
    )
    reject_refusals: bool = Field(True, description="Reject responses containing a refusal phrase.")
    refusal_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS),
        description="Case-insensitive phrases that mark a refusal (English and Chinese).",
    )
    refusal_window: int | None = Field(
        None, ge=1, description="Search only the first N characters of a response; None: all."
    )
    languages: list[str] = Field(
        default_factory=list,
        description="Accepted languages among en, zh, other; empty accepts every language.",
    )
    zh_min_ratio: float = Field(
        0.3, ge=0, le=1, description="Share of Han tokens from which a text is Chinese."
    )
    en_min_ratio: float = Field(
        0.5, ge=0, le=1, description="Share of Latin words from which a text is English."
    )


# --- measures -------------------------------------------------------------------------------


def _mtld_pass(tokens: Sequence[str], threshold: float) -> float:
    factors = 0.0
    types: set[str] = set()
    count = 0
    ttr = 1.0
    for token in tokens:
        count += 1
        types.add(token)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1
            types.clear()
            count = 0
            ttr = 1.0
    if count:
        # The unfinished segment counts as the fraction of a factor it covered.
        factors += (1 - ttr) / (1 - threshold)
    return len(tokens) / factors if factors else float(len(tokens))


def mtld(tokens: Sequence[str], threshold: float = 0.72) -> float:
    """Measure of Textual Lexical Diversity: mean of a forward and a backward pass."""
    if not tokens:
        return 0.0
    return (_mtld_pass(tokens, threshold) + _mtld_pass(list(reversed(tokens)), threshold)) / 2


def repetition_ratio(tokens: Sequence[str], n: int = 3) -> float:
    """Share of n-gram occurrences that repeat an earlier n-gram (0 none, near 1 a loop)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def find_refusal(text: str, phrases: Sequence[str], window: int | None = None) -> str | None:
    """The first refusal phrase found in `text` (case-insensitive), or None."""
    haystack = (text[:window] if window else text).lower().replace("’", "'")
    for phrase in phrases:
        if phrase.lower() in haystack:
            return phrase
    return None


# --- the critic's statistics pass ----------------------------------------------------------


@dataclass
class StatsOutcome:
    """Scores for every example, rejections for those past a threshold, detected languages."""

    scores: list[Score] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    languages: dict[str, str] = field(default_factory=dict)


def prompt_text(example: Example) -> str:
    """The instruction with its input, as the statistics and scorers see it."""
    return f"{example.instruction}\n{example.input}".strip()


def _reasons(config: StatsConfig, measures: dict[str, float]) -> list[tuple[str, object]]:
    """Every threshold the example breaks, as (reason, evidence)."""
    found: list[tuple[str, object]] = []
    if measures["instruction_words"] < config.min_instruction_words:
        found.append(("instruction_too_short", measures["instruction_words"]))
    if measures["output_words"] < config.min_output_words:
        found.append(("output_too_short", measures["output_words"]))
    if config.max_output_words is not None and measures["output_words"] > config.max_output_words:
        found.append(("output_too_long", measures["output_words"]))
    if config.min_mtld is not None and "mtld" in measures and measures["mtld"] < config.min_mtld:
        found.append(("low_lexical_diversity", round(measures["mtld"], 3)))
    if config.max_repetition is not None and measures.get("repetition", 0) > config.max_repetition:
        found.append(("repetitive", round(measures["repetition"], 3)))
    return found


def measure(example: Example, config: StatsConfig) -> tuple[dict[str, float], str | None, str]:
    """All measures of one example, its refusal phrase (or None) and its language."""
    output = example.output or ""
    tokens = tokenize(output)
    measures: dict[str, float] = {
        "instruction_words": float(count_words(prompt_text(example))),
        "output_words": float(count_words(output)),
    }
    if len(tokens) >= config.mtld_min_tokens:
        measures["mtld"] = mtld(tokens, config.mtld_threshold)
    if len(tokens) - config.repetition_n + 1 >= config.repetition_min_ngrams:
        measures["repetition"] = repetition_ratio(tokens, config.repetition_n)
    refusal = find_refusal(output, config.refusal_phrases, config.refusal_window)
    measures["refusal"] = 1.0 if refusal else 0.0
    language = language_of(
        f"{prompt_text(example)}\n{output}", config.zh_min_ratio, config.en_min_ratio
    )
    return measures, refusal, language


def run_stats(batch: Sequence[Example], config: StatsConfig) -> StatsOutcome:
    """Measure every example and reject those that break a configured threshold."""
    outcome = StatsOutcome()
    for example in batch:
        measures, refusal, language = measure(example, config)
        outcome.languages[example.id] = language
        outcome.scores.extend(
            Score(example.id, SCORER, name, value) for name, value in measures.items()
        )
        reasons = _reasons(config, measures)
        if refusal and config.reject_refusals:
            reasons.append(("refusal", refusal))
        if config.languages and language not in config.languages:
            reasons.append((f"language:{language}", language))
        outcome.rejections.extend(
            Rejection(
                stage=Stage.CRITIQUE,
                reason=reason,
                evidence=evidence,
                example_id=example.id,
                text=example.output,
            )
            for reason, evidence in reasons
        )
    return outcome
