"""Run a model on the held-out verifiable suite, score it, and compare two models on it.

A model answers every suite prompt greedily; the constraint registry checks
each answer strictly and loosely (IFEval's four accuracies: prompt- and
instruction-level, strict and loose), per part of the suite (in-distribution,
held-out phrasing, held-out type, IFEval rows), per constraint type and per source.
Every accuracy comes with a percentile bootstrap interval over prompts
(instruction-level figures resample whole prompts, whose instructions are not
independent). Two models on the same suite are compared pairwise: a paired
bootstrap of the accuracy difference (same resampled prompts for both) and,
for prompt-level pass/fail, McNemar's exact test on the discordant pairs.

A prompt a model could not answer (a Failure after the backend's retries) is
left out of that model's accuracies and out of any pair it belongs to, and
counted; a truncated answer is scored as it stands. Results are stored per
(suite, model identity, generation settings) and reused: the incumbent and
the teacher are answered once per suite, not once per candidate.

`detectable_gain` states a paired test's power: the smallest gain it finds
80% of the time, from the number of prompts and the share on which two
versions disagree (one passes, the other fails).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.models.base import ChatModel, ChatRequest, Failure, Result
from evoinstruct.trainer.config import SuiteConfig, part_order
from evoinstruct.trainer.suite import Suite

if TYPE_CHECKING:
    from evoinstruct.store import Store

ACCURACIES: tuple[str, ...] = (
    "prompt_strict",
    "prompt_loose",
    "instruction_strict",
    "instruction_loose",
)
Progress = Callable[[int, int], None]
RESPONSE_CHARS = 4000  # kept per answer for inspection; checks ran on the whole text
POWER = 0.8  # the power the gate's stated detectable gain refers to


# --- statistics --------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A share with its bootstrap interval (all three are fractions in [0, 1])."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _resample(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _quantiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ratio(
    num: Sequence[float],
    den: Sequence[float] | None = None,
    *,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval | None:
    """sum(num) / sum(den) over units (prompts) with a percentile bootstrap interval.

    `den` defaults to ones (a plain share of passed units). None for no units.
    """
    a = np.asarray(num, dtype=float)
    b = np.ones_like(a) if den is None else np.asarray(den, dtype=float)
    if not len(a) or b.sum() <= 0:
        return None
    idx = _resample(len(a), samples, seed)
    stats = a[idx].sum(axis=1) / np.maximum(b[idx].sum(axis=1), 1e-12)
    low, high = _quantiles(stats, confidence)
    return Interval(float(a.sum() / b.sum()), low, high)


def mcnemar_exact(b: int, c: int) -> tuple[float, float]:
    """McNemar's exact test on discordant pairs: (two-sided p, one-sided p for b > c).

    b = pairs only the first model passed, c = pairs only the second passed;
    under the null each discordant pair goes either way with probability 1/2.
    """
    n = b + c
    if n == 0:
        return 1.0, 1.0
    total = 2**n
    upper = sum(math.comb(n, k) for k in range(b, n + 1))
    smaller = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * smaller / total), upper / total


def detectable_gain(n: int, discordance: float, alpha: float, power: float = POWER) -> float | None:
    """The smallest prompt-level gain (a fraction) a one-sided paired test at level `alpha`
    finds with probability `power`, on n prompts of which a share `discordance` is
    answered differently by the two versions.

    Connor's normal approximation for paired proportions (1987): a gain D is found when
    D * sqrt(n) = z_alpha * sqrt(d) + z_power * sqrt(d - D^2), solved for D. None when no
    gain up to d itself (every disagreement won) is found that often, or n or d is 0.
    """
    if n <= 0 or discordance <= 0:
        return None
    d = min(discordance, 1.0)
    z_a, z_b = NormalDist().inv_cdf(1 - alpha), NormalDist().inv_cdf(power)

    def short(gain: float) -> float:  # > 0 while the gain is too small to be found
        return z_a * math.sqrt(d) + z_b * math.sqrt(max(d - gain * gain, 0.0)) - gain * math.sqrt(n)

    if short(d) > 0:
        return None
    low, high = 0.0, d
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if short(mid) > 0 else (low, mid)
    return high


@dataclass(frozen=True)
class Comparison:
    """Candidate minus baseline on the prompts both answered, in accuracy fractions."""

    metric: str
    n: int
    candidate: float
    baseline: float
    diff: float
    low: float
    high: float
    confidence: float
    p_value: float  # McNemar two-sided for prompt-level metrics, bootstrap otherwise
    test: str  # how p_value was computed
    mcnemar: dict[str, Any] | None = None  # b, c, p_two_sided, p_one_sided
    excluded: int = 0  # prompts left out: one of the two could not answer
    parts: tuple[str, ...] = ()  # the suite parts compared (empty: every prompt)
    discordant: int = 0  # prompts one version passed and the other failed (prompt level)

    @property
    def discordance(self) -> float:
        return self.discordant / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "n": self.n,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "diff": self.diff,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "p_value": self.p_value,
            "test": self.test,
            "mcnemar": self.mcnemar,
            "excluded": self.excluded,
            "parts": list(self.parts),
            "discordant": self.discordant,
        }


def paired_bootstrap(
    a_num: Sequence[float],
    a_den: Sequence[float],
    b_num: Sequence[float],
    b_den: Sequence[float],
    *,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float, float]:
    """(difference, low, high, two-sided p) of ratio A minus ratio B over paired units.

    Both ratios are recomputed on the same resampled units, so what the two
    models share (easy and hard prompts) cancels out of the interval. The
    p-value is twice the smaller share of resampled differences on either side
    of zero (capped at 1).
    """
    an, ad, bn, bd = (np.asarray(x, dtype=float) for x in (a_num, a_den, b_num, b_den))
    if not len(an):
        raise ValueError("a paired comparison needs at least one pair")
    idx = _resample(len(an), samples, seed)
    diffs = an[idx].sum(1) / np.maximum(ad[idx].sum(1), 1e-12) - bn[idx].sum(1) / np.maximum(
        bd[idx].sum(1), 1e-12
    )
    low, high = _quantiles(diffs, confidence)
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return float(an.sum() / ad.sum() - bn.sum() / bd.sum()), low, high, p


# --- one model's answers ------------------------------------------------------------------
@dataclass(frozen=True)
class ItemOutcome:
    """One suite prompt's verdicts (one flag per constraint), or the failure that prevented them."""

    key: str
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]
    failed: str | None = None  # the failure kind when the model gave no answer
    truncated: bool = False
    response: str = ""
    part: str | None = None  # the suite part of the prompt (None: a result from before parts)

    @property
    def answered(self) -> bool:
        return self.failed is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "strict": list(self.strict),
            "loose": list(self.loose),
            "failed": self.failed,
            "truncated": self.truncated,
            "response": self.response,
            "part": self.part,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemOutcome:
        return cls(
            data["key"],
            tuple(data["strict"]),
            tuple(data["loose"]),
            data.get("failed"),
            bool(data.get("truncated")),
            data.get("response", ""),
            data.get("part"),
        )


