"""ReAlign: reformat a response to its task type's format without changing what it says.

1. Classify each example into a task type (one batched LLM call; an answer
   naming no known type means "default"). Task types, whether each is
   rewritten, and their per-language format criteria are data in
   `prompts/task_types.toml`, which a project extends with its own file.
2. For types marked `rewrite = true`, ask for "Reasoning: … / Revised
   response: …" (推理：/修改后的回答： in Chinese) at temperature 0.3.
3. Keep the rewrite only if it parses, is longer than half the original
   (words, CJK-aware), keeps code presence, and still contains the
   original's short or numeric final answer. Otherwise the original stays and
   a Rejection says why: truncated, unparseable, too_short, code_changed,
   answer_lost.
An optional evidence hook (retrieval for knowledge-heavy types) is a Python
argument, `rewrite_examples(evidence_hook=...)`: passing one turns it on.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.scoring.judge import generate_counted
from evoinstruct.models.base import (
    ChatModel,
    ChatRequest,
    Failure,
    Generation,
    model_version,
)
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import ConfigError
from evoinstruct.store.records import Example, ExampleDraft
from evoinstruct.store.stages import Stage
from evoinstruct.text.rules import count_words

DEFAULT_TYPE = "default"
# The answer contract: the prompt asks for these labels and the parser reads them.
LABELS = {"en": ("Reasoning:", "Revised response:"), "zh": ("推理：", "修改后的回答：")}

EvidenceHook = Callable[[Example, str], "str | Awaitable[str]"]


class RewriterConfig(BaseModel):
    """ReAlign (METHODS 3)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Rewrite responses to their task type's format.")
    temperature: float = Field(0.3, ge=0, description="Rewrite sampling temperature.")
    samples: int = Field(
        1, ge=1, le=4, description="Rewrites asked per example; the first that passes is kept."
    )
    max_tokens: int = Field(1024, ge=16, description="Room for the reasoning and the rewrite.")
    classify_temperature: float = Field(0.0, ge=0, description="Task classification temperature.")
    classify_max_tokens: int = Field(16, ge=1, description="The classifier answers with one name.")
    min_length_ratio: float = Field(
        0.5, ge=0, le=1, description="A rewrite must be longer than this share of the original."
    )
    short_answer_max_words: int = Field(
        10, ge=1, description="An original this short is itself the final answer to keep."
    )
    check_code: bool = Field(True, description="Reject a rewrite that adds or removes code.")
    check_answer: bool = Field(True, description="Reject a rewrite that loses the final answer.")
    evidence_types: list[str] = Field(
        default_factory=lambda: ["open_qa", "closed_qa"],
        description="Knowledge-heavy task types that get evidence, when the caller passes an evidence hook (Python only).",
    )


# --- task types -----------------------------------------------------------------------------


@dataclass
class TaskType:
    name: str
    rewrite: bool
    description: str
    criteria: str
    aliases: list[str] = field(default_factory=list)


def load_task_types(prompts: PromptLibrary) -> dict[str, TaskType]:
    """The task types with this language's text; raises ConfigError naming a malformed type."""
    language = prompts.language
    types: dict[str, TaskType] = {}
    for name, entry in prompts.load_data("task_types").items():
        where = f"task_types.toml [{name}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("rewrite"), bool):
            raise ConfigError("each task type needs rewrite = true|false", file=where)
        texts = {}
        for key in ("criteria", "description"):
            value = (
                (entry.get(key) or {}).get(language) if isinstance(entry.get(key), dict) else None
            )
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"missing {key}.{language}", file=where, field=f"{key}.{language}"
                )
            texts[key] = value.strip()
        aliases = [str(a) for a in entry.get("aliases", [])]
        types[name] = TaskType(
            name, entry["rewrite"], texts["description"], texts["criteria"], aliases
        )
    if DEFAULT_TYPE not in types:
        raise ConfigError(f"task types need a [{DEFAULT_TYPE}] entry", file="task_types.toml")
    return types


