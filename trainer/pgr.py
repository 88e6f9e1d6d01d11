"""Performance gap recovered (Burns et al. 2023): how much of the weak-to-ceiling gap a
strong student trained on weak labels closes, with a joint bootstrap interval.

    PGR = (strong_on_weak - weak) / (ceiling - weak)

1 means the student trained on weak labels does as well as one trained on verified
answers; 0 means it does no better than its weak supervisor; below 0, worse. All four
models answered the same suite prompts, so the interval resamples prompts jointly: each
resample recomputes the four accuracies on the same drawn prompts, which keeps what the
models share (easy and hard prompts) out of the interval.

The ratio exists only when the ceiling beats the weak model. A resample in which it
does not (gap <= 0) says nothing about the share recovered, so it counts against both
ends of the interval (as -inf for the lower, +inf for the upper): once such resamples
are at least half of 1 - confidence, the interval is unbounded on both sides (Fieller's
case: the denominator is not clearly above zero) and PGR is not meaningful. With no gap
at all the point value is undefined too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evoinstruct.trainer.verifiable import Interval, SuiteResult, _counts

# The four models of the experiment, in the order figures show them.
MODELS: tuple[str, ...] = ("weak", "strong_base", "strong_on_weak", "ceiling")
ALL_PROMPTS = "all"


@dataclass(frozen=True)
class Recovered:
    """PGR on one set of prompts, with the four accuracies and the gap it divides by."""

    metric: str
    n: int  # prompts all four models answered
    accuracy: dict[str, Interval]  # per model (MODELS), on those prompts
    gap: Interval  # ceiling - weak
    value: float | None  # None when the gap is not above zero
    low: float | None  # None: unbounded
    high: float | None
    base: float | None  # (strong_base - weak) / gap: what the untuned strong model has already
    confidence: float
    samples: int

    @property
    def meaningful(self) -> bool:
        """Whether the ceiling clearly beats the weak model (the gap's interval is above 0)."""
        return self.gap.low > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "n": self.n,
            "accuracy": {k: v.to_dict() for k, v in self.accuracy.items()},
            "gap": self.gap.to_dict(),
            "pgr": self.value,
            "low": self.low,
            "high": self.high,
            "base": self.base,
            "meaningful": self.meaningful,
            "confidence": self.confidence,
            "samples": self.samples,
        }


def _ends(values: np.ndarray, undefined: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low = np.quantile(np.where(undefined, -np.inf, values), alpha / 2, method="inverted_cdf")
    high = np.quantile(np.where(undefined, np.inf, values), 1 - alpha / 2, method="inverted_cdf")
    return float(low), float(high)


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _interval(point: float, draws: np.ndarray, confidence: float) -> Interval:
    alpha = 1 - confidence
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Interval(float(point), float(low), float(high))


def recovered(
    scores: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    metric: str = "prompt_strict",
    *,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Recovered:
    """PGR from per-prompt scores: for each of MODELS, (passed, out of) per prompt, the
    prompts in the same order for all four (prompt level: 0/1 out of 1)."""
    missing = [m for m in MODELS if m not in scores]
    if missing:
        raise ValueError(f"scores of {', '.join(missing)} are missing")
    arrays = {m: tuple(np.asarray(x, dtype=float) for x in scores[m]) for m in MODELS}
    n = len(arrays["weak"][0])
    if n == 0 or any(len(num) != n or len(den) != n for num, den in arrays.values()):
        raise ValueError("PGR needs the same non-empty list of prompts for all four models")
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    point = {m: num.sum() / max(den.sum(), 1e-12) for m, (num, den) in arrays.items()}
    draws = {
        m: num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-12) for m, (num, den) in arrays.items()
    }
    gap, gap_draws = point["ceiling"] - point["weak"], draws["ceiling"] - draws["weak"]
    gained = draws["strong_on_weak"] - draws["weak"]
    undefined = gap_draws <= 0
    ratio = np.divide(gained, gap_draws, out=np.zeros_like(gained), where=~undefined)
    low, high = _ends(ratio, undefined, confidence)
    defined = gap > 0
    return Recovered(
        metric=metric,
        n=n,
        accuracy={m: _interval(point[m], draws[m], confidence) for m in MODELS},
        gap=_interval(gap, gap_draws, confidence),
        value=float((point["strong_on_weak"] - point["weak"]) / gap) if defined else None,
        low=_finite(low) if defined else None,
        high=_finite(high) if defined else None,
        base=float((point["strong_base"] - point["weak"]) / gap) if defined else None,
        confidence=confidence,
        samples=samples,
    )


def recovered_on_suite(
    results: Mapping[str, SuiteResult],
    metric: str = "prompt_strict",
    *,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """PGR of four results on one suite: on every prompt all four answered, and per suite
    part when the outcomes name their part. `{"all": ..., "by_part": {...}, "excluded": n}`."""
    suites = {results[m].suite for m in MODELS}
    if len(suites) != 1:
        raise ValueError(f"the four results come from different suites ({sorted(suites)})")
    rows = list(zip(*(results[m].outcomes for m in MODELS), strict=True))
    answered = [row for row in rows if all(o.answered for o in row)]
    boot = {"samples": samples, "seed": seed, "confidence": confidence}

    def on(group: list[tuple[Any, ...]]) -> dict[str, Any]:
        scores = {m: _counts([row[i] for row in group], metric) for i, m in enumerate(MODELS)}
        return recovered(scores, metric, **boot).to_dict()

    if not answered:
        raise ValueError("no suite prompt was answered by all four models")
    parts: dict[str, list[tuple[Any, ...]]] = {}
    for row in answered:
        part = getattr(row[0], "part", None)  # results from a suite with parts name them
        if part is not None:
            parts.setdefault(part, []).append(row)
    return {
        ALL_PROMPTS: on(answered),
        "by_part": {name: on(group) for name, group in sorted(parts.items())},
        "excluded": len(rows) - len(answered),
    }


def pgr_text(found: Mapping[str, Any]) -> str:
    """`0.42 [0.10, 0.80]`, with `-inf`/`inf` for unbounded ends, or why there is none."""
    if found.get("pgr") is None:
        return "undefined (the ceiling does not beat the weak model)"

    def end(value: float | None, sign: str) -> str:
        return f"{sign}inf" if value is None else f"{value:.2f}"

    text = f"{found['pgr']:.2f} [{end(found['low'], '-')}, {end(found['high'], '')}]"
    if not found.get("meaningful"):
        text += " (not meaningful: the gap's interval reaches 0)"
    return text