def score_answers(suite: Suite, answers: Sequence[Result]) -> list[ItemOutcome]:
    """Check each answer against its prompt's constraints, strict and loose."""
    out = []
    for item, answer in zip(suite.items, answers, strict=True):
        if isinstance(answer, Failure):
            out.append(ItemOutcome(item.key, (), (), failed=answer.kind, part=item.part_name))
            continue
        text = answer.text
        strict = tuple(c.check(text).passed for c in item.constraints)
        loose = tuple(c.check(text, loose=True).passed for c in item.constraints)
        out.append(
            ItemOutcome(
                item.key,
                strict,
                loose,
                None,
                answer.truncated,
                text[:RESPONSE_CHARS],
                item.part_name,
            )
        )
    return out


def _counts(outcomes: Sequence[ItemOutcome], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: (passed, out of) for one of the four accuracies."""
    level, mode = metric.split("_")
    flags = [o.strict if mode == "strict" else o.loose for o in outcomes]
    if level == "prompt":
        return np.array([float(all(f)) for f in flags]), np.ones(len(flags))
    return np.array([float(sum(f)) for f in flags]), np.array([float(len(f)) for f in flags])


def summarize(
    suite: Suite,
    outcomes: Sequence[ItemOutcome],
    *,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The four accuracies, overall, per part, per source and per constraint type, each
    with its interval."""
    pairs = [(i, o) for i, o in zip(suite.items, outcomes, strict=True) if o.answered]
    answered = [o for _, o in pairs]
    boot = {"samples": samples, "seed": seed, "confidence": confidence}

    def interval(num: Any, den: Any = None) -> dict[str, float] | None:
        found = bootstrap_ratio(num, den, **boot)
        return found.to_dict() if found else None

    accuracy = {m: interval(*_counts(answered, m)) for m in ACCURACIES}
    parts: dict[str, list[ItemOutcome]] = {}
    for item, outcome in pairs:
        parts.setdefault(item.part_name, []).append(outcome)
    sources: dict[str, list[ItemOutcome]] = {}
    types: dict[str, dict[str, list[float]]] = {}
    for item, outcome in pairs:
        name = item.source if item.language is None else f"{item.source}/{item.language}"
        sources.setdefault(name, []).append(outcome)
        for c, s, lo in zip(item.constraints, outcome.strict, outcome.loose, strict=True):
            entry = types.setdefault(c.id, {"strict": [], "loose": []})
            entry["strict"].append(float(s))
            entry["loose"].append(float(lo))
    return {
        "n": len(outcomes),
        "answered": len(answered),
        "failed": len(outcomes) - len(answered),
        "truncated": sum(o.truncated for o in answered),
        "accuracy": accuracy,
        "by_part": {
            name: {
                "n": len(group),
                "accuracy": {m: interval(*_counts(group, m)) for m in ACCURACIES},
            }
            for name, group in sorted(parts.items(), key=lambda kv: part_order(kv[0]))
        },
        "by_source": {
            name: {"n": len(group), "prompt_strict": interval(*_counts(group, "prompt_strict"))}
            for name, group in sorted(sources.items())
        },
        "by_type": {
            cid: {
                "n": len(entry["strict"]),
                "strict": interval(entry["strict"]),
                "loose": interval(entry["loose"]),
            }
            for cid, entry in sorted(types.items())
        },
        "bootstrap": boot,
    }


@dataclass
class SuiteResult:
    """One model's answers to one suite, scored."""

    suite: str  # the suite's hash
    label: str  # "v2", "base", "teacher", ...
    identity: str  # exactly which model (and adapter) answered
    outcomes: list[ItemOutcome]
    metrics: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    seconds: float = 0.0
    cached: bool = False

    def accuracy(self, metric: str = "prompt_strict") -> float | None:
        found = self.metrics["accuracy"].get(metric)
        return found["value"] if found else None

    def summary(self) -> dict[str, Any]:
        """The compact record kept with a model version (and shown by `models list`)."""
        return {
            "suite": self.suite,
            "label": self.label,
            "accuracy": self.metrics["accuracy"],
            "by_part": self.metrics.get("by_part", {}),
            "answered": self.metrics["answered"],
            "failed": self.metrics["failed"],
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "label": self.label,
            "version": self.version,
            "identity": self.identity,
            "settings": self.settings,
            "seconds": self.seconds,
            "cached": self.cached,
            **self.metrics,
        }


def compare(
    candidate: SuiteResult,
    baseline: SuiteResult,
    metric: str = "prompt_strict",
    *,
    parts: Collection[str] | None = None,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Paired comparison on the prompts both answered (both must come from the same suite),
    of the given suite `parts` only (None: every prompt)."""
    if candidate.suite != baseline.suite:
        raise ValueError(f"results of different suites ({candidate.suite}, {baseline.suite})")
    both = list(zip(candidate.outcomes, baseline.outcomes, strict=True))
    if parts is not None:
        both = [(a, b) for a, b in both if a.part in parts]
    pairs = [(a, b) for a, b in both if a.answered and b.answered]
    if not pairs:
        where = f" in parts {sorted(parts)}" if parts is not None else ""
        raise ValueError(f"no prompt{where} was answered by both models")
    a_num, a_den = _counts([a for a, _ in pairs], metric)
    b_num, b_den = _counts([b for _, b in pairs], metric)
    diff, low, high, p_boot = paired_bootstrap(
        a_num, a_den, b_num, b_den, samples=samples, seed=seed, confidence=confidence
    )
    mcnemar = None
    p_value, test = p_boot, "paired bootstrap"
    # Disagreement at the prompt level, whatever the metric: the power statement uses it.
    level = "prompt_" + metric.split("_", 1)[1]
    pa, _ = _counts([a for a, _ in pairs], level)
    pb, _ = _counts([b for _, b in pairs], level)
    discordant = int(np.sum(pa != pb))
    if metric.startswith("prompt_"):
        b = int(np.sum((a_num == 1) & (b_num == 0)))
        c = int(np.sum((a_num == 0) & (b_num == 1)))
        two, one = mcnemar_exact(b, c)
        mcnemar = {"b": b, "c": c, "p_two_sided": two, "p_one_sided": one}
        p_value, test = two, "McNemar exact"
    return Comparison(
        metric=metric,
        n=len(pairs),
        candidate=float(a_num.sum() / a_den.sum()),
        baseline=float(b_num.sum() / b_den.sum()),
        diff=diff,
        low=low,
        high=high,
        confidence=confidence,
        p_value=p_value,
        test=test,
        mcnemar=mcnemar,
        excluded=len(both) - len(pairs),
        parts=tuple(sorted(parts, key=part_order)) if parts is not None else (),
        discordant=discordant,
    )


# --- running a model -----------------------------------------------------------------------
def suite_requests(suite: Suite, max_tokens: int) -> list[ChatRequest]:
    """One greedy request per prompt, the prompt as the only user message."""
    return [
        ChatRequest(
            messages=[{"role": "user", "content": item.prompt}],
            temperature=0.0,
            max_tokens=max_tokens,
        )
        for item in suite.items
    ]


async def evaluate_suite(
    model: ChatModel,
    suite: Suite,
    *,
    label: str = "model",
    max_tokens: int = 512,
    batch_size: int = 32,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    progress: Progress | None = None,
) -> SuiteResult:
    """Answer every prompt of the suite with `model` (greedy, in batches) and score it."""
    requests = suite_requests(suite, max_tokens)
    answers: list[Result] = []
    start = time.monotonic()
    for at in range(0, len(requests), batch_size):
        answers.extend(await model.generate(requests[at : at + batch_size]))
        if progress is not None:
            progress(len(answers), len(requests))
    seconds = time.monotonic() - start
    outcomes = score_answers(suite, answers)
    metrics = summarize(suite, outcomes, samples=samples, seed=seed, confidence=confidence)
    return SuiteResult(
        suite=suite.hash,
        label=label,
        identity=model_identity(model),
        outcomes=outcomes,
        metrics=metrics,
        settings={"max_tokens": max_tokens, "temperature": 0.0},
        seconds=seconds,
    )


def model_identity(model: ChatModel, adapter_path: str | None = None) -> str:
    """What answers: the model id, the adapter version, where that adapter lives and the
    digest of its files (a stored result of other weights under the same name never counts)."""
    identity = {"model": model.model_id, "adapter": model.adapter_version, "path": adapter_path}
    if model.adapter_digest is not None:
        identity["digest"] = model.adapter_digest
    return json.dumps(identity, sort_keys=True)


def result_id(suite_hash: str, identity: str, settings: dict[str, Any]) -> str:
    material = json.dumps([suite_hash, identity, settings], sort_keys=True)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]


def stored_result(
    store: Store, suite: Suite, identity: str, cfg: SuiteConfig
) -> SuiteResult | None:
    """A result stored earlier for exactly this suite, model and generation settings."""
    settings = {"max_tokens": cfg.max_tokens, "temperature": 0.0}
    row = store.eval_result(result_id(suite.hash, identity, settings))
    return None if row is None else result_from_row(row)


def result_from_row(row: dict[str, Any]) -> SuiteResult:
    """A stored result (a row of `store.eval_results(..., with_items=True)`) as it was."""
    return SuiteResult(
        suite=row["suite"],
        label=row["label"],
        identity=row["identity"],
        outcomes=[ItemOutcome.from_dict(i) for i in row["items"]],
        metrics=row["metrics"],
        settings=row["settings"],
        version=row["version"],
        seconds=row["metrics"].get("seconds", 0.0),
        cached=True,
    )


async def run_suite(
    store: Store,
    suite: Suite,
    model: ChatModel,
    cfg: SuiteConfig,
    *,
    label: str,
    version: str | None = None,
    adapter_path: str | None = None,
    reuse: bool = True,
    confidence: float = 0.95,
    progress: Progress | None = None,
) -> SuiteResult:
    """Score `model` on the suite, reusing a stored result for the same model and settings
    unless some of its calls failed.

    A fresh result is stored; for a trained version its summary is also kept in
    the version's metrics (`verifiable`), where `models list` and the report find it.
    """
    identity = model_identity(model, adapter_path)
    if reuse:
        found = stored_result(store, suite, identity, cfg)
        # A result with failed calls (a server down for a while) is asked again, not kept.
        if found is not None and not found.metrics["failed"]:
            return found
    result = await evaluate_suite(
        model,
        suite,
        label=label,
        max_tokens=cfg.max_tokens,
        batch_size=cfg.batch_size,
        samples=cfg.bootstrap_samples,
        seed=cfg.seed,
        confidence=confidence,
        progress=progress,
    )
    result.identity, result.version = identity, version
    result.metrics["seconds"] = result.seconds
    store.record_eval_result(
        result_id(suite.hash, identity, result.settings),
        suite=suite.hash,
        label=label,
        identity=identity,
        version=version,
        settings=result.settings,
        metrics=result.metrics,
        items=[o.to_dict() for o in result.outcomes],
    )
    if version is not None and store.model_version(version) is not None:
        store.update_model_metrics(version, {"verifiable": result.summary()})
    return result


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def signed_points(value: float) -> str:
    return f"{100 * value:+.1f}"
