"""Verifiable constraints on examples: reading them, checking a response, the critic's part.

The evolver's add_constraints operation stores registry constraints on a
child (`meta["constraints"]`, as `dump_constraints` writes them); the
responder samples until an answer passes them; this module is what the other
agents share to read and check them:

* `verify_examples` is the critic's part: one score per constraint and
  verdict (scorer "verify", dimension the constraint id, 1.0 pass / 0.0 fail,
  the checker's reason as explanation; `<id>:loose` for IFEval's loose check;
  `all_constraints` and `all_constraints:loose` for the whole prompt). It
  needs no model, which is why this path works with a weak one.
* `constraint_failure` is the selector's verdict: the first failing
  constraint names the reason, `constraint_failed:<id>`.
* `guard_rewrites` keeps ReAlign from turning a passing answer into a failing
  one (a rewrite reformats, and format is what most constraints are about).

Dimension names are distinct for strict and loose because exports and the
selector's score table merge scores by dimension across scorers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.constraints import (
    REGISTRY,
    CheckResult,
    Constraint,
    check_all,
    load_constraints,
)
from evoinstruct.agents.rewriter import RewriteOutcome
from evoinstruct.store.records import Example, ExampleDraft, Score

META_KEY = "constraints"
SCORER = "verify"
ALL = "all_constraints"
LOOSE = ":loose"
FAILED = "constraint_failed"
UNREADABLE = "constraints_unreadable"


class VerifyConfig(BaseModel):
    """The critic's check of verifiable constraints (METHODS 2.7); model-free."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Score each stored constraint's verdict (scorer 'verify')."
    )
    loose: bool = Field(
        True, description="Also record IFEval's loose verdicts (dimensions '<id>:loose')."
    )
    skip_failed: bool = Field(
        True,
        description="Later (model) parts skip an example that fails a constraint: the selector drops it anyway.",
    )


def constraints_of(item: Example | ExampleDraft) -> list[Constraint]:
    """The constraints stored on an item ([] for none); ValueError when they cannot be read."""
    data = item.meta.get(META_KEY)
    if not data:
        return []
    if not isinstance(data, list):
        raise ValueError(f"meta.{META_KEY} must be a list of constraints, got {data!r}")
    return load_constraints(data)


def failures(
    constraints: Sequence[Constraint], response: str | None, *, loose: bool = False
) -> dict[str, str]:
    """The constraints `response` fails, in order: id -> the checker's reason.

    Ids are unique on an example (a type never combines with itself); the
    parameters are not repeated here, they are on the example.
    """
    results = check_all(constraints, response or "", loose=loose)
    return {c.id: r.reason for c, r in zip(constraints, results, strict=True) if not r.passed}


def constraint_failure(example: Example, *, loose: bool = False) -> tuple[str, Any] | None:
    """(reason, evidence) when the example's response fails a stored constraint, else None.

    The reason names the first failing constraint (`constraint_failed:<id>`);
    the evidence lists every failure. Constraints that cannot be read (an id
    this version does not know) leave the example unverifiable: `constraints_unreadable`.
    """
    try:
        constraints = constraints_of(example)
    except ValueError as exc:
        return UNREADABLE, {"error": str(exc)}
    failed = failures(constraints, example.output, loose=loose)
    if not failed:
        return None
    evidence = {"failed": failed, "check": "loose" if loose else "strict"}
    return f"{FAILED}:{next(iter(failed))}", evidence


def is_dimension(name: str) -> bool:
    """Whether verification scores a dimension of this name: a constraint id or
    `all_constraints`, strict or with ':loose'."""
    base = name.removesuffix(LOOSE)
    return base == ALL or base in REGISTRY


def passes(example: Example) -> bool:
    """True for an unconstrained example or one whose response passes every constraint."""
    return constraint_failure(example) is None


def _scores(
    example_id: str, constraints: Sequence[Constraint], results: Sequence[CheckResult], suffix: str
) -> list[Score]:
    scores = [
        Score(example_id, SCORER, f"{c.id}{suffix}", float(r.passed), explanation=r.reason)
        for c, r in zip(constraints, results, strict=True)
    ]
    passed = sum(r.passed for r in results)
    scores.append(
        Score(
            example_id,
            SCORER,
            f"{ALL}{suffix}",
            float(passed == len(results)),
            explanation=f"{passed} of {len(results)} constraints pass",
        )
    )
    return scores


@dataclass
class VerifyResult:
    """Scores, and per example id the constraint ids it fails (strict) or why it is unreadable."""

    scores: list[Score] = field(default_factory=list)
    failed: dict[str, list[str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def verify_examples(
    batch: Sequence[Example], config: VerifyConfig, counters: Counter[str]
) -> VerifyResult:
    """Check every constrained example's response, strict (and loose), into scores."""
    result = VerifyResult()
    for example in batch:
        try:
            constraints = constraints_of(example)
        except ValueError as exc:
            result.unreadable[example.id] = str(exc)
            counters[UNREADABLE] += 1
            continue
        if not constraints:
            continue
        response = example.output or ""
        strict = check_all(constraints, response)
        result.scores.extend(_scores(example.id, constraints, strict, ""))
        if config.loose:
            loose = check_all(constraints, response, loose=True)
            result.scores.extend(_scores(example.id, constraints, loose, LOOSE))
        failed = [c.id for c, r in zip(constraints, strict, strict=True) if not r.passed]
        counters["verified"] += 1
        counters["verify_failed" if failed else "verify_passed"] += 1
        if failed:
            result.failed[example.id] = failed
    return result


RewriteAgent = Callable[[list[Example]], Awaitable[RewriteOutcome]]


async def guard_rewrites(batch: list[Example], rewrite: RewriteAgent) -> RewriteOutcome:
    """ReAlign on `batch`, keeping no rewrite that fails a constraint of its original.

    An example that already fails its constraints is not sent at all: the
    selector drops it whatever its rewrite says, so the call would be wasted.
    A rewrite that breaks a constraint is not kept (reason
    `constraint_broken:<id>`, recorded like any rewrite rejection), so the
    original stays and the rewrite inherits only true verdicts.
    """
    todo = [e for e in batch if passes(e)]
    outcome = await rewrite(todo) if todo else RewriteOutcome()
    if len(todo) < len(batch):
        outcome.counters["held_back_failing_constraints"] += len(batch) - len(todo)
    originals = {e.id: e for e in todo}
    kept: list[ExampleDraft] = []
    for draft in outcome.drafts:
        original = originals.get(draft.parent_id or "")
        constraints = constraints_of(original) if original is not None else []
        broken = failures(constraints, draft.output)
        if broken:
            outcome.reject(
                f"constraint_broken:{next(iter(broken))}",
                original,
                evidence={"failed": broken, "check": "strict"},
                raw_output=draft.output,
            )
        else:
            kept.append(draft)
    outcome.drafts = kept
    return outcome