def _name_pattern(name: str) -> re.Pattern[str]:
    words = r"[\s_\-]*".join(re.escape(w) for w in re.split(r"[_\s\-]+", name.lower()))
    return re.compile(rf"(?<![a-z0-9]){words}(?![a-z0-9])")


def parse_task_type(text: str | None, types: Mapping[str, TaskType]) -> str:
    """The task type an answer names (or an alias of it): earliest mention wins; else default."""
    lowered = (text or "").lower()
    found: list[tuple[int, int, str]] = []
    for name, task_type in types.items():
        match = _name_pattern(name).search(lowered)
        if match:
            found.append((match.start(), -len(name), name))
        for alias in task_type.aliases:
            match = _name_pattern(alias).search(lowered) if alias.strip() else None
            if match:
                found.append((match.start(), -len(alias), name))
    return min(found)[2] if found else DEFAULT_TYPE


# --- the answer contract --------------------------------------------------------------------


@dataclass
class ParsedRewrite:
    """A parsed rewrite answer; `error` is None, "truncated" or "unparseable"."""

    response: str = ""
    reasoning: str = ""
    error: str | None = None


def _label(text: str) -> str:
    return r"[*#\s]*" + re.escape(text.rstrip(":：")) + r"[*\s]*[:：][*\s]*"


_REASONING = re.compile("|".join(_label(r) for r, _ in LABELS.values()), re.IGNORECASE)
_RESPONSE = re.compile("|".join(_label(r) for _, r in LABELS.values()), re.IGNORECASE)


def parse_rewrite(text: str | None, truncated: bool = False) -> ParsedRewrite:
    """Split "Reasoning: … / Revised response: …" (either language's labels).

    A truncated answer is refused: its revised response is cut off.
    """
    if truncated:
        return ParsedRewrite(error="truncated")
    text = text or ""
    match = _RESPONSE.search(text)
    if match is None or not text[match.end() :].strip():
        return ParsedRewrite(error="unparseable")
    head = text[: match.start()]
    reasoning = _REASONING.search(head)
    return ParsedRewrite(
        response=text[match.end() :].strip(),
        reasoning=head[reasoning.end() :].strip() if reasoning else head.strip(),
    )


# --- the keep rules -------------------------------------------------------------------------

_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
# Digits next to Chinese characters count (得12条), digits inside Latin words do not (mp3).
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])-?\d(?:[\d,]*\d)?(?:\.\d+)?")
_MARKERS = (
    re.compile(r"####\s*([^\n]+)"),
    re.compile(r"\\boxed\{([^{}]+)\}"),
    re.compile(r"(?:final answer|the answer is|answer:)\s*(?:is\s*)?[:：]?\s*([^\n]+)", re.I),
    re.compile(r"(?:最终答案|答案)\s*(?:是|为)?\s*[:：]?\s*([^\n]+)"),
)
_CLAUSE_END = re.compile(r"[.;,。，；]\s|[。，；]|[.;,]$")
_EDGE_PUNCT = " \t\n.。!！?？,，;；:：\"'“”‘’*`()（）[]"


def has_code(text: str) -> bool:
    """A fenced block, or an indented (4 spaces / tab) line after a blank line that is no list."""
    if "```" in text:
        return True
    previous = ""
    for line in text.splitlines():
        indented = line.startswith(("    ", "\t")) and line.strip()
        if indented and not previous.strip() and not _LIST_MARK.match(line):
            return True
        previous = line
    return False


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def final_answer(text: str, short_max_words: int) -> str | None:
    """The original's short or numeric final answer, or None when it has none.

    An explicit marker (#### x, \\boxed{x}, "the answer is x", 答案是x) first;
    else a short text is its own answer; else the last number of the last line.
    """
    for pattern in _MARKERS:
        matches = pattern.findall(text)
        if matches:
            # The first number after the marker, else its first clause if short.
            numbers = _NUMBER.findall(matches[-1])
            if numbers:
                return numbers[0]
            answer = _CLAUSE_END.split(matches[-1])[0].strip(_EDGE_PUNCT)
            if answer and count_words(answer) <= short_max_words:
                return answer
    stripped = text.strip(_EDGE_PUNCT)
    if stripped and count_words(stripped) <= short_max_words:
        return stripped
    lines = [line for line in text.splitlines() if line.strip()]
    last = _LIST_MARK.sub("", lines[-1]) if lines else ""
    numbers = _NUMBER.findall(last)
    return numbers[-1] if numbers else None


