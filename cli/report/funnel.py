"""Each round's stage funnel: how many items entered each stage and how many it kept, and why not.

Counted from the pool and the rejections table (SQL counts, not the round's
own counters, which undercount after a re-run); only store-level duplicates,
which leave no rejection row, come from the round's counters.

Two kinds of item flow through a round, and a bar says which it counts:

* drafts (generate, evolve): proposed tasks and evolved children, counted
  before they are stored. A dropped draft has rejection rows but no example;
  drafts are told apart by their text, since one draft can leave several rows
  (a malformed instance and then "no valid instances").
* examples (import, respond, eliminate, critique, rewrite, select): stored
  examples, followed from the round that made them to whatever stage dropped
  them, whenever that happened (an item a failed call left behind is decided
  in a later round). An example is counted at the first stage whose verdict
  dropped it; a rewrite stands in for the original it supersedes.

Reasons are rejection events (rows): one dropped example can have several
(the statistics report every broken threshold), so a stage's reasons can add
up to more than its drops. A failed model call is no verdict: it drops
nothing, and is counted apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from evoinstruct.store.records import Example, Rejection
from evoinstruct.store.stages import Stage

# Pipeline order; ELIMINATE is the evolver's check of an answered child (its rows say EVOLVE).
STAGE_ORDER: tuple[str, ...] = (
    Stage.GENERATE,
    Stage.EVOLVE,
    Stage.IMPORT,
    Stage.RESPOND,
    Stage.ELIMINATE,
    Stage.CRITIQUE,
    Stage.REWRITE,
    Stage.SELECT,
)
# Stage -> the source of the examples it stores.
DRAFT_STAGES = {Stage.GENERATE: "generated", Stage.EVOLVE: "evolved"}
DUPLICATE = "duplicate of a stored example (round counters)"


@dataclass
class FunnelStage:
    """One stage of one round: `entered` items, `kept` of them; `reasons` are rejection events."""

    name: str
    unit: Literal["drafts", "examples"]
    entered: int
    kept: int
    reasons: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def dropped(self) -> int:
        return self.entered - self.kept


@dataclass
class RoundFunnel:
    """A round's stages in pipeline order, and how its examples ended (SQL counts)."""

    round: int
    stages: list[FunnelStage]
    accepted: int  # examples of this round accepted now (seeds left out)
    waiting: int  # still candidates: a later stage has yet to decide
    failed_calls: dict[str, int] = field(default_factory=dict)  # stage -> events, no verdict
    recorded_only: int = 0  # verdict events that dropped nothing (a seed; a rewrite's original)

    @property
    def kept(self) -> int:
        return self.stages[-1].kept if self.stages else 0

    @property
    def unaccounted(self) -> int:
        """Examples the funnel keeps but the pool does not hold as accepted or waiting (0 when sound)."""
        return self.kept - self.accepted - self.waiting if self.stages else 0


