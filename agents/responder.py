"""The responder: answers instructions that have no output yet (evolved or generated ones).

Optionally each task gets an explanation system prompt (Orca's explanation
tuning) sampled with the run's RNG from a per-language bank in
`prompts/orca_system_prompts.toml` (a task family in the item's meta picks a
family list when the bank has one). The system prompt is stored in the
example's `system`, so the student later trains with it. Items that already
carry a system prompt keep it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.models.base import ChatModel, ChatRequest, Message, model_version
from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import ConfigError
from evoinstruct.store.records import Example, ExampleDraft

STAGE = "respond"
TEMPLATE = "respond"
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


@dataclass
class RespondOutcome(AgentOutcome):
    """Answered items (same type as given), items skipped because they had an output, rejections."""

    stage = STAGE
    answered: list[Any] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)


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


async def respond(
    items: Sequence[Item],
    model: ChatModel,
    prompts: PromptLibrary,
    config: ResponderConfig,
    rng: Random,
) -> RespondOutcome:
    """Answer every item without an output in one batch; items with an output are skipped."""
    outcome = RespondOutcome()
    todo = [item for item in items if not item.output]
    outcome.skipped = [item for item in items if item.output]
    if not todo:
        return outcome
    bank = load_bank(prompts, config.system_prompt_bank) if config.explanation_prompts else None
    systems = [
        item.system
        or (pick_system_prompt(bank, item.meta.get(config.family_key), rng) if bank else "")
        for item in todo
    ]
    requests = [
        ChatRequest(
            messages=build_messages(
                system, prompts.render(TEMPLATE, instruction=item.instruction, input=item.input)
            ),
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
        )
        for item, system in zip(todo, systems, strict=True)
    ]
    results = await model.generate(requests)
    version = model_version(model)
    for item, system, result in zip(todo, systems, results, strict=True):
        if not outcome.count(result):
            outcome.fail(result, item)
            continue
        answer = result.text.strip()
        if result.truncated and config.on_truncated == "reject":
            outcome.reject(
                "truncated", item, evidence="finish_reason=length", raw_output=result.text
            )
        elif not answer:
            outcome.reject("empty_response", item, raw_output=result.text)
        else:
            meta = {
                **item.meta,
                "response_model": version,
                "response_template": prompts.template_name(TEMPLATE),
            }
            if result.truncated:
                meta["truncated"] = True
            outcome.answered.append(
                dataclasses.replace(item, output=answer, system=system, meta=meta)
            )
    return outcome
