"""What the report shows, read from the pool through the Store API.

Every plot draws one of the dataclasses here and nothing else, so a test can
check the numbers behind a picture against the store: the student rows and
loss curves against the registered versions' metrics, the funnels against
SQL counts, the histograms against the examples, the thresholds against the
config each round stored.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from evoinstruct.agents.scoring.stats import prompt_text
from evoinstruct.cli.report.diversity import Diversity, Embedder, measure_diversity
from evoinstruct.cli.report.funnel import RoundFunnel, build_funnels
from evoinstruct.cli.report.generator_yield import GeneratorRow, generator_rows
from evoinstruct.cli.report.thresholds import Threshold, length_thresholds, score_thresholds
from evoinstruct.graph.report_config import ReportConfig
from evoinstruct.store.records import Example
from evoinstruct.store.starts import describe_starts
from evoinstruct.text.rules import count_words
from evoinstruct.trainer.config import part_order
from evoinstruct.trainer.weak_to_strong_config import KIND as WEAK_TO_STRONG

if TYPE_CHECKING:
    from evoinstruct.store import Store

# How the plots group examples: a seed by its source, any other example by its status.
GROUPS: tuple[str, ...] = ("seed", "accepted", "rejected", "candidate")
ScoreKey = tuple[str, str]  # (scorer, dimension)


def group_of(example: Example) -> str | None:
    """ "seed", or the status of a machine example; None for a superseded original (its
    rewrite stands in for it)."""
    if example.status == "superseded":
        return None
    return "seed" if example.source == "seed" else example.status


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


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
    # A resumed round: where each later start began and what its config changed.
    starts: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.by_status.get("accepted", 0)

    @property
    def acceptance(self) -> float | None:
        decided = self.accepted + self.by_status.get("rejected", 0)
        return self.accepted / decided if decided else None


Interval = dict[str, float]  # {"value", "low", "high"}, fractions


@dataclass
class SuitePart:
    """One part of the held-out suite as the gate saw it: both versions' prompt-level
    strict accuracy with intervals, and their paired difference."""

    part: str  # "in_distribution", "held_out_phrasing", ... or "all" for a suite without parts
    n: int
    candidate: Interval | None
    baseline: Interval | None
    diff: Interval | None = None  # candidate - baseline, paired
    gated: bool = False


@dataclass
class StudentRow:
    """A registered student version and its gate: the suite accuracy per part it decided on,
    held-out losses (a diagnostic) and the verdict with its reason."""

    version: str
    method: str | None
    round: int | None
    train_loss: float | None
    heldout_loss: float | None  # the candidate's, on the held-out examples
    baseline_loss: float | None  # the version it was compared with, on the same examples
    baseline_version: str | None  # None: the bare base model
    heldout_examples: int | None
    winning_score: float | None
    verdict: bool | None  # the gate's decision; None: never evaluated
    reason: str | None
    promoted: bool  # ever made active (by the gate or by hand)
    active: bool
    suite: list[SuitePart] = field(default_factory=list)  # empty: not gated on the suite
    gated: Interval | None = None  # the paired difference the gate decided on
    gated_parts: tuple[str, ...] = ()
    power: float | None = None  # the smallest gain (points) the gate found 80% of the time

    @property
    def baseline_name(self) -> str:
        return self.baseline_version or "base model"


@dataclass
class LossCurve:
    """A version's training loss as the trainer logged it (`log_history`), step by step."""

    version: str
    steps: list[int]
    losses: list[float]
    global_step: int | None
    heldout_loss: float | None
    logging_steps: int | None


@dataclass
class ScoreValue:
    value: float
    group: str  # one of GROUPS


@dataclass
class Scores:
    """Parseable values by (scorer, dimension) then round; unparseable answers counted apart."""

    values: dict[ScoreKey, dict[int, list[ScoreValue]]] = field(default_factory=dict)
    unparseable: dict[ScoreKey, int] = field(default_factory=dict)
    thresholds: dict[ScoreKey, dict[int, list[Threshold]]] = field(default_factory=dict)

    def panels(self) -> list[ScoreKey]:
        return sorted(set(self.values) | set(self.unparseable))


@dataclass
class Histogram:
    """Word counts of one field: shared bin edges, one count list per group."""

    field: Literal["instruction", "response"]
    edges: list[int]
    counts: dict[str, list[int]]  # group -> examples per bin
    sizes: dict[str, int]  # group -> examples measured
    thresholds: list[Threshold]
    left_out: int = 0  # examples with no response yet (response histogram only)


