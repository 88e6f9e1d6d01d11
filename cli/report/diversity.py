"""Diversity of the instructions a round adds, against the seed pool (METHODS 5: guard against collapse).

* distinct-n = distinct n-grams / all n-grams (tokens from
  `agents.text.tokenize`, so Chinese counts per character). The ratio falls
  as a set grows, so a round and the seeds are compared at the same size k =
  min(#round, #seeds, `diversity_sample`): the larger set is subsampled k at
  a time, `diversity_repeats` times, and the ratios averaged.
* embedding spread = mean pairwise cosine distance (1 - cos), size-free in
  expectation; the texts of all sets are embedded in one call, because the
  hashed TF-IDF fallback's IDF is only comparable within a call.

A round whose value on any of these falls more than `alert_margin` (5 %)
below the seeds' is an alert.

A round that added fewer than `diversity_min_examples` instructions is not
measured (a handful of texts says nothing about spread). The cumulative
series (every instruction added up to a round) is measured once it reaches
that size, so a small project still shows a trend; it raises no alerts.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.agents.selection.diversity import hashed_tfidf, normalize_rows
from evoinstruct.agents.text import ngrams, tokenize
from evoinstruct.store.errors import EvoError

if TYPE_CHECKING:
    from evoinstruct.graph.report_config import ReportConfig

# texts -> one vector per text, sync or async (`model.embed` fits), as in agents.selector.
Embedder = Callable[[Sequence[str]], Any]

METRICS: tuple[str, ...] = ("distinct1", "distinct2", "spread")
METRIC_LABELS = {"distinct1": "distinct-1", "distinct2": "distinct-2", "spread": "embedding spread"}


@dataclass
class Alert:
    """A round whose new instructions are less diverse than the seed pool."""

    round: int
    metrics: dict[str, tuple[float, float]]  # metric -> (round value, seed value)

    @property
    def message(self) -> str:
        parts = ", ".join(
            f"{METRIC_LABELS[m]} {v:.3f} < seeds {s:.3f}" for m, (v, s) in self.metrics.items()
        )
        return f"ALERT round {self.round}: new instructions less diverse than the seeds ({parts})"


def distinct_n(token_lists: Sequence[Sequence[str]], n: int) -> float | None:
    """Distinct n-grams over all n-grams of the texts (n-grams never cross texts)."""
    grams = [g for tokens in token_lists for g in ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else None


def mean_pairwise_distance(vectors: np.ndarray) -> float | None:
    """Mean cosine distance over all pairs of rows, in O(rows x dim) (no pair matrix)."""
    if len(vectors) < 2:
        return None
    unit = normalize_rows(vectors).astype(np.float64)
    total = unit.sum(axis=0)
    # sum over i != j of cos(i, j) = |sum of rows|^2 - sum of |row|^2
    pair_sum = float(total @ total) - float((unit * unit).sum())
    k = len(unit)
    return 1.0 - pair_sum / (k * (k - 1))


@dataclass
class DiversityRow:
    """One round's diversity next to the seeds' at the same sample size."""

    round: int
    n: int
    k: int = 0
    values: dict[str, float | None] = field(default_factory=dict)
    seed_values: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Diversity:
    """The seed pool's diversity, each measured round's next to it, and the alerts."""

    seeds_n: int = 0
    seed_values: dict[str, float | None] = field(default_factory=dict)
    rows: list[DiversityRow] = field(default_factory=list)
    cumulative: list[DiversityRow] = field(default_factory=list)  # all new up to each round
    unmeasured: dict[int, int] = field(default_factory=dict)  # round -> its too few new texts
    min_examples: int = 0
    alerts: list[Alert] = field(default_factory=list)
    embedding: str = "hashed TF-IDF"
    notes: list[str] = field(default_factory=list)

    def unmeasured_note(self) -> str:
        """Which rounds were too small to measure on their own, and the bar they missed."""
        parts = ", ".join(f"round {r}: {n}" for r, n in self.unmeasured.items())
        return (
            f"Rounds with fewer than {self.min_examples} new accepted instructions "
            f"(report.diversity_min_examples) are not measured on their own: {parts}."
        )

    def not_measured_note(self) -> str:
        """Why nothing was measured, and the seed pool's values for reference."""
        lines = []
        if self.unmeasured:
            lines.append(self.unmeasured_note())
            total = sum(self.unmeasured.values())
            if total < self.min_examples:
                lines.append(f"All of them together are {total}, too few as well.")
        else:
            lines.append("No round has added accepted instructions yet.")
        if self.seeds_n:
            seeds = ", ".join(
                f"{METRIC_LABELS[m]} {v:.3f}"
                for m in METRICS
                if (v := self.seed_values.get(m)) is not None
            )
            lines.append(f"Seed pool ({self.seeds_n} instructions): {seeds or 'not measurable'}.")
        return "\n".join(lines)


