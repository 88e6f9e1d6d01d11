"""Did the student become a better generator? The project's generator record, and a paired test.

Two views, both per model version:

* the record of the run (`report.generator_yield`): what each version wrote in the rounds
  it served as the generator, on that round's demos — yield, drops, diversity;
* a paired measurement (`trainer.generator_eval`): the base model and a trained version
  write on the same demo sets, drawn once from the pool, and their yields (tasks past
  the whole generate step per call) are compared call by call with a bootstrap interval.

The second is the evidence: the record's versions met different pools and demos.
`bench/evolution.py` prints both for each arm.
"""

from __future__ import annotations

from typing import Any

from evoinstruct.graph.project import Project


async def measure_generators(
    project: Project,
    versions: list[str],
    *,
    calls: int = 24,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The record per version, and the base model against each of `versions` on `calls`
    shared demo sets (each version against the base, paired)."""
    from evoinstruct.cli.report.generator_yield import generator_rows
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.graph.round.indexes import selection_indexes
    from evoinstruct.trainer.generator_eval import (
        compare_generators,
        fixed_plans,
        score_generator,
    )
    from evoinstruct.trainer.targets import resolve_target

    config = project.load_config(list(overrides))
    deps = deps_for_project(project, config)
    try:
        record = [row.to_dict() for row in generator_rows(deps.store, config.report)]
        plans = fixed_plans(deps.store, config.generator, config.project.languages(), calls, seed)
        novelty = selection_indexes(deps).novelty
        scores = {}
        for label in ["base", *versions]:
            target = await resolve_target(deps.store, deps.models, label)
            try:
                scores[label] = await score_generator(
                    label, plans, target.model, deps.prompts_for, config.generator, novelty, seed
                )
            finally:
                await target.close()
        return {
            "record": record,
            "calls": len(plans),
            "scores": {label: s.to_dict(seed) for label, s in scores.items()},
            "paired": [compare_generators(scores[v], scores["base"], seed=seed) for v in versions],
        }
    finally:
        await deps.models.aclose()
        deps.store.close()