@dataclass
class ReportData:
    """Everything the plots and the page draw on."""

    title: str
    examples: list[Example]
    rounds: list[RoundRow]
    scores: Scores
    diversity: Diversity
    students: list[StudentRow]
    curves: list[LossCurve]
    funnels: list[RoundFunnel]
    lengths: list[Histogram]
    configs: dict[int, dict[str, Any]]  # round -> the resolved config it stored
    pool: dict[str, Any]
    config_round: int = -1  # whose config the lengths' thresholds come from (-1: none)
    # Finished weak-to-strong experiments' results, oldest first (trainer.weak_to_strong).
    weak_to_strong: list[dict[str, Any]] = field(default_factory=list)
    generator: list[GeneratorRow] = field(default_factory=list)  # per version that generated


def _stage_counters(counts: dict[str, Any], key: str) -> dict[str, float]:
    stages = counts.get("stages") if isinstance(counts, dict) else None
    if not isinstance(stages, dict):
        return {}
    return {
        stage: float(c[key])
        for stage, c in stages.items()
        if isinstance(c, dict) and isinstance(c.get(key), int | float) and c[key] > 0
    }


def student_rows(versions: Sequence[dict[str, Any]]) -> list[StudentRow]:
    """The gate's figures per version. The evaluation writes them under `metrics.evaluation`;
    a flat `metrics.heldout_loss` etc. (an older or hand-registered version) is the fallback."""
    rows = []
    for v in versions:
        metrics = v.get("metrics") or {}
        evaluation = metrics.get("evaluation")
        evaluation = evaluation if isinstance(evaluation, dict) else {}

        def pick(key: str, ev: dict[str, Any] = evaluation, m: dict[str, Any] = metrics) -> Any:
            return ev[key] if ev.get(key) is not None else m.get(key)

        gate = pick("gate")
        gate = gate if isinstance(gate, dict) else {}
        pairwise = pick("pairwise")
        pairwise = pairwise if isinstance(pairwise, dict) else {}
        verdict = gate.get("promote")
        count = _number(evaluation.get("heldout_examples"))
        evidence = evaluation.get("verifiable")
        evidence = evidence if isinstance(evidence, dict) else {}
        comparison = (
            evidence.get("comparison") if isinstance(evidence.get("comparison"), dict) else {}
        )
        power = evidence.get("power") if isinstance(evidence.get("power"), dict) else {}
        rows.append(
            StudentRow(
                version=v["version"],
                method=v.get("method"),
                round=v.get("round"),
                train_loss=_number(metrics.get("train_loss")),
                heldout_loss=_number(pick("heldout_loss")),
                baseline_loss=_number(pick("baseline_loss")),
                baseline_version=evaluation.get("baseline_version"),
                heldout_examples=int(count) if count is not None else None,
                winning_score=_number(pairwise.get("winning_score")),
                verdict=verdict if isinstance(verdict, bool) else None,
                reason=gate.get("reason") if isinstance(gate.get("reason"), str) else None,
                promoted=bool(v.get("promoted")),
                active=bool(v.get("active")),
                suite=suite_parts(evidence),
                gated=_paired(comparison),
                gated_parts=tuple(comparison.get("parts") or ()),
                power=_number(power.get("detectable_points")),
            )
        )
    return rows


def _paired(found: Any) -> Interval | None:
    if not isinstance(found, dict) or _number(found.get("diff")) is None:
        return None
    return {"value": found["diff"], "low": found["low"], "high": found["high"]}


def _prompt_strict(summary: Any) -> Interval | None:
    found = (
        (summary or {}).get("accuracy", {}).get("prompt_strict")
        if isinstance(summary, dict)
        else None
    )
    return found if isinstance(found, dict) and _number(found.get("value")) is not None else None


def suite_parts(evidence: dict[str, Any]) -> list[SuitePart]:
    """The suite as the gate saw a version: per part (or the whole suite, for evidence from
    before parts), candidate and baseline accuracy and their paired difference."""
    candidate, baseline = evidence.get("candidate"), evidence.get("baseline")
    if not isinstance(candidate, dict) or not isinstance(baseline, dict):
        return []
    gated = set((evidence.get("comparison") or {}).get("parts") or ())
    pairs = evidence.get("by_part") if isinstance(evidence.get("by_part"), dict) else {}
    by_part = candidate.get("by_part") if isinstance(candidate.get("by_part"), dict) else {}
    base_parts = baseline.get("by_part") if isinstance(baseline.get("by_part"), dict) else {}
    if not by_part:
        n = (evidence.get("comparison") or {}).get("n") or 0
        paired = _paired(evidence.get("comparison"))
        return [
            SuitePart(
                "all", int(n), _prompt_strict(candidate), _prompt_strict(baseline), paired, True
            )
        ]
    return [
        SuitePart(
            part,
            int(entry.get("n") or 0),
            _prompt_strict(entry),
            _prompt_strict(base_parts.get(part)),
            _paired(pairs.get(part)),
            part in gated,
        )
        # In reading order: the store keeps JSON keys sorted by name.
        for part, entry in sorted(by_part.items(), key=lambda kv: part_order(kv[0]))
        if isinstance(entry, dict)
    ]


