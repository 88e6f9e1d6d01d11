"""What the report shows, read from the pool through the Store API: rounds, scores, diversity."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evoinstruct.graph.report.config import ReportConfig
from evoinstruct.graph.report.diversity import Diversity, Embedder, measure_diversity
from evoinstruct.store.records import Example

if TYPE_CHECKING:
    from evoinstruct.store import Store


@dataclass
class RoundRow:
    """A round: examples by status and source, rejections (counted now), calls and tokens."""

    number: int
    phase: str | None
    by_status: dict[str, int]
    by_source: dict[str, int]
    rejections: dict[str, dict[str, int]]
    calls: dict[str, float]  # stage -> model calls
    tokens: dict[str, float]  # stage -> tokens

    @property
    def accepted(self) -> int:
        return self.by_status.get("accepted", 0)

    @property
    def acceptance(self) -> float | None:
        decided = self.accepted + self.by_status.get("rejected", 0)
        return self.accepted / decided if decided else None


@dataclass
class ReportData:
    """Everything the plots and the page draw on; scores by (scorer, dimension) then round."""

    title: str
    examples: list[Example]
    rounds: list[RoundRow]
    scores: dict[tuple[str, str], dict[int, list[float]]]
    diversity: Diversity
    versions: list[dict[str, Any]]
    pool: dict[str, Any]


def _stage_counters(counts: dict[str, Any], key: str) -> dict[str, float]:
    stages = counts.get("stages") if isinstance(counts, dict) else None
    if not isinstance(stages, dict):
        return {}
    return {
        stage: float(c[key])
        for stage, c in stages.items()
        if isinstance(c, dict) and isinstance(c.get(key), int | float) and c[key] > 0
    }


def collect(
    store: Store, config: ReportConfig, embedder: Embedder | None, title: str
) -> ReportData:
    """Everything the plots and the page show, read through the Store API."""
    examples = list(store.iter_examples())
    meta = {r["number"]: r for r in store.rounds()}
    numbers = sorted(set(meta) | {e.round for e in examples})
    rounds = []
    for n in numbers:
        sql = store.round_counts(n)  # counted now, not the counters the round wrote
        counts = meta.get(n, {}).get("counts") or {}
        rounds.append(
            RoundRow(
                n,
                meta.get(n, {}).get("phase"),
                sql["by_status"],
                sql["by_source"],
                sql["rejections"],
                _stage_counters(counts, "calls"),
                _stage_counters(counts, "tokens"),
            )
        )
    # A superseded example's rewrite carries its scores: counting both would count twice.
    scored = {e.id: e.round for e in examples if e.status != "superseded"}
    scores: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for eid, found in store.scores_for(list(scored)).items():
        for s in found:
            if s.value is not None and math.isfinite(s.value):
                scores[(s.scorer, s.dimension)][scored[eid]].append(float(s.value))
    seeds = [e.instruction for e in examples if e.source == "seed"]
    new: dict[int, list[str]] = defaultdict(list)
    for e in examples:
        if e.status == "accepted" and e.source != "seed":
            new[e.round].append(e.instruction)
    return ReportData(
        title=title,
        examples=examples,
        rounds=rounds,
        scores={k: dict(v) for k, v in scores.items()},
        diversity=measure_diversity(seeds, dict(new), config, embedder),
        versions=store.model_versions(),
        pool=store.pool_stats(),
    )
