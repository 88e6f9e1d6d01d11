"""The selector: which scored candidates join the pool this round, and why the others do not.

`select` applies, in this order, cheapest first and embeddings last:

0. verifiable constraints: a response failing a constraint stored on its
   example (`meta["constraints"]`) is dropped as `constraint_failed:<id>`,
   checked again here on the text being accepted (config `constraints`),
1. exact dedup (normalized hash, against the pool and earlier candidates),
2. near dedup (MinHash LSH, Jaccard ≥ 0.8),
3. novelty (ROUGE-L F1 > 0.7 against pool instructions rejects),
4. decontamination (a shared 13-gram with a listed eval file),
5. score thresholds (e.g. judge accuracy ≥ 4.5; a missing score rejects or passes),
6. IFD's top fraction (Cherry LLM; only with `ifd_top_fraction` < 1 and IFD scores given),
7. diversity (Deita's repr filter on embeddings, or InsTag sampling with rare
   tags resolved against the accepted pool's tag counts plus this batch's),
8. the per-round budget.

Within one call candidates are checked in input order and each one that
passes a duplicate/novelty stage joins that stage's reference set before the
next is checked (Self-Instruct's sequential semantics). A consequence worth
knowing: a candidate can be rejected as a copy of an earlier candidate that a
later stage then rejects; the evidence names that candidate, which the store
keeps with its own rejection.

The pool's indexes are either in memory, built from a list of examples
(`SelectorIndexes.build`: the filter command's work set, tests), or kept in
SQLite beside the pool and following the store (`agents.selection.pool_index`: the
daemon), with the same decisions; `select` checks against them without
changing them and, when `commit` is true, adds only the finally accepted
examples.
Every dropped candidate becomes a `Rejection(stage=Stage.SELECT)` with evidence.

The selector treats its candidates alike, whatever their source: keeping
human seeds is the caller's rule (the daemon accepts them as written and
passes only machine examples), so `evoinstruct filter` can hand it every
imported row.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.scoring.ifd import SCORER as IFD_SCORER
from evoinstruct.agents.scoring.ifd import top_ifd
from evoinstruct.agents.scoring.instag import resolve_rare
from evoinstruct.agents.scoring.verify import constraint_failure
from evoinstruct.agents.selection.decontam import DecontamConfig, Decontaminator
from evoinstruct.agents.selection.dedup import DedupConfig, DedupIndex
from evoinstruct.agents.selection.diversity import (
    DiversityConfig,
    DiversityResult,
    hashed_tfidf,
    instag_sample,
    rank_order,
    repr_filter,
)
from evoinstruct.agents.selection.novelty import NoveltyConfig, NoveltyDecision, NoveltyIndex
from evoinstruct.agents.text import text_hash
from evoinstruct.store.errors import ConfigError, EvoError
from evoinstruct.store.records import Example, Rejection, Score
from evoinstruct.store.stages import Stage

Step = Literal["exact_dedup", "near_dedup", "novelty", "decontaminate", "thresholds", "diversity"]
ExampleField = Literal["system", "instruction", "input", "output"]
ALL_STEPS: tuple[str, ...] = (
    "exact_dedup",
    "near_dedup",
    "novelty",
    "decontaminate",
    "thresholds",
    "diversity",
)
# texts -> one vector per text (a list of lists or an array), sync or async: `model.embed` fits.
Embedder = Callable[[Sequence[str]], Any]
# Cherry LLM ranks only IFD ≤ 1: above it the instruction does not help the answer.
IFD_BOUND = 1.0


class SelectorConfig(BaseModel):
    """Selection settings; numbers default to METHODS.md."""

    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(
        default_factory=lambda: list(ALL_STEPS), description="Stages to run (order is fixed)."
    )
    constraints: Literal["strict", "loose", "off"] = Field(
        "strict",
        description="Drop an example whose response fails a verifiable constraint stored on it, reason 'constraint_failed:<id>', before every other step: IFEval's strict or loose check; off keeps them.",
    )
    dedup: DedupConfig = Field(
        default_factory=DedupConfig, description="Near-duplicate MinHash settings."
    )
    novelty: NoveltyConfig = Field(
        default_factory=NoveltyConfig, description="ROUGE-L novelty settings."
    )
    decontam: DecontamConfig = Field(
        default_factory=DecontamConfig, description="Decontamination settings."
    )
    diversity: DiversityConfig = Field(
        default_factory=DiversityConfig, description="Diversity selection settings."
    )
    dedup_fields: list[ExampleField] = Field(
        default_factory=lambda: ["instruction", "input"],
        description="Fields whose text defines a duplicate.",
    )
    novelty_fields: list[ExampleField] = Field(
        default_factory=lambda: ["instruction"],
        description="Fields compared by ROUGE-L (Self-Instruct: the instruction).",
    )
    diversity_fields: list[ExampleField] = Field(
        default_factory=lambda: ["instruction", "input", "output"],
        description="Fields embedded for the repr filter.",
    )
    min_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Keep only examples scoring at least this per dimension, for scorers other than the judge (e.g. {'quality': 4}); the judge's own bar is critic.judge.threshold. A dimension no critic part scores is refused when the config loads.",
    )
    max_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Drop examples scoring above this per dimension (e.g. {'ifd': 1.0}).",
    )
    missing_score: Literal["reject", "pass"] = Field(
        "pass",
        description="A thresholded dimension with no parseable score: reject ('missing_score') or pass.",
    )
    rank_by: list[str] = Field(
        default_factory=lambda: ["complexity", "quality"],
        description="Dimensions multiplied into the ranking score (Deita: complexity × quality); unranked examples go last. Each must be one a critic part scores.",
    )
    ifd_top_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Below 1: of the candidates with an IFD score, keep only this share, highest IFD ≤ 1 first (Cherry LLM kept 0.05–0.10); the rest are rejected as 'ifd_below_top_fraction'. 1 keeps all.",
    )
    budget: int | None = Field(
        None, ge=0, description="Most examples accepted per call (per round); None = no limit."
    )


class DuplicateLookup(Protocol):
    """What the dedup stages ask of the pool: `DedupIndex`, or `PoolDedup` over the index file."""

    def exact(self, text: str, exclude: str | None = None) -> str | None: ...

    def near(self, text: str, exclude: str | None = None) -> tuple[str, float] | None: ...

    def add(self, item_id: str, text: str) -> None: ...


class NoveltyLookup(Protocol):
    """What the novelty stage asks of the pool: `NoveltyIndex`, or `PoolNovelty` over the index file."""

    def filter(
        self, items: Iterable[tuple[str, str]], *, commit: bool = True
    ) -> list[NoveltyDecision]: ...

    def add(self, item_id: str, text: str) -> None: ...


@dataclass
class SelectorIndexes:
    """The pool as the selector sees it: in memory (`build`) or in SQLite (`agents.selection.pool_index`)."""

    dedup: DuplicateLookup
    novelty: NoveltyLookup
    decontam: Decontaminator | None = None
    # tag -> accepted examples carrying it, asked at each InsTag selection (the store's
    # count stays true as the pool changes); None: rarity is judged within the batch.
    tag_counts: Callable[[], Mapping[str, int]] | None = None

    @classmethod
    def build(
        cls,
        pool: Iterable[Example],
        config: SelectorConfig,
        tag_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> SelectorIndexes:
        """In-memory indexes over `pool`: the reference the persistent ones decide like."""
        rows = [
            (ex.id, field_text(ex, config.dedup_fields), field_text(ex, config.novelty_fields))
            for ex in pool
        ]
        return cls(
            dedup=DedupIndex.build(((i, d) for i, d, _ in rows), config.dedup),
            novelty=NoveltyIndex.build(((i, n) for i, _, n in rows), config.novelty),
            decontam=decontaminator(config),
            tag_counts=tag_counts,
        )

    def add(self, example: Example, config: SelectorConfig) -> None:
        self.dedup.add(example.id, field_text(example, config.dedup_fields))
        self.novelty.add(example.id, field_text(example, config.novelty_fields))


def decontaminator(config: SelectorConfig) -> Decontaminator | None:
    """The decontamination index of the configured eval files, None without any."""
    files = config.decontam.eval_files
    return Decontaminator.from_files(files, config.decontam.ngram) if files else None


@dataclass
class SelectOutcome(AgentOutcome):
    """Accepted ids (in selection order), one rejection per dropped candidate, counters."""

    stage = Stage.SELECT

    accepted: list[str] = field(default_factory=list)


def field_text(example: Example, fields: Sequence[str]) -> str:
    """The named fields' non-empty texts joined by newlines."""
    return "\n".join(v for v in (getattr(example, f) or "" for f in fields) if v)


