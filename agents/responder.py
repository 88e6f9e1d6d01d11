"""The responder: answers instructions that have no output yet (evolved or generated ones).

Optionally each task gets an explanation system prompt (Orca's explanation
tuning) sampled with the run's RNG from a per-language bank in
`prompts/orca_system_prompts.toml` (a task family in the item's meta picks a
family list when the bank has one). The system prompt is stored in the
example's `system`, so the student later trains with it. Items that already
carry a system prompt keep it.

An instruction with verifiable constraints (`meta["constraints"]`, attached
by the evolver) is answered by rejection sampling: one request draws
`verifiable_samples` answers (`n`), each is checked strictly, and one that
passes every constraint is kept: the first drawn, or with `pick = "shortest"`
the shortest (a weak model that rambles past the token limit learns to finish
from its own short passing answers). When none passes, the answer passing
the most constraints is kept all the same, so the critic records its
verdicts and the selector drops it naming the failing constraint: one place
decides, and the record of what was tried stays with the example
(`meta["rejection_sampling"]`: answers drawn, the indexes that passed, the
one kept).

With `repair` on, a draw where no answer passes gets one more chance: the
deterministic fixes of the format constraints an answer fails (lowercase it,
wrap it in quotes, append the end phrase...) are applied to each usable
answer, best first (ties by `pick`), and the first that then passes every
constraint is kept as repaired; the record lists the constraint ids repaired
(`"repaired"`), and names the pick when it is not the first drawn (`"pick"`).

Each draw also yields verified preference pairs (`pairs`, see `agents.preference`):
an answer passing every constraint against one failing some, for DPO after SFT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.constraints import Constraint, all_passed, check_all, repair_all
from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.preference import PairsConfig, has_content, verified_pairs
from evoinstruct.agents.scoring.verify import constraints_of
from evoinstruct.models.base import (
    ChatModel,
    ChatRequest,
    Choice,
    Generation,
    Message,
    model_version,
)
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import ConfigError
from evoinstruct.store.records import Example, ExampleDraft, PreferencePair
from evoinstruct.store.stages import Stage

TEMPLATE = "respond"
SAMPLING_KEY = "rejection_sampling"
# Meta keys the responder sets that the store must keep with the answer.
RECORDED_META: tuple[str, ...] = ("truncated", SAMPLING_KEY)
Item = TypeVar("Item", Example, ExampleDraft)


class ResponderConfig(BaseModel):
    """Answering instructions (METHODS 1.3)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0, description="Sampling temperature of answers.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass of answers.")
    max_tokens: int = Field(1024, ge=1, description="Token limit of one answer.")
    explanation_prompts: bool = Field(
        False, description="Orca: add a sampled explanation system prompt per task."
    )
    system_prompt_bank: str = Field(
        "orca_system_prompts", description="Data file (prompts/<name>.toml) holding the bank."
    )
    family_key: str = Field(
        "task_family", description="Meta key naming a task's family in the bank."
    )
    on_truncated: Literal["reject", "keep"] = Field(
        "reject",
        description="An answer cut at max_tokens: reject (reason 'truncated') or keep, marked in meta.",
    )
    verifiable_samples: int = Field(
        4,
        ge=1,
        description="Rejection sampling: answers drawn for an instruction with verifiable constraints; one passing all is kept.",
    )
    pick: Literal["first", "shortest"] = Field(
        "first",
        description="Which passing answer is kept (and which repaired one, among those passing as many): the first drawn, or the shortest in characters, answers with content and uncut first (teaches a model that runs past max_tokens to finish; characters compare answers of one language, a Chinese one is shorter than its English twin).",
    )
    verifiable_temperature: float | None = Field(
        None,
        gt=0,
        description="Temperature of those draws; unset: `temperature` (at 0 a single answer is drawn, the copies would be identical).",
    )
    repair: bool = Field(
        False,
        description="Programmatic repair: when no drawn answer passes, apply the deterministic fixes of the failing constraints that have one to each usable answer, best first (ties by `pick`), and keep the first that then passes every constraint; meta records it.",
    )
    pairs: PairsConfig = Field(default_factory=PairsConfig)

    def sampling(self, constrained: bool) -> tuple[float, int]:
        """(temperature, n) of a request for an instruction with or without constraints."""
        if not constrained:
            return self.temperature, 1
        temperature = self.verifiable_temperature or self.temperature
        return temperature, self.verifiable_samples if temperature > 0 else 1


