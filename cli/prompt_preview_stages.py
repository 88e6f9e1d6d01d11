"""The stage functions of `prompt_preview`: what one stage would send for one example.

Where an agent builds its request in a function of its own (the generator's few-shot
prompt and instance requests, the judge's and Deita's messages, ReAlign's rewrite
request) these call it. Where the request is built inline in the agent (the evolver, the
responder, elimination, InsTag, ReAlign's classifier) these mirror that code:
tests/test_cli_conveniences.py runs every agent against a model double that records its
requests and compares them with these, so an agent change this does not follow fails a
test rather than showing a prompt nobody sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from random import Random
from typing import Any

from evoinstruct.models.base import ChatRequest
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import InputError
from evoinstruct.store.records import Example
from evoinstruct.store.stages import Stage

# What --variant picks in each stage that has variants.
VARIANT_OF = {
    "instances": "template",
    Stage.EVOLVE: "operation",
    "judge": "dimension",
    "deita": "kind",
    Stage.REWRITE: "task type",
}


@dataclass
class Preview:
    """One request a stage would send."""

    stage: Stage | str  # a stage, or a request of its own (the judge's, InsTag's, ...)
    variant: str | None
    template: str
    request: ChatRequest
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "stage": self.stage,
            "variant": self.variant,
            "template": self.template,
            "messages": [dict(m) for m in r.messages],
            "temperature": r.temperature,
            "top_p": r.top_p,
            "max_tokens": r.max_tokens,
            "n": r.n,
            "stop": list(r.stop),
            "json_schema": r.json_schema,
            "note": self.note,
        }


def _pick(stage: str, variants: Sequence[str], chosen: str | None) -> list[str]:
    if chosen is None:
        return list(variants)
    if chosen not in variants:
        raise InputError(
            f"{stage} has no {VARIANT_OF.get(stage, 'variant')} {chosen!r} "
            f"(one of {', '.join(variants) or 'none'})",
            field="--variant",
        )
    return [chosen]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- one function per stage -------------------------------------------------------------------


def generate(
    demo_sets: Sequence[Sequence[Example]], prompts: PromptLibrary, config: Any, rng: Random
) -> list[Preview]:
    """The first generation call of a round whose demos are `demo_sets` (as the node samples
    them with its rng, which then shuffles each set)."""
    from evoinstruct.agents.generator import _render_generation

    if not demo_sets:
        return []
    demos = list(demo_sets[0])
    rng.shuffle(demos)
    name, request, _ = _render_generation(demos, prompts, config.generator)
    note = f"{len(demos)} demos; the round makes {config.loop.generate_calls} such calls"
    return [Preview(Stage.GENERATE, None, prompts.template_name(name), request, note)]


def instances(
    example: Example, prompts: PromptLibrary, config: Any, variant: str | None = None
) -> list[Preview]:
    from evoinstruct.agents.generator import (
        EXAMPLE_LABEL,
        NONE_INPUT,
        Decoding,
        _instance_template,
        _request,
        instance_stops,
    )

    cfg = config.generator
    lang = prompts.language
    out = []
    for name in _pick("instances", ["is_classification", "input_first", "output_first"], variant):
        if name == "is_classification":
            dec = Decoding(temperature=0.0, max_tokens=cfg.classify_max_tokens)
            text = prompts.render("is_classification", instruction=example.instruction)
            out.append(Preview("instances", name, prompts.template_name(name), _request(text, dec)))
            continue
        template = _instance_template(name == "output_first")
        text = prompts.render(
            template,
            instruction=example.instruction,
            max_examples=cfg.instances_per_call,
            example_label=EXAMPLE_LABEL[lang],
            none_marker=NONE_INPUT[lang],
        )
        request = _request(
            text, cfg.instance_decoding, instance_stops(cfg.instances_per_call, lang)
        )
        out.append(Preview("instances", name, prompts.template_name(template), request))
    return out


def evolve(
    parent: Example, prompts: PromptLibrary, config: Any, variant: str | None = None
) -> list[Preview]:
    """Mirrors `evolver.evolve` (its plan and request) for each operation."""
    from evoinstruct.agents.evolver import MARKERS, without_constraints
    from evoinstruct.agents.scoring.verify import constraints_of

    cfg = config.evolver
    verifiable = cfg.verifiable
    markers = MARKERS.get(prompts.language, MARKERS["en"])
    try:
        carried = constraints_of(parent)
    except ValueError:
        carried = []
    text = without_constraints(parent, carried)
    out = []
    for op in _pick(Stage.EVOLVE, list(cfg.operations), variant):
        kept = [] if op == "in_breadth" else carried
        # With probability 1 (the default) add_constraints always attaches some; below
        # that the draw decides, and the preview shows the constrained prompt.
        new = op == "add_constraints" and verifiable.enabled and verifiable.probability > 0
        rendered = prompts.render(
            f"evol_{op}",
            instruction=text,
            min_words=cfg.added_words_min,
            max_words=cfg.added_words_max,
            given_marker=markers["given"],
            output_marker=markers["created" if op == "in_breadth" else "rewritten"],
            verifiable=bool(kept) or new,
        )
        request = ChatRequest(
            messages=_user(rendered),
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_tokens,
        )
        note = None
        if new and verifiable.probability < 1:
            note = f"constraints are attached to {verifiable.probability:.0%} of these children"
        out.append(Preview(Stage.EVOLVE, op, prompts.template_name(f"evol_{op}"), request, note))
    return out


def eliminate(
    parent: Example, child: Example, prompts: PromptLibrary, config: Any
) -> list[Preview]:
    """Mirrors the equality check (rule 1) of `evolver.eliminate`."""
    from evoinstruct.agents.evolver import prompt_text

    text = prompts.render("evol_equality", first=prompt_text(parent), second=prompt_text(child))
    request = ChatRequest(
        messages=_user(text), temperature=0.0, max_tokens=config.evolver.equality_max_tokens
    )
    return [Preview(Stage.ELIMINATE, None, prompts.template_name("evol_equality"), request)]


def respond(example: Example, prompts: PromptLibrary, config: Any, rng: Random) -> list[Preview]:
    """Mirrors `responder.respond`: the system prompt, the sampling of a constrained item."""
    from evoinstruct.agents.responder import (
        TEMPLATE,
        build_messages,
        load_bank,
        pick_system_prompt,
    )
    from evoinstruct.agents.scoring.verify import constraints_of

    cfg = config.responder
    try:
        constrained = bool(constraints_of(example))
    except ValueError:
        constrained = False
    note = None
    system = example.system
    if not system and cfg.explanation_prompts:
        bank = load_bank(prompts, cfg.system_prompt_bank)
        system = pick_system_prompt(bank, example.meta.get(cfg.family_key), rng)
        note = "the system prompt is drawn from the bank for each task"
    temperature, n = cfg.sampling(constrained)
    request = ChatRequest(
        messages=build_messages(
            system, prompts.render(TEMPLATE, instruction=example.instruction, input=example.input)
        ),
        temperature=temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        n=n,
    )
    return [Preview(Stage.RESPOND, None, prompts.template_name(TEMPLATE), request, note)]


def judge(
    example: Example, prompts: PromptLibrary, config: Any, variant: str | None = None
) -> list[Preview]:
    from evoinstruct.agents.scoring.judge import judge_messages, judge_schema

    cfg = config.critic.judge
    name = "judge_json" if cfg.structured else "judge"
    out = []
    for dimension in _pick("judge", list(cfg.dimensions), variant):
        request = ChatRequest(
            messages=judge_messages(example, dimension, prompts, cfg.structured),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            json_schema=judge_schema() if cfg.structured else None,
        )
        out.append(Preview("judge", dimension, prompts.template_name(name), request))
    return out


def deita(
    example: Example, prompts: PromptLibrary, config: Any, variant: str | None = None
) -> list[Preview]:
    from evoinstruct.agents.scoring.deita import KINDS, deita_messages

    cfg = config.critic.deita
    note = "with a scorer model (roles.scorer) these messages are scored from its logits instead"
    out = []
    for kind in _pick("deita", list(KINDS), variant):
        request = ChatRequest(
            messages=deita_messages(example, kind, prompts, cfg),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
        )
        out.append(Preview("deita", kind, prompts.template_name(f"deita_{kind}"), request, note))
    return out


def instag(example: Example, prompts: PromptLibrary, config: Any) -> list[Preview]:
    """Mirrors `instag.tag_examples`."""
    from evoinstruct.agents.scoring.instag import instag_prompt

    cfg = config.critic.instag
    text = instag_prompt(prompts, example, cfg)
    request = ChatRequest(
        messages=_user(text), temperature=cfg.temperature, max_tokens=cfg.max_tokens
    )
    return [Preview("instag", None, prompts.template_name("instag"), request)]


def classify(example: Example, prompts: PromptLibrary, config: Any) -> list[Preview]:
    """Mirrors `rewriter.classify`."""
    from evoinstruct.agents.rewriter import DEFAULT_TYPE, load_task_types

    cfg = config.rewriter
    listing = [
        {"name": t.name, "description": t.description} for t in load_task_types(prompts).values()
    ]
    text = prompts.render(
        "classify_task",
        instruction=example.instruction,
        input=example.input,
        task_types=listing,
        default_type=DEFAULT_TYPE,
    )
    request = ChatRequest(
        messages=_user(text),
        temperature=cfg.classify_temperature,
        max_tokens=cfg.classify_max_tokens,
    )
    return [Preview("classify", None, prompts.template_name("classify_task"), request)]


def rewrite(
    example: Example, prompts: PromptLibrary, config: Any, variant: str | None = None
) -> list[Preview]:
    """The rewrite request for the example's task type (as classified before, when it was),
    else the first type that is rewritten; `variant` names another."""
    from evoinstruct.agents.rewriter import DEFAULT_TYPE, _rewrite_request, load_task_types

    types = load_task_types(prompts)
    rewritten = [name for name, t in types.items() if t.rewrite]
    if variant is None:
        realign = example.meta.get("realign")
        known = realign.get("task_type") if isinstance(realign, dict) else None
        fallback = DEFAULT_TYPE if DEFAULT_TYPE in rewritten else (rewritten or [DEFAULT_TYPE])[0]
        variant = known if known in types else fallback
    (name,) = _pick(Stage.REWRITE, list(types), variant)
    note = None if types[name].rewrite else f"task type {name!r} is not rewritten"
    request = _rewrite_request(example, types[name], "", prompts, config.rewriter)
    return [Preview(Stage.REWRITE, name, prompts.template_name("realign_rewrite"), request, note)]
