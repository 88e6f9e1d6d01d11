"""One generate step: the calls, their filters, ROUGE-L novelty, instances, and each call's books.

The round's generate node and the bench's generator measurement run the same step:
calls planned per language (each with demos of its language, the prompts of that
language), tasks parsed and filtered by the generator, then Self-Instruct's novelty
filter against the pool (and within the step), then instances for the tasks that are
left. Every task a call wrote ends in one place: a draft, or a drop counted under its
reason in that call's record, so a call's yield and its losses add up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Protocol

from evoinstruct.agents import generator
from evoinstruct.agents.generator import CALL_KEY, CallRecord, GeneratorConfig
from evoinstruct.agents.selection.novelty import NoveltyDecision
from evoinstruct.models.base import ChatModel
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, ExampleDraft, Rejection
from evoinstruct.store.stages import Stage

# Instance-step drops that end a task (the others drop one instance of it).
TASK_DROPS = frozenset({"ambiguous_input", "no_valid_instances"})


class Novelty(Protocol):
    def filter(
        self, items: Iterable[tuple[str, str]], *, commit: bool = True
    ) -> list[NoveltyDecision]: ...


@dataclass
class CallPlan:
    """A call to make: its language and its demos (all of that language)."""

    language: str
    demos: list[Example]


@dataclass
class StepResult:
    """The drafts left, every rejection, one record per call (in plan order), the usage."""

    drafts: list[ExampleDraft] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    usage: Counter[str] = field(default_factory=Counter)

    def record_of(self, draft: ExampleDraft) -> CallRecord:
        return self.calls[draft.meta[CALL_KEY]]


def plan_calls(
    n_calls: int,
    languages: Sequence[str],
    sample: Callable[[str], list[Example]],
) -> list[CallPlan]:
    """`n_calls` calls, the languages taking turns (the first language first); `sample` picks
    the demos of a language. A language with no demos gets no call (its turn is skipped)."""
    plans = []
    for i in range(n_calls):
        language = languages[i % len(languages)]
        demos = sample(language)
        if demos:
            plans.append(CallPlan(language, demos))
    return plans


async def generate_step(
    plans: Sequence[CallPlan],
    model: ChatModel,
    prompts_for: Callable[[str], PromptLibrary],
    config: GeneratorConfig,
    rng: Random,
    novelty: Novelty,
) -> StepResult:
    """Make the planned calls (one batch per language), filter, check novelty, write instances."""
    result = StepResult()
    by_language: dict[str, list[int]] = {}
    for i, plan in enumerate(plans):
        by_language.setdefault(plan.language, []).append(i)
    records: dict[int, CallRecord] = {}
    drafts: list[ExampleDraft] = []
    for language, indexes in by_language.items():
        outcome = await generator.generate(
            [plans[i].demos for i in indexes],
            model,
            prompts_for(language),
            config,
            rng,
        )
        # The agent numbers a batch's calls 0..k-1; the step numbers them in plan order.
        for record, index in zip(outcome.call_records, indexes, strict=True):
            record.index = index
            records[index] = record
        for draft in outcome.drafts:
            draft.meta[CALL_KEY] = indexes[draft.meta[CALL_KEY]]
        drafts += outcome.drafts
        result.rejections += outcome.rejections
        result.usage.update(outcome.usage())
    result.calls = [records[i] for i in range(len(plans))]
    drafts.sort(key=lambda d: d.meta[CALL_KEY])
    drafts = _novel(drafts, novelty, result)
    if config.mode == "self_instruct" and config.generate_instances and drafts:
        drafts = await _with_instances(drafts, model, prompts_for, config, rng, result)
    result.drafts = drafts
    return result


def _novel(drafts: list[ExampleDraft], novelty: Novelty, result: StepResult) -> list[ExampleDraft]:
    """Self-Instruct's novelty filter: ROUGE-L against the pool, in order, within the step too."""
    keyed = [(f"draft-{i}", d.instruction) for i, d in enumerate(drafts)]
    kept = []
    for draft, decision in zip(drafts, novelty.filter(keyed, commit=False), strict=True):
        if decision.accepted:
            kept.append(draft)
            continue
        evidence = {"rouge_l": round(decision.score or 0.0, 4), "similar_to": decision.most_similar}
        result.rejections.append(
            Rejection(Stage.GENERATE, "too_similar", evidence, text=draft.instruction)
        )
        result.record_of(draft).drops["too_similar"] += 1
    return kept


async def _with_instances(
    drafts: list[ExampleDraft],
    model: ChatModel,
    prompts_for: Callable[[str], PromptLibrary],
    config: GeneratorConfig,
    rng: Random,
    result: StepResult,
) -> list[ExampleDraft]:
    """Instances for each language's tasks with that language's prompts; a task that gets
    none is counted as a drop of its call, under the reason that ended it."""
    kept: list[ExampleDraft] = []
    for language in dict.fromkeys(result.calls[d.meta[CALL_KEY]].language for d in drafts):
        mine = [d for d in drafts if result.record_of(d).language == language]
        outcome = await generator.generate_instances(
            mine, model, prompts_for(language), config, rng
        )
        result.rejections += outcome.rejections
        result.usage.update(outcome.usage())
        kept += outcome.drafts
        survived = {d.instruction for d in outcome.drafts}
        ended: dict[str, str] = {}
        for rejection in outcome.rejections:
            if rejection.reason in TASK_DROPS or not rejection.is_verdict:
                ended.setdefault(rejection.text or "", rejection.reason)
        for draft in mine:
            if draft.instruction not in survived:
                reason = ended.get(draft.instruction, "no_valid_instances")
                result.record_of(draft).drops[reason] += 1
    kept.sort(key=lambda d: d.meta[CALL_KEY])
    return kept