def score_table(scores: Sequence[Score]) -> dict[str, float]:
    """Dimension → mean of the parseable values (several scorers or repeats average)."""
    values: dict[str, list[float]] = {}
    for s in scores:
        if s.value is not None:
            values.setdefault(s.dimension, []).append(float(s.value))
    return {dim: sum(v) / len(v) for dim, v in values.items()}


def rank_score(table: Mapping[str, float], rank_by: Sequence[str]) -> float | None:
    """Product of the rank_by dimensions, None when one is missing."""
    if not rank_by or any(d not in table for d in rank_by):
        return None
    product = 1.0
    for d in rank_by:
        product *= table[d]
    return product


def threshold_failure(
    table: Mapping[str, float], config: SelectorConfig
) -> tuple[str, dict] | None:
    """(reason, evidence) of the first failed threshold, or None."""
    for bounds, below in ((config.min_scores, True), (config.max_scores, False)):
        for dim, limit in bounds.items():
            value = table.get(dim)
            if value is None:
                if config.missing_score == "reject":
                    return "missing_score", {"dimension": dim}
                continue
            if (value < limit) if below else (value > limit):
                reason = "below_threshold" if below else "above_threshold"
                return f"{reason}:{dim}", {"dimension": dim, "value": value, "threshold": limit}
    return None


