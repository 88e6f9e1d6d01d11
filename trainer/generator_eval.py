"""The generator measured: new tasks per call on fixed demo sets, and two models paired on them.

A round's record says how the generator of that round did on that round's demos
(`cli.report.generator_yield`). To tell whether a trained version generates
better than the base model, both must write on the same prompts: here the demo
sets are drawn once (seeded) and every model answers all of them. A call's yield
is the number of its tasks that pass the whole generate step — parsing, the
generator's filters, the language check, ROUGE-L novelty against the pool and
within the call set, and instances when the generator writes them; the paired
difference of yields is bootstrapped over calls.

The stages after generate (the critic's thresholds, the selector's dedup) are not
run here: a measurement must not change the pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import TYPE_CHECKING, Any

from evoinstruct.agents.generation_step import CallPlan, Novelty, generate_step, plan_calls
from evoinstruct.agents.generator import CALL_KEY, GeneratorConfig
from evoinstruct.models.base import ChatModel
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.trainer.verifiable import bootstrap_ratio, paired_bootstrap

if TYPE_CHECKING:
    from evoinstruct.store import Store


@dataclass
class GeneratorScore:
    """One model's calls on the fixed demo sets: kept tasks per call and why the rest went."""

    label: str
    per_call: list[int]
    tasks: int  # tasks parsed from the answers, before any filter
    drops: Counter[str] = field(default_factory=Counter)
    kept: list[str] = field(default_factory=list)  # the instructions that passed

    def to_dict(self, seed: int = 0) -> dict[str, Any]:
        interval = bootstrap_ratio(self.per_call, seed=seed)
        return {
            "label": self.label,
            "calls": len(self.per_call),
            "tasks": self.tasks,
            "kept": sum(self.per_call),
            "yield_per_call": interval.to_dict() if interval else None,
            "per_call": self.per_call,
            "drops": dict(self.drops.most_common()),
            "instructions": list(self.kept),
        }


def fixed_plans(
    store: Store,
    config: GeneratorConfig,
    languages: Sequence[str],
    calls: int,
    seed: int | str = 0,
) -> list[CallPlan]:
    """`calls` demo sets drawn once from the pool as the generate step draws them (seeded)."""
    rng = Random(f"generator-eval:{seed}")
    human, machine = config.demo_counts()
    return plan_calls(
        calls, languages, lambda lang: store.sample_demos(human, machine, rng, language=lang)
    )


async def score_generator(
    label: str,
    plans: Sequence[CallPlan],
    model: ChatModel,
    prompts_for: Callable[[str], PromptLibrary],
    config: GeneratorConfig,
    novelty: Novelty,
    seed: int | str = 0,
) -> GeneratorScore:
    """Run the generate step on `plans` with `model`, writing nothing; the same `seed` gives
    every model the same demo order."""
    step = await generate_step(plans, model, prompts_for, config, Random(f"order:{seed}"), novelty)
    kept = Counter(d.meta[CALL_KEY] for d in step.drafts)
    drops: Counter[str] = Counter()
    for record in step.calls:
        drops.update(record.drops)
    return GeneratorScore(
        label=label,
        per_call=[kept[i] for i in range(len(plans))],
        tasks=sum(r.tasks for r in step.calls),
        drops=drops,
        kept=[d.instruction for d in step.drafts],
    )


def compare_generators(
    candidate: GeneratorScore, baseline: GeneratorScore, *, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Candidate minus baseline in kept tasks per call, paired over the same calls."""
    if len(candidate.per_call) != len(baseline.per_call):
        raise ValueError("a paired comparison needs the same calls for both generators")
    ones = [1.0] * len(candidate.per_call)
    diff, low, high, p = paired_bootstrap(
        candidate.per_call, ones, baseline.per_call, ones, seed=seed, confidence=confidence
    )
    better = sum(a > b for a, b in zip(candidate.per_call, baseline.per_call, strict=True))
    worse = sum(a < b for a, b in zip(candidate.per_call, baseline.per_call, strict=True))
    return {
        "candidate": candidate.label,
        "baseline": baseline.label,
        "calls": len(ones),
        "diff": diff,
        "low": low,
        "high": high,
        "p_value": p,
        "confidence": confidence,
        "calls_better": better,
        "calls_worse": worse,
    }