def _order(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _cohort(example: Example, by_id: dict[str, Example]) -> int:
    # A rewrite stands in for its original: it belongs to the original's round.
    if example.source == "rewritten" and example.parent_id in by_id:
        return by_id[example.parent_id].round
    return example.round


def build_funnels(
    examples: Iterable[Example],
    rejections: Iterable[dict[str, Any]],
    counts: dict[int, dict[str, Any]],
) -> list[RoundFunnel]:
    """One funnel per round that made or proposed something other than seeds, oldest first.

    `rejections` are rows as `Store.rejections()` returns them; `counts` is each
    round's stored counts (its `stages` counters name the stages that ran).
    """
    by_id = {e.id: e for e in examples}
    cohorts: dict[int, list[Example]] = defaultdict(list)
    for e in by_id.values():
        if e.source != "seed":
            cohorts[_cohort(e, by_id)].append(e)
    verdicts: dict[str, list[tuple[str, str, int]]] = defaultdict(
        list
    )  # id -> (stage, reason, round)
    drafts: dict[int, dict[str, dict[str, list[str]]]] = defaultdict(lambda: defaultdict(dict))
    failed: dict[int, Counter[str]] = defaultdict(Counter)
    recorded: Counter[int] = Counter()
    for row in rejections:
        stage, reason, rnd = row["stage"], row["reason"], row["round"]
        if not Rejection.from_row(row).is_verdict:
            failed[rnd][stage] += 1
            continue
        example = by_id.get(row.get("example_id") or "")
        if stage in DRAFT_STAGES:
            stored_here = (
                example is not None
                and example.status == "rejected"
                and example.round == rnd
                and example.source == DRAFT_STAGES[stage]
            )
            if not stored_here:
                # No stored example of its own: a draft (an example_id, if any, is the parent's).
                key = row.get("text") or row.get("id") or ""
                drafts[rnd][stage].setdefault(key, []).append(reason)
                continue
            stage = Stage.ELIMINATE if stage == Stage.EVOLVE else f"{stage} (stored)"
        if example is None or example.status != "rejected" or example.source == "seed":
            recorded[rnd] += 1
            continue
        verdicts[example.id].append((stage, reason, rnd))
    # Each rejected example drops at its earliest stage; rows of later stages dropped nothing.
    first: dict[str, tuple[str, list[str]]] = {}
    for eid, rows in verdicts.items():
        stage = min((r[0] for r in rows), key=_order)
        first[eid] = (stage, [reason for s, reason, _ in rows if s == stage])
        for s, _, rnd in rows:
            if s != stage:
                recorded[rnd] += 1
    funnels = []
    for n in sorted(set(cohorts) | set(drafts)):
        funnel = _round_funnel(
            n, cohorts.get(n, []), drafts.get(n, {}), first, (counts.get(n) or {}).get("stages")
        )
        funnel.failed_calls = dict(sorted(failed[n].items(), key=lambda kv: _order(kv[0])))
        funnel.recorded_only = recorded[n]
        funnels.append(funnel)
    return funnels


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _round_funnel(
    n: int,
    cohort: list[Example],
    drafts: dict[str, dict[str, list[str]]],
    first: dict[str, tuple[str, list[str]]],
    stage_counts: Any,
) -> RoundFunnel:
    ran = stage_counts if isinstance(stage_counts, dict) else {}
    stored = Counter(e.source for e in cohort if e.source != "rewritten")
    stages: list[FunnelStage] = []
    for stage, source in DRAFT_STAGES.items():
        dropped = drafts.get(stage, {})
        counters = ran.get(stage) if isinstance(ran.get(stage), dict) else {}
        duplicates = _int(counters.get("duplicates"))
        kept = stored[source]
        if stage not in ran and not dropped and not kept:
            continue
        reasons = Counter(r for found in dropped.values() for r in found)
        if duplicates:
            reasons[DUPLICATE] += duplicates
        entered = kept + len(dropped) + duplicates
        stages.append(FunnelStage(stage, "drafts", entered, kept, dict(reasons.most_common())))
    drops: dict[str, list[list[str]]] = defaultdict(list)
    for e in cohort:
        if e.id in first:
            stage, reasons = first[e.id]
            drops[stage].append(reasons)
    respond = ran.get(Stage.RESPOND) if isinstance(ran.get(Stage.RESPOND), dict) else {}
    names = {s for s in ran if s in STAGE_ORDER and s not in DRAFT_STAGES} | set(drops)
    if "eliminated" in respond:
        names.add(Stage.ELIMINATE)  # it runs inside the respond node and keeps its books there
    rewritten = sum(1 for e in cohort if e.source == "rewritten")
    entered = sum(stored.values())
    if entered and not names:
        names.add("stored")  # no record of the stages that ran, and nothing dropped
    for stage in sorted(names, key=_order) if entered else ():
        reasons = Counter(r for found in drops.get(stage, []) for r in found)
        kept = entered - len(drops.get(stage, []))
        note = (
            f"{rewritten} rewritten (each replaces its original)" if stage == Stage.REWRITE else ""
        )
        stages.append(
            FunnelStage(stage, "examples", entered, kept, dict(reasons.most_common()), note)
        )
        entered = kept
    return RoundFunnel(
        round=n,
        stages=stages,
        accepted=sum(1 for e in cohort if e.status == "accepted"),
        waiting=sum(1 for e in cohort if e.status == "candidate"),
    )