class _Run:
    """One select call: the surviving candidates and the rejections so far."""

    def __init__(self, candidates: Sequence[Example]) -> None:
        self.alive: list[Example] = []
        self.rejections: list[Rejection] = []
        seen: set[str] = set()
        for ex in candidates:  # the same id twice in one batch: the second is a copy
            if ex.id in seen:
                self.reject(ex, "exact_duplicate", {"duplicate_of": ex.id})
            else:
                seen.add(ex.id)
                self.alive.append(ex)

    def stage(self, check: Callable[[Example], tuple[str, object] | None]) -> None:
        kept = []
        for ex in self.alive:
            verdict = check(ex)
            if verdict is None:
                kept.append(ex)
            else:
                self.reject(ex, *verdict)
        self.alive = kept

    def reject(self, ex: Example, reason: str, evidence: object) -> None:
        self.rejections.append(
            Rejection(Stage.SELECT, reason, evidence, example_id=ex.id, text=ex.instruction)
        )


def _exact_stage(run: _Run, indexes: SelectorIndexes, config: SelectorConfig) -> None:
    local: dict[str, str] = {}

    def check(ex: Example) -> tuple[str, object] | None:
        text = field_text(ex, config.dedup_fields)
        key = text_hash(text)
        twin = indexes.dedup.exact(text, exclude=ex.id) or local.get(key)
        if twin is not None:
            return "exact_duplicate", {"duplicate_of": twin}
        local[key] = ex.id
        return None

    run.stage(check)


def _near_stage(run: _Run, indexes: SelectorIndexes, config: SelectorConfig) -> None:
    local = DedupIndex(config.dedup)

    def check(ex: Example) -> tuple[str, object] | None:
        text = field_text(ex, config.dedup_fields)
        best = indexes.dedup.near(text, exclude=ex.id)
        mine = local.near(text)
        if mine is not None and (best is None or mine[1] > best[1]):
            best = mine
        if best is not None:
            return "near_duplicate", {"duplicate_of": best[0], "jaccard": round(best[1], 4)}
        local.add(ex.id, text)
        return None

    run.stage(check)