def distinct_at(
    tokens: list[list[str]], n: int, k: int, repeats: int, rng: random.Random
) -> float | None:
    """distinct-n of `k` texts: of all of them when there are no more, else the mean over
    `repeats` random samples of k (distinct-n falls as a set grows, so sets are compared at
    one size)."""
    if len(tokens) <= k:
        return distinct_n(tokens, n)
    values = [distinct_n(rng.sample(tokens, k), n) for _ in range(repeats)]
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _embed(texts: list[str], embedder: Embedder | None) -> tuple[np.ndarray, str]:
    if embedder is not None and texts:
        try:
            vectors = embedder(texts)
            if inspect.isawaitable(vectors):
                vectors = asyncio.run(_await(vectors))
            array = np.asarray(vectors, dtype=np.float32)
            if array.ndim == 2 and len(array) == len(texts):
                return array, "the configured embedder"
            note = f"embedder returned shape {array.shape}"
        except EvoError as exc:  # e.g. UnsupportedError: this backend cannot embed
            note = f"embedder failed: {exc}"
        return hashed_tfidf(texts), f"hashed TF-IDF ({note})"
    return hashed_tfidf(texts), "hashed TF-IDF"


async def _await(awaitable: Any) -> Any:
    return await awaitable


def measure_diversity(
    seeds: list[str],
    rounds: dict[int, list[str]],
    config: ReportConfig,
    embedder: Embedder | None = None,
) -> Diversity:
    """Distinct-1/2 and embedding spread of each round's new instructions, of all new ones up
    to each round, and of the seeds."""
    out = Diversity(seeds_n=len(seeds), min_examples=config.diversity_min_examples)
    seed_tokens = [tokenize(t) for t in seeds]
    cap = config.diversity_sample
    enough = config.diversity_min_examples
    measured = {r: texts for r, texts in rounds.items() if len(texts) >= enough}
    out.unmeasured = {r: len(rounds[r]) for r in sorted(set(rounds) - set(measured))}
    for r, n in out.unmeasured.items():
        out.notes.append(
            f"round {r}: {n} new instructions, too few to measure (fewer than {enough})"
        )
    so_far: list[str] = []
    cumulative: dict[int, list[str]] = {}
    for r in sorted(rounds):
        so_far = so_far + rounds[r]
        if len(so_far) >= enough:
            cumulative[r] = so_far
    # One embedding call over every set (capped), so all vectors share one space; a text in
    # several sets (the cumulative ones overlap) is embedded once.
    sampled: dict[Any, list[str]] = {
        "seeds": _sample(seeds, cap, random.Random(f"{config.seed}:seeds"))
    }
    for r, texts in measured.items():
        sampled[r] = _sample(texts, cap, random.Random(f"{config.seed}:{r}:embed"))
    for r, texts in cumulative.items():
        sampled[("upto", r)] = _sample(texts, cap, random.Random(f"{config.seed}:upto{r}:embed"))
    unique = list(dict.fromkeys(t for texts in sampled.values() for t in texts))
    spread: dict[Any, float | None] = {key: None for key in sampled}
    if unique:
        vectors, out.embedding = _embed(unique, embedder)
        row_of = {t: i for i, t in enumerate(unique)}
        spread = {
            key: mean_pairwise_distance(vectors[[row_of[t] for t in texts]]) if texts else None
            for key, texts in sampled.items()
        }
    k_seeds = min(len(seeds), cap)
    rng = random.Random(f"{config.seed}:seeds:distinct")
    out.seed_values = {
        "distinct1": distinct_at(seed_tokens, 1, k_seeds, config.diversity_repeats, rng),
        "distinct2": distinct_at(seed_tokens, 2, k_seeds, config.diversity_repeats, rng),
        "spread": spread["seeds"],
    }
    for r in sorted(measured):
        out.rows.append(_round_diversity(r, measured[r], seed_tokens, spread[r], spread, config))
    for r in sorted(cumulative):
        out.cumulative.append(
            _round_diversity(r, cumulative[r], seed_tokens, spread[("upto", r)], spread, config)
        )
    if not seeds and measured:
        out.notes.append("no seed pool to compare against: no diversity alerts")
    out.alerts = [a for row in out.rows if (a := _alert(row, config.alert_margin))]
    return out


def _sample(texts: list[str], k: int, rng: random.Random) -> list[str]:
    return list(texts) if len(texts) <= k else rng.sample(list(texts), k)


def _round_diversity(
    r: int,
    texts: list[str],
    seed_tokens: list[list[str]],
    own_spread: float | None,
    spread: dict[Any, float | None],
    config: ReportConfig,
) -> DiversityRow:
    tokens = [tokenize(t) for t in texts]
    k = min(len(tokens), config.diversity_sample, len(seed_tokens) or len(tokens))
    row = DiversityRow(round=r, n=len(texts), k=k)
    rng = random.Random(f"{config.seed}:{r}:distinct")
    seed_rng = random.Random(f"{config.seed}:{r}:seed-distinct")
    for n, name in ((1, "distinct1"), (2, "distinct2")):
        row.values[name] = distinct_at(tokens, n, k, config.diversity_repeats, rng)
        row.seed_values[name] = (
            distinct_at(seed_tokens, n, k, config.diversity_repeats, seed_rng)
            if seed_tokens
            else None
        )
    row.values["spread"] = own_spread
    row.seed_values["spread"] = spread.get("seeds") if seed_tokens else None
    return row


def _alert(row: DiversityRow, margin: float) -> Alert | None:
    low = {
        m: (v, s)
        for m in METRICS
        if (v := row.values.get(m)) is not None
        and (s := row.seed_values.get(m)) is not None
        and v < s * (1.0 - margin)
    }
    return Alert(row.round, low) if low else None
