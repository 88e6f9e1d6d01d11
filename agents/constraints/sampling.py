"""Draw compatible constraints for an instruction, and tell whether constraints can coexist.

Two constraints are incompatible when their types conflict (a shared group
such as "length" or "case", or an explicit conflict) or when one requires
text the other rules out (a forbidden word that is also a required keyword,
a comma inside the end phrase under no_comma). Sampling never returns an
incompatible pair, so a sampled set is meant to be satisfiable by one response.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from random import Random

from evoinstruct.agents.constraints.registry import (
    LANGUAGES,
    REGISTRY,
    Constraint,
    ConstraintType,
    SampleContext,
    get_type,
)
from evoinstruct.text.rules import normalize

_ATTEMPTS = 8


def _clashes(a: Constraint, b: Constraint) -> bool:
    required_b = "\n".join(b.type.required_text(b.params))
    required_a = "\n".join(a.type.required_text(a.params))
    return bool(
        (required_b and a.type.clashes_with_text(a.params, required_b))
        or (required_a and b.type.clashes_with_text(b.params, required_a))
    )


def incompatible(a: Constraint, b: Constraint) -> bool:
    """True when no single response could be expected to meet both."""
    return a.type.conflicts_with(b.type) or _clashes(a, b)


def find_conflicts(constraints: Sequence[Constraint]) -> list[tuple[Constraint, Constraint]]:
    """Every incompatible pair, in order; empty for a compatible set."""
    return [
        (a, b)
        for i, a in enumerate(constraints)
        for b in constraints[i + 1 :]
        if incompatible(a, b)
    ]


def _fits(candidate: Constraint, chosen: Sequence[Constraint]) -> bool:
    if any(candidate.type.conflicts_with(c.type) for c in chosen):
        return False
    # Texts are pooled: two keywords may each hold one "q" and together break
    # "fewer than 2 q's".
    required = "\n".join(t for c in chosen for t in c.type.required_text(c.params))
    if required and candidate.type.clashes_with_text(candidate.params, required):
        return False
    own = "\n".join(candidate.type.required_text(candidate.params))
    return not (own and any(c.type.clashes_with_text(c.params, own) for c in chosen))


def _reserved(chosen: Sequence[Constraint]) -> frozenset[str]:
    texts: set[str] = set()
    for c in chosen:
        texts.update(c.type.required_text(c.params))
        for param in c.type.params:
            if param.kind == "words":
                texts.update(c.params[param.name])
            elif param.kind == "str":
                texts.add(c.params[param.name])
    return frozenset(n for n in (normalize(t) for t in texts) if n)


def sampleable(language: str, instruction: str = "") -> list[ConstraintType]:
    """Types that may be sampled for this language (and instruction), sorted by id."""
    return [
        t
        for _, t in sorted(REGISTRY.items())
        if language in t.languages and (instruction.strip() or not t.needs_instruction)
    ]


def sample_constraint(
    constraint_id: str,
    rng: Random,
    language: str,
    instruction: str = "",
    *,
    existing: Sequence[Constraint] = (),
) -> Constraint | None:
    """One constraint of the given type with drawn parameters that fit `existing`, else None.

    Unlike `sample_constraints` this does not consult the type's `languages`,
    so a caller may ask for, say, a lowercase rule on purpose.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    ctype = get_type(constraint_id)
    if any(ctype.conflicts_with(c.type) for c in existing):
        return None
    ctx = SampleContext(rng, language, instruction, _reserved(existing))
    for _ in range(_ATTEMPTS):
        candidate = Constraint(ctype.id, ctype.sampler(ctx))
        if _fits(candidate, existing):
            return candidate
    return None


def sample_constraints(
    rng: Random,
    language: str,
    k: int,
    instruction: str = "",
    *,
    existing: Sequence[Constraint] = (),
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[Constraint]:
    """k new, mutually compatible constraints for an instruction in `language`.

    Types are tried in an rng-shuffled order, so every sampleable type is
    equally likely; the same rng state gives the same picks. `existing`
    constraints (already on the example) are respected and not repeated;
    `only` and `exclude` narrow the candidate ids. Raises ValueError for an
    unknown language, a negative k, or when fewer than k compatible types remain.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    unknown = sorted((set(only or ()) | set(exclude)) - set(REGISTRY))
    if unknown:
        raise ValueError(f"unknown constraint id(s) {unknown}")
    pool = [
        t.id
        for t in sampleable(language, instruction)
        if (only is None or t.id in only) and t.id not in exclude
    ]
    rng.shuffle(pool)
    chosen = list(existing)
    picks: list[Constraint] = []
    for cid in pool:
        if len(picks) == k:
            break
        constraint = sample_constraint(cid, rng, language, instruction, existing=chosen)
        if constraint is not None:
            chosen.append(constraint)
            picks.append(constraint)
    if len(picks) < k:
        raise ValueError(
            f"only {len(picks)} compatible constraint(s) available for language {language!r}, "
            f"asked for {k}"
        )
    return picks