def _novelty_stage(run: _Run, indexes: SelectorIndexes, config: SelectorConfig) -> None:
    items = [(ex.id, field_text(ex, config.novelty_fields)) for ex in run.alive]
    decisions = {d.id: d for d in indexes.novelty.filter(items, commit=False)}

    def check(ex: Example) -> tuple[str, object] | None:
        d = decisions[ex.id]
        if d.accepted:
            return None
        return "too_similar", {"most_similar": d.most_similar, "rouge_l": round(d.score or 0.0, 4)}

    run.stage(check)


def _decontam_stage(run: _Run, decontam: Decontaminator, config: SelectorConfig) -> None:
    def check(ex: Example) -> tuple[str, object] | None:
        found = decontam.check_fields({f: getattr(ex, f) or "" for f in config.decontam.fields})
        if found is None:
            return None
        name, hit = found
        return "contaminated", {"eval_file": hit.eval_file, "ngram": hit.ngram, "field": name}

    run.stage(check)


def _ifd_stage(run: _Run, scores: Mapping[str, Sequence[Score]], fraction: float) -> None:
    """Cherry LLM: of the candidates with an IFD, keep the top `fraction`; unscored ones pass."""
    pooled = [s for ex in run.alive for s in scores.get(ex.id, ())]
    best: dict[str, float] = {}
    for s in pooled:
        if s.scorer == IFD_SCORER and s.dimension == "ifd" and s.value is not None:
            best[s.example_id] = max(float(s.value), best.get(s.example_id, float(s.value)))
    if not best:
        return
    kept = top_ifd(pooled, fraction, IFD_BOUND)
    keep = set(kept)
    cutoff = best[kept[-1]] if kept else None
    ranked = sum(v <= IFD_BOUND for v in best.values())

    def check(ex: Example) -> tuple[str, object] | None:
        value = best.get(ex.id)
        if value is None or ex.id in keep:
            return None
        if value > IFD_BOUND:  # only if critic.ifd.max_ifd was raised above 1
            return "ifd_above_1", {"ifd": value, "max_ifd": IFD_BOUND}
        return "ifd_below_top_fraction", {
            "ifd": value,
            "cutoff": cutoff,
            "top_fraction": fraction,
            "kept": len(kept),
            "ranked": ranked,
        }

    run.stage(check)


def _instag_tags(
    ids: Sequence[str],
    tags: Mapping[str, Sequence[str]],
    known: Callable[[], Mapping[str, int]] | None,
    config: DiversityConfig,
) -> list[list[str]]:
    """Each candidate's tags with rare ones resolved over the pool's counts plus the batch's."""
    lists = [list(dict.fromkeys(tags.get(i, ()))) for i in ids]
    counts: Counter[str] = Counter(known() if known is not None else {})
    counts.update(t for tag_list in lists for t in tag_list)
    return resolve_rare(
        lists,
        counts,
        min_count=config.min_tag_count,
        policy=config.rare_policy,
        min_similarity=config.merge_min_similarity,
    )


async def _embed(
    texts: list[str], embedder: Embedder | None, config: DiversityConfig, counters: Counter
) -> np.ndarray:
    if embedder is not None:
        try:
            vectors = embedder(texts)
            if inspect.isawaitable(vectors):
                vectors = await vectors
            array = np.asarray(vectors, dtype=np.float32)
            if array.ndim == 2 and len(array) == len(texts):
                counters["embedded"] += len(texts)
                return array
        except EvoError:  # e.g. UnsupportedError: this backend cannot embed
            pass
        counters["embedding_fallback"] += 1
    return hashed_tfidf(texts, config.tfidf_dim, (config.tfidf_ngram_min, config.tfidf_ngram_max))


