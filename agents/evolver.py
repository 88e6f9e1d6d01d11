"""Evol-Instruct: rewrite instructions into harder (in-depth) or rarer (in-breadth) ones.

Two steps around the responder, because two of the four elimination rules
need the evolved instruction's answer:

1. `evolve` picks one of six operations uniformly per parent and asks the
   model for a rewrite; empty, truncated, failed or prompt-copying rewrites
   (rule 4) and verbatim copies of the parent are rejected at once.
2. `eliminate`, once the responder has answered the children, applies the
   cheap rules first — (2) a short "sorry" answer, (3) an answer of only
   punctuation and stop words — then (1) the LLM equality check.

Parents are never changed: a failed evolution leaves its parent in the pool.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evoinstruct.agents.generator import text_language
from evoinstruct.agents.models.base import ChatModel, ChatRequest, Result, model_version
from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.textstats import count_words, find_phrase, only_punctuation_and_stopwords
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, ExampleDraft

STAGE = "evolve"
Operation = Literal[
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "complicate_input",
    "in_breadth",
]
OPERATIONS: tuple[str, ...] = (
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "complicate_input",
    "in_breadth",
)

# Section markers the templates print and the parser strips; rule 4's phrases include them.
MARKERS = {
    "en": {
        "given": "#The Given Prompt#",
        "rewritten": "#Rewritten Prompt#",
        "created": "#Created Prompt#",
    },
    "zh": {"given": "#给定提示#", "rewritten": "#改写后的提示#", "created": "#新创建的提示#"},
}
DEFAULT_COPY_PHRASES = {
    "en": [
        "given prompt",
        "rewritten prompt",
        "created prompt",
        "#Rewritten Prompt#",
        "#Created Prompt#",
    ],
    "zh": [
        "给定提示",
        "改写后的提示",
        "改写提示",
        "创建的提示",
        "#改写后的提示#",
        "#新创建的提示#",
    ],
}
DEFAULT_SORRY = {"en": ["sorry"], "zh": ["抱歉", "对不起"]}

Item = TypeVar("Item", Example, ExampleDraft)


class EvolverConfig(BaseModel):
    """Evol-Instruct (METHODS 1.2)."""

    model_config = ConfigDict(extra="forbid")

    operations: list[Operation] = Field(
        default_factory=lambda: list(OPERATIONS),
        description="Operations to choose from, uniformly: five in-depth and in_breadth.",
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of rewrites.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus mass of rewrites.")
    max_tokens: int = Field(1024, ge=1, description="Token limit of one rewrite.")
    added_words_min: int = Field(
        10, ge=0, description="In-depth rewrites add at least this many words."
    )
    added_words_max: int = Field(
        20, ge=1, description="In-depth rewrites add at most this many words."
    )
    equality_check: bool = Field(
        True, description="Rule 1: an LLM Equal/Not Equal check for information gain."
    )
    equality_max_tokens: int = Field(16, ge=1, description="Token limit of the equality answer.")
    sorry_max_words: int = Field(
        80, ge=1, description="Rule 2: a response with a sorry phrase under this many words fails."
    )
    sorry_phrases: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_SORRY.items()},
        description="Rule 2 phrases per language; all languages are checked.",
    )
    copy_phrases: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_COPY_PHRASES.items()},
        description="Rule 4 phrases per language (case-insensitive); all languages are checked.",
    )

    @field_validator("operations")
    @classmethod
    def _some_operations(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("choose at least one operation")
        return list(dict.fromkeys(value))


@dataclass
class EvolveOutcome(AgentOutcome):
    """Evolved drafts (without outputs), rejections, usage and the operations drawn."""

    stage = STAGE

    drafts: list[ExampleDraft] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)


@dataclass
class EliminateOutcome(AgentOutcome):
    """Children that survived the elimination rules, a rejection for each that did not, and
    the children whose equality check call failed (no verdict: decide them again later)."""

    stage = STAGE

    kept: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)

    def failed_ids(self) -> set[str]:
        return super().failed_ids() | {c.id for c in self.failed if isinstance(c, Example)}


def prompt_text(item: Example | ExampleDraft) -> str:
    """What gets evolved: the instruction, with its input appended when it has one."""
    return (
        f"{item.instruction.strip()}\n\n{item.input.strip()}"
        if item.input.strip()
        else item.instruction.strip()
    )


def _all_phrases(table: dict[str, list[str]]) -> list[str]:
    return [phrase for phrases in table.values() for phrase in phrases]


def _label_re() -> re.Pattern[str]:
    labels = [re.escape(m[k]) for m in MARKERS.values() for k in ("rewritten", "created")]
    return re.compile(rf"^\s*(?:\*\*)?(?:{'|'.join(labels)})(?:\*\*)?\s*[:：]?\s*", re.IGNORECASE)


_LABEL_RE = _label_re()


def parse_evolved(text: str, finish_reason: str) -> tuple[str | None, str | None]:
    """The rewritten prompt, or (None, reason) for an empty or truncated answer.

    The output marker that ends the template ("#Rewritten Prompt#:") is a
    format echo when it leads the answer, so it is stripped; anywhere else it
    counts as copying (rule 4, checked by the caller).
    """
    if finish_reason == "length":
        return None, "truncated"
    cleaned = _LABEL_RE.sub("", text.strip(), count=1).strip()
    if not cleaned:
        return None, "empty"
    return cleaned, None


def parse_equality(text: str) -> bool | None:
    """True for Equal, False for Not Equal, None when the answer says neither.

    The earliest verdict wins; negated forms are tried first at each position
    so "Not Equal" and "不相同" are not read as "Equal" and "相同".
    """
    match = re.search(
        r"(\bnot\s+(?:\w+\s+){0,2}(?:equal|the\s+same|identical)\b|\bunequal\b|\bdifferent\b|[不非][^，。,.\s]{0,3}?(?:相同|相等|一样)|不同)"
        r"|(\bequal\b|\bsame\b|\bidentical\b|相同|相等|一样)",
        text,
        re.IGNORECASE,
    )
    if match is None:
        return None
    return match[2] is not None


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


async def evolve(
    parents: Sequence[Example],
    model: ChatModel,
    prompts: PromptLibrary,
    config: EvolverConfig,
    rng: Random,
) -> EvolveOutcome:
    """Draw one operation per parent with `rng` and ask for all rewrites in one batch."""
    outcome = EvolveOutcome()
    markers = MARKERS.get(prompts.language, MARKERS["en"])
    plans: list[tuple[Example, str, ChatRequest]] = []
    for parent in parents:
        op = rng.choice(config.operations)
        outcome.operations[op] += 1
        text = prompts.render(
            f"evol_{op}",
            instruction=prompt_text(parent),
            min_words=config.added_words_min,
            max_words=config.added_words_max,
            given_marker=markers["given"],
            output_marker=markers["created" if op == "in_breadth" else "rewritten"],
        )
        request = ChatRequest(
            messages=[{"role": "user", "content": text}],
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
        )
        plans.append((parent, op, request))
    if not plans:
        return outcome
    results = await model.generate([request for _, _, request in plans])
    for (parent, op, _), result in zip(plans, results, strict=True):
        _take_rewrite(outcome, parent, op, result, model, prompts, config)
    return outcome


def _take_rewrite(
    outcome: EvolveOutcome,
    parent: Example,
    op: str,
    result: Result,
    model: ChatModel,
    prompts: PromptLibrary,
    config: EvolverConfig,
) -> None:
    def reject(reason: str, raw: str | None, evidence: dict[str, Any] | None = None) -> None:
        outcome.reject(
            reason, parent, evidence={"operation": op, **(evidence or {})}, raw_output=raw
        )

    if not outcome.count(result):
        outcome.fail(result, parent, evidence={"operation": op})
        return
    evolved, problem = parse_evolved(result.text, result.finish_reason)
    if evolved is None:
        reject(problem or "empty", result.text)
        return
    copied = find_phrase(evolved, _all_phrases(config.copy_phrases))
    if copied is not None:
        reject("copied_prompt_words", result.text, {"phrase": copied})
        return
    if _norm(evolved) == _norm(prompt_text(parent)):
        reject("no_information_gain", result.text, {"check": "identical"})
        return
    outcome.drafts.append(
        ExampleDraft(
            instruction=evolved,
            source="evolved",
            parent_id=parent.id,
            operation=op,
            model_version=model_version(model),
            template=prompts.template_name(f"evol_{op}"),
            language=text_language(evolved, prompts.language),
            depth=parent.depth + 1,
        )
    )


def check_response(output: str | None, config: EvolverConfig) -> tuple[str, Any] | None:
    """Rules 2 and 3 on a child's response: (reason, evidence), or None when it passes."""
    if output is None:
        return "no_response", None
    words = count_words(output)
    sorry = find_phrase(output, _all_phrases(config.sorry_phrases))
    if sorry is not None and words < config.sorry_max_words:
        return "sorry", {"phrase": sorry, "words": words}
    if only_punctuation_and_stopwords(output):
        return "stopwords_only", {"words": words}
    return None


