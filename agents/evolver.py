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

Verifiable constraints (METHODS 2.7): besides the free-text constraint the
model writes, add_constraints attaches 1–3 registry constraints with concrete
parameters (`evolver.verifiable`). Each is described by one of its training
phrasings, placed before, after or inside the rewritten instruction
(`agents.constraints.phrasing`), so the responder's model reads them; the
constraints are stored in the child's `meta["constraints"]` for the responder,
critic and selector to check, and the bare instruction with the phrasings used
in `meta["constraint_layout"]`. Held-out types and suite-only phrasings
(`trainer.suite.held_out`) are never drawn. A parent's constraints are carried
by its in-depth children (in-breadth makes a new prompt): the model is shown
the parent without their sentences, which are placed again around the
rewrite, so no rewrite can garble them.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evoinstruct.agents.constraints import (
    LANGUAGES,
    REGISTRY,
    Constraint,
    describe_all,
    dump_constraints,
    sample_constraint,
    sample_constraints,
)
from evoinstruct.agents.constraints.phrasing import (
    LAYOUT_KEY,
    layout,
    layout_meta,
    render_prompt,
)
from evoinstruct.agents.constraints.split import ConstraintSplit, default_split
from evoinstruct.agents.generator import text_language
from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.scoring.verify import META_KEY, constraints_of
from evoinstruct.agents.textstats import find_phrase, only_punctuation_and_stopwords
from evoinstruct.models.base import ChatModel, ChatRequest, Result, model_version
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, ExampleDraft
from evoinstruct.store.stages import Stage
from evoinstruct.text.rules import count_words, normalize