def answer_present(answer: str, text: str) -> bool:
    """Whether the answer appears in text: numerically for a number, else as normalized text."""
    value = _number(answer)
    if value is not None:
        return any(_number(n) == value for n in _NUMBER.findall(text))
    squeeze = lambda s: re.sub(r"\s+", " ", s.casefold()).strip(_EDGE_PUNCT)  # noqa: E731
    return squeeze(answer) in squeeze(text)


def check_rewrite(original: str, rewrite: str, config: RewriterConfig) -> tuple[str, object] | None:
    """The first keep rule the rewrite breaks, as (reason, evidence); None when it passes."""
    before, after = count_words(original), count_words(rewrite)
    if after <= config.min_length_ratio * before:
        return "too_short", {"original_words": before, "rewrite_words": after}
    if config.check_code and has_code(original) != has_code(rewrite):
        return "code_changed", {"original_has_code": has_code(original)}
    if config.check_answer:
        answer = final_answer(original, config.short_answer_max_words)
        if answer is not None and not answer_present(answer, rewrite):
            return "answer_lost", {"answer": answer}
    return None


# --- the agent ------------------------------------------------------------------------------


@dataclass
class RewriteOutcome(AgentOutcome):
    """Kept rewrites as drafts (source "rewritten"), why others were not kept, and the books."""

    stage = Stage.REWRITE

    drafts: list[ExampleDraft] = field(default_factory=list)
    task_types: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


async def classify(
    batch: Sequence[Example],
    model: ChatModel,
    prompts: PromptLibrary,
    types: Mapping[str, TaskType],
    config: RewriterConfig,
    outcome: RewriteOutcome,
) -> None:
    """Fill outcome.task_types for every example the classifier answered."""
    listing = [{"name": t.name, "description": t.description} for t in types.values()]
    requests = [
        ChatRequest(
            messages=[
                {
                    "role": "user",
                    "content": prompts.render(
                        "classify_task",
                        instruction=e.instruction,
                        input=e.input,
                        task_types=listing,
                        default_type=DEFAULT_TYPE,
                    ),
                }
            ],
            temperature=config.classify_temperature,
            max_tokens=config.classify_max_tokens,
        )
        for e in batch
    ]
    results = await generate_counted(model, requests, outcome.counters)
    for example, result in zip(batch, results, strict=True):
        if isinstance(result, Failure):
            outcome.fail(result, example)
            continue
        task_type = parse_task_type(result.text, types)
        outcome.task_types[example.id] = task_type
        outcome.counters[f"task_type:{task_type}"] += 1


async def _evidence(
    batch: Sequence[Example],
    task_types: Mapping[str, str],
    hook: EvidenceHook | None,
    config: RewriterConfig,
    counters: Counter[str],
) -> dict[str, str]:
    """Evidence text per example id, from the hook, for the configured types only."""
    if hook is None:
        return {}
    wanted = [e for e in batch if task_types[e.id] in config.evidence_types]

    async def one(example: Example) -> str:
        try:
            found = hook(example, task_types[example.id])
            return str(await found if inspect.isawaitable(found) else found)
        except Exception:  # a user's retrieval hook must not sink the batch; counted
            counters["evidence_failed"] += 1
            return ""

    texts = await asyncio.gather(*(one(e) for e in wanted))
    return {e.id: t for e, t in zip(wanted, texts, strict=True) if t}