async def eliminate(
    pairs: Sequence[tuple[Example | ExampleDraft, Item]],
    model: ChatModel,
    prompts: PromptLibrary,
    config: EvolverConfig,
) -> EliminateOutcome:
    """Apply the elimination rules to (parent, answered child) pairs; keep the survivors.

    Cheap rules (2, 3 and a re-check of 4) run first; the equality check
    (rule 1) runs in one batch on what is left. An unreadable verdict rejects
    the child: it was not shown to add anything. A failed check call (a 503, a
    timeout) says nothing about the child, so it is neither kept nor rejected
    but returned in `failed` for a later attempt.
    """
    outcome = EliminateOutcome()
    survivors: list[tuple[Example | ExampleDraft, Item]] = []
    for parent, child in pairs:
        copied = find_phrase(child.instruction, _all_phrases(config.copy_phrases))
        failed = (
            ("copied_prompt_words", {"phrase": copied})
            if copied
            else check_response(child.output, config)
        )
        if failed is None:
            survivors.append((parent, child))
        else:
            outcome.reject(failed[0], child, evidence=failed[1], raw_output=child.output)
    if not config.equality_check or not survivors:
        outcome.kept.extend(child for _, child in survivors)
        return outcome
    requests = [
        ChatRequest(
            messages=[
                {
                    "role": "user",
                    "content": prompts.render(
                        "evol_equality", first=prompt_text(p), second=prompt_text(c)
                    ),
                }
            ],
            temperature=0.0,
            max_tokens=config.equality_max_tokens,
        )
        for p, c in survivors
    ]
    results = await model.generate(requests)
    for (_, child), result in zip(survivors, results, strict=True):
        if not outcome.count(result):
            outcome.failed.append(child)
            continue
        verdict = parse_equality(result.text)
        if verdict is None:
            outcome.reject("equality_unparseable", child, raw_output=result.text)
        elif verdict:
            outcome.reject(
                "no_information_gain", child, evidence={"check": "llm"}, raw_output=result.text
            )
        else:
            outcome.kept.append(
                dataclasses.replace(child, meta={**child.meta, "equality": "not_equal"})
            )
    return outcome