# No model call: the parent's prompt as it is, with registry constraints appended (the
# verifiable-constraint recipe of Tülu 3 and AutoIF). It works with any model, however weak
# at rewriting prompts; not among the default operations, which follow WizardLM.
ADD_VERIFIABLE = "add_verifiable"
Operation = Literal[
    "add_verifiable",
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


class VerifiableConfig(BaseModel):
    """Registry constraints the add_constraints operation attaches (METHODS 2.7)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="add_constraints also attaches checkable registry constraints."
    )
    probability: float = Field(
        1.0, ge=0, le=1, description="Share of add_constraints children that get them."
    )
    min_count: int = Field(1, ge=1, description="Fewest constraints attached to one child.")
    max_count: int = Field(
        3,
        ge=1,
        description="Most constraints on one child, those carried from its parent included.",
    )
    only: list[str] | None = Field(
        None,
        description=(
            "Constraint ids to draw from; unset: every type sampleable in the language. "
            "Held-out types (trainer.suite.held_out.types) are never drawn."
        ),
    )
    exclude: list[str] = Field(default_factory=list, description="Constraint ids never drawn.")

    @field_validator("only", "exclude")
    @classmethod
    def _known_ids(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown constraint id(s) {unknown}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> VerifiableConfig:
        if self.min_count > self.max_count:
            raise ValueError(f"min_count {self.min_count} exceeds max_count {self.max_count}")
        return self


class EvolverConfig(BaseModel):
    """Evol-Instruct (METHODS 1.2)."""

    model_config = ConfigDict(extra="forbid")

    operations: list[Operation] = Field(
        default_factory=lambda: list(OPERATIONS),
        description="Operations to choose from, uniformly: five in-depth and in_breadth by default; add_verifiable appends registry constraints to the parent as it is, with no model call.",
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
    verifiable: VerifiableConfig = Field(
        default_factory=VerifiableConfig,
        description="Checkable registry constraints attached by add_constraints.",
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

    stage = Stage.EVOLVE

    drafts: list[ExampleDraft] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)
    # Children given constraints, constraints attached, asked-for ones no compatible type
    # could supply, carried ones that could not be kept, parents whose constraints are unreadable.
    verifiable: Counter[str] = field(default_factory=Counter)

    def merge(self, other: EvolveOutcome) -> None:
        """Add another batch's outcome (a bilingual round evolves each language apart)."""
        self.drafts += other.drafts
        self.rejections += other.rejections
        self.counters.update(other.counters)
        self.operations.update(other.operations)
        self.verifiable.update(other.verifiable)


@dataclass
class EliminateOutcome(AgentOutcome):
    """Children that survived the elimination rules, a rejection for each that did not, and
    the children whose equality check call failed (no verdict: decide them again later)."""

    stage = Stage.EVOLVE

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


@dataclass
class _Plan:
    """One parent's evolution: the operation, what the model is shown, the constraints."""

    parent: Example
    op: str
    text: str
    carried: list[Constraint]
    new: int
    rng: Random
    split: ConstraintSplit

    @property
    def constrained(self) -> bool:
        return bool(self.carried) or self.new > 0


def without_constraints(item: Example | ExampleDraft, constraints: Sequence[Constraint]) -> str:
    """`prompt_text` with the constraints' sentences taken off again.

    An example that stored its layout gives back its bare instruction; for one
    from before layouts, sentences appended in the canonical phrasing are
    stripped in whichever language they were written; other text (an imported
    example) is left as it is.
    """
    instruction = item.instruction.strip()
    stored = item.meta.get(LAYOUT_KEY)
    task = stored.get("task") if isinstance(stored, dict) else None
    if constraints and isinstance(task, str) and task.strip():
        instruction = task.strip()
    elif constraints:
        for language in LANGUAGES:
            suffix = describe_all(constraints, language)
            if instruction.endswith(suffix):
                instruction = instruction[: -len(suffix)].rstrip()
                break
    return f"{instruction}\n\n{item.input.strip()}" if item.input.strip() else instruction


def _plan(
    parent: Example,
    op: str,
    config: VerifiableConfig,
    rng: Random,
    counters: Counter[str],
    split: ConstraintSplit,
) -> _Plan:
    try:
        carried = constraints_of(parent)
    except ValueError:
        counters["constraints_unreadable"] += 1
        carried = []
    text = without_constraints(parent, carried)
    held_out = [c for c in carried if c.id in split.held_out_types]
    if held_out:
        # A parent from before the split (or an import) may carry a held-out type:
        # its children must not, or they could never train.
        counters["constraints_held_out"] += len(held_out)
        carried = [c for c in carried if c.id not in split.held_out_types]
    if op == "in_breadth":  # a new prompt: the parent's rules on answers do not apply to it
        carried = []
    new = 0
    if op == ADD_VERIFIABLE or (
        op == "add_constraints" and config.enabled and rng.random() < config.probability
    ):
        room = max(config.max_count - len(carried), 0)
        new = min(rng.randint(config.min_count, config.max_count), room)
    return _Plan(parent, op, text, carried, new, rng, split)


async def evolve(
    parents: Sequence[Example],
    model: ChatModel,
    prompts: PromptLibrary,
    config: EvolverConfig,
    rng: Random,
    split: ConstraintSplit | None = None,
) -> EvolveOutcome:
    """Draw one operation per parent with `rng` and ask for all rewrites in one batch.

    Constraints are drawn from a generator per parent, seeded from `rng` once
    the operations are drawn: the same round gives the same children whatever
    became of the other parents' calls. `split` (default: the default
    `HeldOutConfig`) says which types and phrasings training may carry.
    """
    split = split or default_split()
    outcome = EvolveOutcome()
    markers = MARKERS.get(prompts.language, MARKERS["en"])
    ops = [rng.choice(config.operations) for _ in parents]
    seed = rng.getrandbits(64)
    plans: list[tuple[_Plan, ChatRequest]] = []
    for parent, op in zip(parents, ops, strict=True):
        outcome.operations[op] += 1
        plan = _plan(
            parent, op, config.verifiable, Random(f"{seed}:{parent.id}"), outcome.verifiable, split
        )
        if op == ADD_VERIFIABLE:
            _take_verifiable(outcome, plan, prompts, config)
            continue
        text = prompts.render(
            f"evol_{op}",
            instruction=plan.text,
            min_words=config.added_words_min,
            max_words=config.added_words_max,
            given_marker=markers["given"],
            output_marker=markers["created" if op == "in_breadth" else "rewritten"],
            verifiable=plan.constrained,
        )
        request = ChatRequest(
            messages=[{"role": "user", "content": text}],
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
        )
        plans.append((plan, request))
    if not plans:
        return outcome
    results = await model.generate([request for _, request in plans])
    for (plan, _), result in zip(plans, results, strict=True):
        _take_rewrite(outcome, plan, result, model, prompts, config)
    return outcome


def _take_rewrite(
    outcome: EvolveOutcome,
    plan: _Plan,
    result: Result,
    model: ChatModel,
    prompts: PromptLibrary,
    config: EvolverConfig,
) -> None:
    parent, op = plan.parent, plan.op

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
    if normalize(evolved) == normalize(plan.text):
        reject("no_information_gain", result.text, {"check": "identical"})
        return
    language = text_language(evolved, prompts.language)
    constraints = _attach(plan, evolved, language, config.verifiable, outcome.verifiable)
    _add_child(
        outcome,
        plan,
        evolved,
        language,
        constraints,
        model_version(model),
        prompts.template_name(f"evol_{op}"),
    )


def _take_verifiable(
    outcome: EvolveOutcome, plan: _Plan, prompts: PromptLibrary, config: EvolverConfig
) -> None:
    """The parent's prompt with new registry constraints appended, and no model call."""
    language = text_language(plan.text, prompts.language)
    constraints = _attach(plan, plan.text, language, config.verifiable, outcome.verifiable)
    if len(constraints) <= len(plan.carried):
        outcome.reject(
            "no_constraint_fits", plan.parent, evidence={"operation": plan.op}, raw_output=None
        )
        return
    _add_child(outcome, plan, plan.text, language, constraints, None, None)


def _add_child(
    outcome: EvolveOutcome,
    plan: _Plan,
    text: str,
    language: str,
    constraints: list[Constraint],
    version: str | None,
    template: str | None,
) -> None:
    instruction, meta = text, {}
    if constraints:
        placed = layout(constraints, language, plan.rng, plan.split.training_choices(language))
        instruction = render_prompt(text, placed, language)
        meta = {META_KEY: dump_constraints(constraints), LAYOUT_KEY: layout_meta(text, placed)}
        outcome.verifiable["constrained"] += 1
    outcome.drafts.append(
        ExampleDraft(
            instruction=instruction,
            source="evolved",
            parent_id=plan.parent.id,
            operation=plan.op,
            model_version=version,
            template=template,
            language=language,
            depth=plan.parent.depth + 1,
            meta=meta,
        )
    )


def _attach(
    plan: _Plan, evolved: str, language: str, config: VerifiableConfig, counters: Counter[str]
) -> list[Constraint]:
    """The child's constraints: the carried ones, then `plan.new` compatible new ones.

    When fewer compatible types remain than were asked for, as many as fit are
    attached (counted as `constraints_short`).
    """
    if language not in LANGUAGES:
        return []
    kept: list[Constraint] = []
    for constraint in plan.carried:
        if constraint.type.needs_instruction:
            # Its parameters quote the instruction (repeat_prompt): anchor them on the rewrite.
            again = sample_constraint(constraint.id, plan.rng, language, evolved, existing=kept)
            if again is None:
                counters["constraints_dropped"] += 1
                continue
            constraint = again
        kept.append(constraint)
    # Held-out types never reach training; a type without a training phrasing in this
    # language (the files do not cover it) has no sentence to carry it either.
    trainable = set(plan.split.training_choices(language))
    exclude = set(config.exclude) | (set(REGISTRY) - trainable)
    for k in range(plan.new, 0, -1):
        try:
            added = sample_constraints(
                plan.rng,
                language,
                k,
                evolved,
                existing=kept,
                only=config.only,
                exclude=exclude,
            )
        except ValueError:
            continue
        counters["constraints_attached"] += len(added)
        if k < plan.new:
            counters["constraints_short"] += plan.new - k
        return kept + added
    if plan.new:
        counters["constraints_short"] += plan.new
    return kept


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