@dataclass
class RespondOutcome(AgentOutcome):
    """Answered items (same type as given), items skipped because they had an output, rejections,
    and the verified preference pairs of the stored items' draws."""

    stage = Stage.RESPOND
    answered: list[Any] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)
    pairs: list[PreferencePair] = field(default_factory=list)


def load_bank(prompts: PromptLibrary, name: str) -> dict[str, Any]:
    """The system prompt bank of the library's language: {"default": [...], "families": {...}}."""
    table = prompts.load_data(name).get(prompts.language)
    default = table.get("default") if isinstance(table, dict) else None
    if not default or not all(isinstance(p, str) and p.strip() for p in default):
        raise ConfigError(
            f"{name}.toml needs a non-empty list of strings [{prompts.language}].default",
            file=f"{name}.toml",
            field=f"{prompts.language}.default",
        )
    families = table.get("families", {})
    return {"default": list(default), "families": families if isinstance(families, dict) else {}}


def pick_system_prompt(bank: dict[str, Any], family: str | None, rng: Random) -> str:
    """One system prompt: from the task family's list when the bank has one, else the default list."""
    choices = bank["families"].get(family) if family else None
    return rng.choice(choices or bank["default"])


def build_messages(system: str, user: str) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": user}]


def _usable(choice: Choice, config: ResponderConfig) -> bool:
    if not choice.text.strip():
        return False
    return not (choice.finish_reason == "length" and config.on_truncated == "reject")


def pick_sample(
    choices: list[Choice], constraints: list[Constraint], config: ResponderConfig
) -> tuple[int, dict[str, Any], str]:
    """The answer to keep among `choices`, the record of the draw, and the text to keep.

    The first (with `config.pick == "shortest"`, the shortest) usable answer
    passing every constraint (strict check); failing that, with `config.repair`,
    the first usable one, best first (then shortest with that pick), that passes
    every constraint once repaired, its text the repaired one and its record
    naming the constraint ids repaired (`"passing"` and `"kept_passes"` still
    describe the answers as drawn); failing that, the usable one passing most
    (the earliest on a tie), which the selector will drop; with no usable
    answer, the first, which the caller rejects as truncated or empty.
    """
    texts = [c.text.strip() for c in choices]
    passes = [
        sum(r.passed for r in check_all(constraints, text)) if _usable(c, config) else -1
        for c, text in zip(choices, texts, strict=True)
    ]
    passing = [i for i, n in enumerate(passes) if n == len(constraints)]
    complete = [c.finish_reason != "length" for c in choices]
    order = _preference(texts, complete, config)
    kept = (
        min(passing, key=order)
        if passing
        else max(range(len(choices)), key=lambda i: (passes[i], -i))
    )
    text = texts[kept]
    repaired: list[str] = []
    if not passing and config.repair:
        fixed = _repaired_sample(texts, passes, complete, constraints, order)
        if fixed is not None:
            kept, text, repaired = fixed
    record: dict[str, Any] = {
        "drawn": len(choices),
        "passing": passing,
        "kept": kept,
        "kept_passes": max(passes[kept], 0),
        "constraints": len(constraints),
    }
    if repaired:
        record["repaired"] = repaired
    if config.pick != "first":
        record["pick"] = config.pick
    return kept, record, text


def _preference(
    texts: list[str], complete: list[bool], config: ResponderConfig
) -> Callable[[int], tuple[int, ...]]:
    """Sort key of answer indexes, preferred first, by `config.pick`."""
    if config.pick == "shortest":
        # "." passes no_comma and lowercase, and a cut answer (kept with on_truncated =
        # "keep") may be short: neither is what the student should learn to stop at.
        return lambda i: (not has_content(texts[i]), not complete[i], len(texts[i]), i)
    return lambda i: (i,)