def _draft(
    example: Example,
    parsed: ParsedRewrite,
    task_type: str,
    model: ChatModel,
    prompts: PromptLibrary,
) -> ExampleDraft:
    return ExampleDraft(
        instruction=example.instruction,
        input=example.input,
        output=parsed.response,
        system=example.system,
        source="rewritten",
        parent_id=example.id,
        operation=f"realign:{task_type}",
        model_version=model_version(model),
        template=prompts.template_name("realign_rewrite"),
        language=example.language,
        depth=example.depth,
        meta={**example.meta, "realign": {"task_type": task_type, "reasoning": parsed.reasoning}},
    )


def _judge_choices(example: Example, result: Generation, config: RewriterConfig):
    """The first sample that passes every rule, else the first sample's reason."""
    failures = []
    for choice in result.choices:
        parsed = parse_rewrite(choice.text, truncated=choice.finish_reason == "length")
        broken = (
            (parsed.error, None)
            if parsed.error
            else check_rewrite(example.output or "", parsed.response, config)
        )
        if broken is None:
            return parsed, None
        failures.append((broken, choice.text))
    return None, failures[0]


def _rewrite_request(
    example: Example,
    task_type: TaskType,
    evidence: str,
    prompts: PromptLibrary,
    config: RewriterConfig,
) -> ChatRequest:
    reasoning_label, response_label = LABELS[prompts.language]
    text = prompts.render(
        "realign_rewrite",
        instruction=example.instruction,
        input=example.input,
        response=example.output,
        task_type=task_type.name,
        criteria=task_type.criteria,
        evidence=evidence,
        reasoning_label=reasoning_label,
        response_label=response_label,
    )
    return ChatRequest(
        messages=[{"role": "user", "content": text}],
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        n=config.samples,
    )


def _record(
    example: Example,
    result: Generation | Failure,
    task_type: str,
    model: ChatModel,
    prompts: PromptLibrary,
    config: RewriterConfig,
    outcome: RewriteOutcome,
) -> None:
    """A kept rewrite becomes a draft; anything else a rejection (the original stays)."""
    if isinstance(result, Failure):
        outcome.fail(result, example)
        return
    parsed, failure = _judge_choices(example, result, config)
    if parsed is not None:
        outcome.drafts.append(_draft(example, parsed, task_type, model, prompts))
        outcome.counters["rewritten"] += 1
        return
    (reason, evidence), raw = failure
    outcome.counters[f"kept_original:{reason}"] += 1
    outcome.reject(
        reason,
        example,
        evidence={"task_type": task_type, **(evidence or {})},
        raw_output=raw,
        text=parse_rewrite(raw).response or None,
    )


async def rewrite_examples(
    batch: Sequence[Example],
    model: ChatModel,
    prompts: PromptLibrary,
    config: RewriterConfig,
    rng: random.Random,
    *,
    evidence_hook: EvidenceHook | None = None,
) -> RewriteOutcome:
    """Classify, rewrite the types marked for it, keep rewrites that pass every rule.

    The rewriter never drops an example: a rejection here means "the rewrite
    was not kept", and the original stays as it is. `rng` is accepted for the
    agent contract; classification and the keep rules are deterministic and
    sampling happens on the server.
    """
    outcome = RewriteOutcome()
    if not config.enabled:
        return outcome
    types = load_task_types(prompts)
    with_output = [e for e in batch if e.output]
    outcome.skipped = [e.id for e in batch if not e.output]
    outcome.counters["no_output"] += len(outcome.skipped)
    await classify(with_output, model, prompts, types, config, outcome)
    chosen = [e for e in with_output if e.id in outcome.task_types]
    todo = [e for e in chosen if types[outcome.task_types[e.id]].rewrite]
    outcome.counters["not_rewritten"] += len(chosen) - len(todo)
    evidence = await _evidence(todo, outcome.task_types, evidence_hook, config, outcome.counters)
    requests = [
        _rewrite_request(
            e, types[outcome.task_types[e.id]], evidence.get(e.id, ""), prompts, config
        )
        for e in todo
    ]
    results = await generate_counted(model, requests, outcome.counters)
    for example, result in zip(todo, results, strict=True):
        _record(example, result, outcome.task_types[example.id], model, prompts, config, outcome)
    return outcome
