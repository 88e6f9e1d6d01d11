"""The generator per model version: yield, drop reasons and diversity (METHODS 5.3).

Read from the store's record of every generation call (`store.generation_calls`):

* yield = new instructions accepted into the pool per call, with a bootstrap
  interval over calls (a call is the unit: its tasks share a prompt and a draw);
* drops = what the generate step took of each call's tasks, by reason, plus the
  later stages' rejections of its candidates (`respond:...`, `select:...`);
* diversity = distinct-1/2 of the accepted instructions next to the seed pool's, at
  the same sample size (`report.diversity`'s rule), so a version that writes the
  same task again and again shows it.

A candidate still waiting for a later stage (its round unfinished) is `pending`,
neither accepted nor dropped.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evoinstruct.agents.text import tokenize
from evoinstruct.cli.report.diversity import distinct_at
from evoinstruct.store.generation_calls import GenerationCall
from evoinstruct.store.records import Example
from evoinstruct.trainer.verifiable import bootstrap_ratio

if TYPE_CHECKING:
    from evoinstruct.graph.report_config import ReportConfig
    from evoinstruct.store import Store

BASE = "base model"  # the label of calls no trained version served


@dataclass
class GeneratorRow:
    """One model version as the generator: its calls and what became of their tasks."""

    version: str
    rounds: list[int]
    calls: int
    tasks: int  # tasks parsed from the answers, before any filter
    accepted: int
    pending: int
    per_call: float
    low: float
    high: float
    drops: dict[str, int] = field(default_factory=dict)
    diversity: dict[str, float | None] = field(default_factory=dict)
    seed_diversity: dict[str, float | None] = field(default_factory=dict)
    sample: list[str] = field(default_factory=list)  # a few accepted instructions

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rounds": self.rounds,
            "calls": self.calls,
            "tasks": self.tasks,
            "accepted": self.accepted,
            "pending": self.pending,
            "yield_per_call": {"value": self.per_call, "low": self.low, "high": self.high},
            "drops": self.drops,
            "diversity": self.diversity,
            "seed_diversity": self.seed_diversity,
            "sample": self.sample,
        }


def version_label(call: GenerationCall, trained: set[str]) -> str:
    """A call's generator: the trained version that served it, else the base model."""
    return call.model_version if call.model_version in trained else BASE


def generator_rows(store: Store, config: ReportConfig) -> list[GeneratorRow]:
    """One row per model version that served generation calls, in the order they first did."""
    calls = store.generation_calls()
    if not calls:
        return []
    trained = {v["version"] for v in store.model_versions()}
    ids = [i for c in calls for i in c.candidates]
    examples = {e.id: e for e in store.get_many(ids)}
    reasons = store.later_rejections(ids)
    seeds = [tokenize(e.instruction) for e in store.iter_examples(source="seed")]
    by_version: dict[str, list[GenerationCall]] = {}
    for call in calls:
        by_version.setdefault(version_label(call, trained), []).append(call)
    return [
        _row(version, mine, examples, reasons, seeds, config)
        for version, mine in by_version.items()
    ]


def accepted_ids(call: GenerationCall, examples: dict[str, Example]) -> list[str]:
    """The call's candidates the pool accepted (a superseded one was accepted, then rewritten)."""
    return [
        i
        for i in call.candidates
        if i in examples and examples[i].status in ("accepted", "superseded")
    ]


def _row(
    version: str,
    calls: list[GenerationCall],
    examples: dict[str, Example],
    reasons: dict[str, str],
    seeds: list[list[str]],
    config: ReportConfig,
) -> GeneratorRow:
    drops: Counter[str] = Counter()
    per_call: list[int] = []
    accepted: list[str] = []
    pending = 0
    for call in calls:
        drops.update(call.drops)
        mine = accepted_ids(call, examples)
        per_call.append(len(mine))
        accepted += [examples[i].instruction for i in mine]
        for i in call.candidates:
            if i in mine:
                continue
            if i in reasons:
                drops[reasons[i]] += 1
            elif i in examples and examples[i].status == "candidate":
                pending += 1
            else:
                drops["rejected"] += 1
    interval = bootstrap_ratio(per_call, seed=config.seed)
    assert interval is not None  # at least one call
    row = GeneratorRow(
        version=version,
        rounds=sorted({c.round for c in calls}),
        calls=len(calls),
        tasks=sum(c.tasks for c in calls),
        accepted=len(accepted),
        pending=pending,
        per_call=interval.value,
        low=interval.low,
        high=interval.high,
        drops=dict(drops.most_common()),
        sample=accepted[:5],
    )
    tokens = [tokenize(t) for t in accepted]
    if len(tokens) >= 2:
        k = min(len(tokens), config.diversity_sample, len(seeds) or len(tokens))
        rng = random.Random(f"{config.seed}:{version}:generator")
        seed_rng = random.Random(f"{config.seed}:{version}:generator-seeds")
        for n, name in ((1, "distinct1"), (2, "distinct2")):
            row.diversity[name] = distinct_at(tokens, n, k, config.diversity_repeats, rng)
            row.seed_diversity[name] = (
                distinct_at(seeds, n, k, config.diversity_repeats, seed_rng) if seeds else None
            )
    return row
