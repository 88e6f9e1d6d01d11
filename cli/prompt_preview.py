"""What a stage would send for one example: the requests, rendered as the agents render them.

`evoinstruct inspect prompt STAGE` prints these with the project's config and prompt
overrides.

The stage functions (and `Preview`, `VARIANT_OF`) live in `graph.prompt_preview_stages`,
which says how they follow the agents; this module picks the stage, the example and the
config.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import Random
from typing import Any

from evoinstruct.cli.prompt_preview_stages import (
    VARIANT_OF,
    Preview,
    classify,
    deita,
    eliminate,
    evolve,
    generate,
    instag,
    instances,
    judge,
    respond,
    rewrite,
)
from evoinstruct.graph.round.deps import stage_rng
from evoinstruct.prompts.library import LANGUAGES, PromptLibrary
from evoinstruct.store.errors import InputError
from evoinstruct.store.records import Example
from evoinstruct.store.stages import Stage

__all__ = [
    "SAMPLES",
    "STAGES",
    "VARIANT_OF",
    "Preview",
    "classify",
    "default_example",
    "deita",
    "eliminate",
    "evolve",
    "generate",
    "instag",
    "instances",
    "judge",
    "library",
    "preview",
    "project_preview",
    "respond",
    "rewrite",
    "sample_example",
]

STAGES: dict[str, str] = {
    Stage.GENERATE: "few-shot task generation (Self-Instruct or Alpaca), demos drawn from the pool",
    "instances": "Self-Instruct instances: the classification check, input-first, output-first",
    Stage.EVOLVE: "an Evol-Instruct rewrite, one per configured operation",
    Stage.ELIMINATE: "Evol-Instruct's equality check of an evolved example against its parent",
    Stage.RESPOND: "the answer request",
    "judge": "the LLM judge, one per dimension",
    "deita": "Deita's complexity and quality scoring (the judge fallback's request)",
    "instag": "InsTag's tagging",
    "classify": "ReAlign's task classification",
    Stage.REWRITE: "ReAlign's rewrite for the example's task type",
}

# Shown when the pool has no example to preview with, so the prompts can be read right
# after `init`.
SAMPLES = {
    "en": ("Give three tips for staying healthy.", "1. Eat well. 2. Sleep enough. 3. Move daily."),
    "zh": ("给出三条保持健康的建议。", "1. 均衡饮食。2. 睡眠充足。3. 每天运动。"),
}


def sample_example(language: str) -> Example:
    """A stand-in example in `language`, for a pool with nothing to show."""
    instruction, output = SAMPLES.get(language, SAMPLES["en"])
    return Example(
        id="sample",
        instruction=instruction,
        output=output,
        source="seed",
        status="accepted",
        language=language,
    )


def library(language: str, override_dir: Any = None) -> PromptLibrary:
    if language not in LANGUAGES:
        raise InputError(
            f"unknown language {language!r}; choose one of {', '.join(LANGUAGES)}",
            field="--language",
        )
    return PromptLibrary(language, override_dir=override_dir)


def preview(
    stage: str,
    example: Example,
    *,
    prompts: PromptLibrary,
    config: Any,
    variant: str | None = None,
    parent: Example | None = None,
    demo_sets: Sequence[Sequence[Example]] = (),
    rng: Random | None = None,
) -> list[Preview]:
    """The requests `stage` would send for `example` (`parent` for eliminate; `demo_sets`
    for generate, which sends no example of its own)."""
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})", field="STAGE")
    if variant is not None and stage not in VARIANT_OF:
        raise InputError(f"{stage} has no variants", field="--variant")
    rng = rng or Random(0)
    if stage == Stage.GENERATE:
        return generate(demo_sets or [[]], prompts, config, rng)
    if stage == Stage.ELIMINATE:
        if parent is None:
            raise InputError(
                f"eliminate compares an evolved example with its parent; {example.id} has none "
                "(pick an evolved one with --example)",
                field="--example",
            )
        return eliminate(parent, example, prompts, config)
    if stage == Stage.RESPOND:
        return respond(example, prompts, config, rng)
    if stage in ("instag", "classify"):
        return {"instag": instag, "classify": classify}[stage](example, prompts, config)
    build = {
        "instances": instances,
        Stage.EVOLVE: evolve,
        "judge": judge,
        "deita": deita,
        Stage.REWRITE: rewrite,
    }[stage]
    return build(example, prompts, config, variant)


# --- which example, from a project's pool --------------------------------------------------------


def default_example(store: Any, stage: str) -> Example | None:
    """The example a stage would most likely meet: the oldest fitting one in the pool."""

    def first(**filters: Any) -> Example | None:
        return next(iter(store.iter_examples(limit=1, **filters)), None)

    if stage == Stage.ELIMINATE:
        return next(
            (e for e in store.iter_examples(source="evolved") if e.parent_id is not None), None
        )
    if stage == Stage.RESPOND:
        return first(status="candidate", has_output=False) or first(status="accepted")
    if stage in (Stage.EVOLVE, "instances"):
        return first(status="accepted")
    return first(status="accepted", has_output=True) or first(has_output=True)


def project_preview(
    project: Any,
    stage: str,
    *,
    example_id: str | None = None,
    language: str | None = None,
    variant: str | None = None,
    overrides: Sequence[str] = (),
) -> tuple[Example, list[Preview]]:
    """`preview` on a project: its config (with `--set` overrides), its prompt overrides, the
    example `example_id` (else a fitting one from the pool, else a stand-in)."""
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})", field="STAGE")
    if stage == Stage.GENERATE and example_id is not None:
        raise InputError(
            "generate draws its demos from the pool and sends no example of its own",
            field="--example",
        )
    config = project.load_config(list(overrides))
    lang = language or config.project.language
    prompts = library(lang, project.prompts_dir)
    rng = Random(f"{config.project.seed}:preview:{stage}")
    with project.open_store() as store:
        if example_id is not None:
            example = store.get(example_id)
            if example is None:
                raise InputError(f"no example with id {example_id!r}", field="--example")
        else:
            found = default_example(store, stage)
            if found is None and stage == Stage.ELIMINATE:
                raise InputError(
                    "the pool has no evolved example yet: eliminate compares one with its "
                    "parent (run a round first, or name one with --example)",
                    field="--example",
                )
            example = found or sample_example(lang)
        parent = store.get(example.parent_id) if example.parent_id else None
        demo_sets: list[list[Example]] = []
        if stage == Stage.GENERATE:
            last = store.last_round()
            number = (last["number"] if last else 0) + 1
            # The node's rng: the same (seed, round, stage) draws the same demos.
            rng = stage_rng(config.project.seed, number, Stage.GENERATE)
            human, machine = config.generator.demo_counts()
            calls = max(config.loop.generate_calls, 1)
            demo_sets = [store.sample_demos(human, machine, rng) for _ in range(calls)]
    previews = preview(
        stage,
        example,
        prompts=prompts,
        config=config,
        variant=variant,
        parent=parent,
        demo_sets=demo_sets,
        rng=rng,
    )
    return example, previews
