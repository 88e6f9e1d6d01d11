"""Verifiable instruction constraints (IFEval-style), in English and Chinese.

    from evoinstruct.agents.constraints import sample_constraints, check_all

    picks = sample_constraints(Random(7), "zh", 2, instruction)   # evolver
    split = ConstraintSplit.from_config(held_out_config)          # what training may carry
    placed = layout(picks, "zh", rng, split.training_choices("zh"))
    prompt = render_prompt(instruction, placed, "zh")             # phrasings around the task
    results = check_all(picks, response)                          # responder / critic
    fixed, ids = repair_all(picks, response)                      # responder, then re-check
    meta["constraints"] = dump_constraints(picks)                 # store

Ids and parameter names are IFEval's (`length_constraints:number_words`,
`relation`, `num_words`...), so IFEval-format files load with `from_ifeval`
/ `read_ifeval`. Each type's descriptions are data (`phrasing`, several per
language, split into training and suite-only ones by `split`). Importing
this package registers every type.
"""

from __future__ import annotations

# Imported for their side effect: each family module registers its types.
from evoinstruct.agents.constraints import (  # noqa: F401
    case,
    content,
    formats,
    keywords,
    language,
    length,
    markup,
    startend,
    style,
)
from evoinstruct.agents.constraints.ifeval import (
    IFEVAL_IDS,
    IFEvalRow,
    RowScore,
    accuracy,
    from_ifeval,
    parse_ifeval_row,
    read_ifeval,
    score_row,
    to_ifeval,
    write_ifeval,
)
from evoinstruct.agents.constraints.phrasing import describe, describe_all
from evoinstruct.agents.constraints.registry import (
    LANGUAGES,
    REGISTRY,
    RELATIONS,
    REPAIR_ORDER,
    CheckResult,
    Constraint,
    ConstraintType,
    Param,
    SampleContext,
    all_passed,
    check_all,
    dump_constraints,
    get_type,
    load_constraints,
    repair_all,
)
from evoinstruct.agents.constraints.sampling import (
    find_conflicts,
    incompatible,
    sample_constraint,
    sample_constraints,
    sampleable,
)

__all__ = [
    "IFEVAL_IDS",
    "LANGUAGES",
    "REGISTRY",
    "RELATIONS",
    "REPAIR_ORDER",
    "CheckResult",
    "Constraint",
    "ConstraintType",
    "IFEvalRow",
    "Param",
    "RowScore",
    "SampleContext",
    "accuracy",
    "all_passed",
    "check_all",
    "describe",
    "describe_all",
    "dump_constraints",
    "find_conflicts",
    "from_ifeval",
    "get_type",
    "incompatible",
    "load_constraints",
    "parse_ifeval_row",
    "read_ifeval",
    "repair_all",
    "sample_constraint",
    "sample_constraints",
    "sampleable",
    "score_row",
    "to_ifeval",
    "write_ifeval",
]