def _repaired_sample(
    texts: list[str],
    passes: list[int],
    complete: list[bool],
    constraints: list[Constraint],
    order: Callable[[int], tuple[int, ...]],
) -> tuple[int, str, list[str]] | None:
    """(index, repaired text, constraint ids repaired) of the first usable answer, most
    passes first, then by `order`, that passes every constraint after `repair_all`; None
    when none does."""
    # Only whole answers with content are repaired. A cut answer (even one truncation may
    # keep) would get an end phrase or a closing quote that hides the cut; an answer of
    # punctuation alone would become the repairs' own text (",," + no_comma + end phrase
    # is the end phrase), a passing example with nothing of the model's in it.
    usable = sorted(
        (i for i, n in enumerate(passes) if n >= 0 and complete[i] and has_content(texts[i])),
        key=lambda i: (-passes[i], *order(i)),
    )
    for i in usable:
        text, repaired = repair_all(constraints, texts[i])
        text = text.strip()
        if repaired and all_passed(check_all(constraints, text)):
            return i, text, repaired
    return None


async def respond(
    items: Sequence[Item],
    model: ChatModel,
    prompts: PromptLibrary,
    config: ResponderConfig,
    rng: Random,
) -> RespondOutcome:
    """Answer every item without an output in one batch; items with an output are skipped.

    Items with verifiable constraints get several answers in their one request
    (rejection sampling, see the module docstring); constraints that cannot be
    read are counted and the item answered like any other.
    """
    outcome = RespondOutcome()
    todo = [item for item in items if not item.output]
    outcome.skipped = [item for item in items if item.output]
    if not todo:
        return outcome
    constraints = [_constraints(item, outcome) for item in todo]
    bank = load_bank(prompts, config.system_prompt_bank) if config.explanation_prompts else None
    systems = [
        item.system
        or (pick_system_prompt(bank, item.meta.get(config.family_key), rng) if bank else "")
        for item in todo
    ]
    requests = []
    for item, system, cs in zip(todo, systems, constraints, strict=True):
        temperature, n = config.sampling(bool(cs))
        requests.append(
            ChatRequest(
                messages=build_messages(
                    system,
                    prompts.render(TEMPLATE, instruction=item.instruction, input=item.input),
                ),
                temperature=temperature,
                top_p=config.top_p,
                max_tokens=config.max_tokens,
                n=n,
            )
        )
    results = await model.generate(requests)
    provenance = {
        "response_model": model_version(model),
        "response_template": prompts.template_name(TEMPLATE),
    }
    for item, system, cs, result in zip(todo, systems, constraints, results, strict=True):
        if not outcome.count(result):
            outcome.fail(result, item)
            continue
        _take_answer(outcome, item, system, cs, result, config, provenance)
    return outcome


def _constraints(item: Item, outcome: RespondOutcome) -> list[Constraint]:
    try:
        return constraints_of(item)
    except ValueError:
        outcome.counters["constraints_unreadable"] += 1
        return []


def _take_answer(
    outcome: RespondOutcome,
    item: Item,
    system: str,
    constraints: list[Constraint],
    result: Generation,
    config: ResponderConfig,
    provenance: dict[str, str],
) -> None:
    meta: dict[str, Any] = {**item.meta, **provenance}
    index, answer = 0, result.choices[0].text.strip()
    if constraints:
        # The answer is pick_sample's text: a repaired answer differs from the drawn one.
        index, record, answer = pick_sample(result.choices, constraints, config)
        meta[SAMPLING_KEY] = record
        outcome.counters["constrained"] += 1
        outcome.counters["samples"] += record["drawn"]
        if record["passing"]:
            outcome.counters["sampling_passed"] += 1
        elif record.get("repaired"):
            outcome.counters["sampling_repaired"] += 1
        else:
            outcome.counters["sampling_failed"] += 1
        if isinstance(item, Example):  # a pair belongs to a stored example
            repaired = (index, answer, record["repaired"]) if record.get("repaired") else None
            pairs = verified_pairs(
                item.id,
                result.choices,
                constraints,
                config.pairs,
                model_version=provenance["response_model"],
                repaired=repaired,
            )
            outcome.pairs.extend(pairs)
            outcome.counters["preference_pairs"] += len(pairs)
    choice = result.choices[index]
    truncated = choice.finish_reason == "length"
    if truncated and config.on_truncated == "reject":
        outcome.reject("truncated", item, evidence="finish_reason=length", raw_output=choice.text)
    elif not answer:
        outcome.reject("empty_response", item, raw_output=choice.text)
    else:
        if truncated:
            meta["truncated"] = True
        outcome.answered.append(dataclasses.replace(item, output=answer, system=system, meta=meta))