async def _diversity_stage(
    run: _Run,
    ranks: list[float | None],
    config: SelectorConfig,
    embedder: Embedder | None,
    tags: Mapping[str, Sequence[str]] | None,
    known_tags: Callable[[], Mapping[str, int]] | None,
    reference_texts: Sequence[str],
    counters: Counter,
) -> DiversityResult:
    ids = [ex.id for ex in run.alive]
    method = config.diversity.method if "diversity" in config.steps else "none"
    if method == "instag":
        if tags is None:
            raise ConfigError(
                "diversity.method is 'instag' but no tags were given",
                field="selector.diversity.method",
            )
        resolved = _instag_tags(ids, tags, known_tags, config.diversity)
        return instag_sample(ids, resolved, config.budget)
    if method == "repr" and ids:
        texts = [field_text(ex, config.diversity_fields) for ex in run.alive]
        vectors = await _embed(texts + list(reference_texts), embedder, config.diversity, counters)
        n = len(texts)
        return repr_filter(
            ids,
            vectors[:n],
            ranks,
            max_cosine=config.diversity.max_cosine,
            budget=config.budget,
            reference=vectors[n:] if reference_texts else None,
        )
    order = [ids[i] for i in rank_order(ranks)]
    cut = len(order) if config.budget is None else config.budget
    return DiversityResult(selected=order[:cut], over_budget=order[cut:])


async def select(
    candidates: Sequence[Example],
    scores: Mapping[str, Sequence[Score]],
    indexes: SelectorIndexes,
    config: SelectorConfig,
    *,
    embedder: Embedder | None = None,
    tags: Mapping[str, Sequence[str]] | None = None,
    reference_texts: Sequence[str] = (),
    commit: bool = True,
) -> SelectOutcome:
    """Filter scored candidates into the pool; see the module docstring for the stages.

    `embedder` maps texts to vectors (sync or async, e.g. `model.embed`); without
    one, or if it raises an EvoError, the hashed TF-IDF fallback is used (counted
    as `embedding_fallback`). `tags` (id → InsTag tags) is needed for
    diversity.method 'instag'; which tags are rare is judged against
    `indexes.tag_counts` plus this batch. `reference_texts` (e.g. accepted
    pool examples) are embedded with the candidates and count as already
    accepted for the repr filter. With `commit`, accepted examples are added
    to `indexes`.
    """
    run = _Run(candidates)
    counters: Counter = Counter(candidates=len(candidates))
    steps = set(config.steps)
    if config.constraints != "off":
        # First, so a failing answer holds no place in the dedup and diversity references.
        loose = config.constraints == "loose"
        run.stage(lambda ex: constraint_failure(ex, loose=loose))
    if "exact_dedup" in steps:
        _exact_stage(run, indexes, config)
    if "near_dedup" in steps:
        _near_stage(run, indexes, config)
    if "novelty" in steps:
        _novelty_stage(run, indexes, config)
    if "decontaminate" in steps and indexes.decontam is not None:
        _decontam_stage(run, indexes.decontam, config)
    tables = {ex.id: score_table(scores.get(ex.id, ())) for ex in run.alive}
    if "thresholds" in steps:
        run.stage(lambda ex: threshold_failure(tables[ex.id], config))
    if config.ifd_top_fraction < 1:
        _ifd_stage(run, scores, config.ifd_top_fraction)
    ranks = [rank_score(tables[ex.id], config.rank_by) for ex in run.alive]
    counters["unranked"] = sum(r is None for r in ranks)
    result = await _diversity_stage(
        run, ranks, config, embedder, tags, indexes.tag_counts, reference_texts, counters
    )
    by_id = {ex.id: ex for ex in run.alive}
    for i, evidence in result.not_diverse.items():
        run.reject(by_id[i], "not_diverse", evidence)
    for rank, i in enumerate(result.over_budget):
        run.reject(
            by_id[i],
            "over_budget",
            {"budget": config.budget, "position": len(result.selected) + rank},
        )
    if commit:
        for i in result.selected:
            indexes.add(by_id[i], config)
    counters["accepted"] = len(result.selected)
    counters.update(r.reason for r in run.rejections)
    return SelectOutcome(
        accepted=list(result.selected), rejections=run.rejections, counters=counters
    )