def loss_curves(
    versions: Sequence[dict[str, Any]], students: Sequence[StudentRow]
) -> list[LossCurve]:
    """Per version, the (step, loss) pairs of the trainer's log; the final summary entry
    (`train_loss`, an average over the run) is not a point of the curve."""
    held = {s.version: s.heldout_loss for s in students}
    curves = []
    for v in versions:
        metrics = v.get("metrics") or {}
        history = metrics.get("log_history")
        points = sorted(
            (int(entry["step"]), float(entry["loss"]))
            for entry in (history if isinstance(history, list) else [])
            if isinstance(entry, dict)
            and _number(entry.get("loss")) is not None
            and _number(entry.get("step")) is not None
        )
        logging = (v.get("config") or {}).get("logging_steps")
        step = _number(metrics.get("global_step"))
        curves.append(
            LossCurve(
                version=v["version"],
                steps=[s for s, _ in points],
                losses=[loss for _, loss in points],
                global_step=int(step) if step is not None else None,
                heldout_loss=held.get(v["version"]),
                logging_steps=int(logging) if isinstance(logging, int) else None,
            )
        )
    return curves


def _scores(store: Store, examples: list[Example], configs: dict[int, dict[str, Any]]) -> Scores:
    # A superseded original's rewrite carries its scores: counting both would count twice.
    live = {e.id: e for e in examples if group_of(e) is not None}
    values: dict[ScoreKey, dict[int, list[ScoreValue]]] = defaultdict(lambda: defaultdict(list))
    unparseable: Counter[ScoreKey] = Counter()
    for eid, found in store.scores_for(list(live)).items():
        e = live[eid]
        group = group_of(e) or ""
        for s in found:
            if s.value is not None and math.isfinite(s.value):
                values[(s.scorer, s.dimension)][e.round].append(ScoreValue(float(s.value), group))
            else:
                unparseable[(s.scorer, s.dimension)] += 1
    out = Scores({k: dict(v) for k, v in values.items()}, dict(unparseable))
    for key in out.panels():
        out.thresholds[key] = {
            n: found for n, cfg in configs.items() if (found := score_thresholds(cfg, *key))
        }
    return out


def _edges(values: Sequence[int], max_bins: int = 30) -> list[int]:
    """Integer bin edges from 0 past the largest value, at most `max_bins` bins."""
    top = max(values, default=0) + 1
    width = max(1, math.ceil(top / max_bins))
    return [i * width for i in range(math.ceil(top / width) + 1)]


def length_histograms(examples: Sequence[Example], config: dict[str, Any]) -> list[Histogram]:
    """Instruction (with its input, as the critic measures it) and response lengths in words,
    a CJK character counting one, per group; superseded originals left out."""
    out = []
    fields: tuple[Literal["instruction", "response"], ...] = ("instruction", "response")
    for name in fields:
        words: dict[str, list[int]] = defaultdict(list)
        left_out = 0
        for e in examples:
            group = group_of(e)
            if group is None:
                continue
            if name == "response" and e.output is None:
                left_out += 1  # not answered (yet): no length to draw
                continue
            text = prompt_text(e) if name == "instruction" else e.output or ""
            words[group].append(count_words(text))
        edges = _edges([n for found in words.values() for n in found])
        groups = [g for g in GROUPS if g in words] + sorted(set(words) - set(GROUPS))
        out.append(
            Histogram(
                field=name,
                edges=edges,
                counts={g: np.histogram(words[g], bins=edges)[0].tolist() for g in groups},
                sizes={g: len(words[g]) for g in groups},
                thresholds=length_thresholds(config, name),
                left_out=left_out,
            )
        )
    return out


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
                describe_starts(store.round_starts(n)),
            )
        )
    configs = {
        n: r["config"] for n, r in meta.items() if isinstance(r.get("config"), dict) and r["config"]
    }
    # The newest round that stored a run config (a filter generation stores a fingerprint).
    config_round = max((n for n, c in configs.items() if "critic" in c), default=-1)
    versions = store.model_versions()
    students = student_rows(versions)
    seeds = [e.instruction for e in examples if e.source == "seed"]
    new: dict[int, list[str]] = defaultdict(list)
    for e in examples:
        if e.status == "accepted" and e.source != "seed":
            new[e.round].append(e.instruction)
    return ReportData(
        title=title,
        examples=examples,
        rounds=rounds,
        scores=_scores(store, examples, configs),
        diversity=measure_diversity(seeds, dict(new), config, embedder),
        students=students,
        curves=loss_curves(versions, students),
        funnels=build_funnels(
            examples, store.rejections(), {n: r.get("counts") or {} for n, r in meta.items()}
        ),
        lengths=length_histograms(examples, configs.get(config_round, {})),
        configs=configs,
        pool=store.pool_stats(),
        config_round=config_round,
        weak_to_strong=[
            row["result"] for row in store.experiments(WEAK_TO_STRONG) if row["result"]
        ],
        generator=generator_rows(store, config),
    )
