"""What `evoinstruct filter` writes: the kept examples in input order, and a report of
kept and dropped counts with samples of every reason."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoinstruct.store.export import ExportFilter, export
from evoinstruct.store.records import Example, ExampleDraft, Rejection

if TYPE_CHECKING:
    from evoinstruct.store import Store

SAMPLES_PER_REASON = 5
SAMPLE_CHARS = 400


@dataclass
class FilterReport:
    """What a filter run did; `counts` are dropped input examples by stage and reason."""

    input_path: Path
    out_path: Path
    report_path: Path
    work_dir: Path
    format: str
    steps: list[str]
    budget: int | None
    generation: int
    resumed: bool
    input_count: int
    kept_count: int
    rewritten_count: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unfinished: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    unscored_thresholds: list[str] = field(default_factory=list)

    @property
    def dropped_count(self) -> int:
        return sum(n for reasons in self.counts.values() for n in reasons.values())

    @property
    def unfinished_count(self) -> int:
        return sum(self.unfinished.values())

    @property
    def by_reason(self) -> dict[str, int]:
        return {f"{s}/{r}": n for s, reasons in self.counts.items() for r, n in reasons.items()}

    def to_dict(self) -> dict[str, Any]:
        out = {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}
        out.update(dropped_count=self.dropped_count, unfinished_count=self.unfinished_count)
        return out


@dataclass
class Fate:
    """Why one input example is not in the output."""

    position: int
    stage: str
    reason: str
    evidence: Any = None
    raw_output: str | None = None
    example: ExampleDraft | Example | None = None


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= SAMPLE_CHARS:
        return text
    return text[:SAMPLE_CHARS] + "…"


def _sample(fate: Fate) -> dict[str, Any]:
    ex = fate.example
    return {
        "position": fate.position,
        "id": getattr(ex, "id", None),
        "instruction": _clip(ex.instruction) if ex else None,
        "input": _clip(ex.input) if ex else None,
        "output": _clip(ex.output) if ex else None,
        "evidence": fate.evidence,
        "raw_output": _clip(fate.raw_output),
    }


def group_samples(fates: Sequence[Fate]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str], list[Fate]] = {}
    for fate in sorted(fates, key=lambda f: f.position):
        grouped.setdefault((fate.stage, fate.reason), []).append(fate)
    return [
        {
            "stage": stage,
            "reason": reason,
            "count": len(items),
            "samples": [_sample(f) for f in items[:SAMPLES_PER_REASON]],
        }
        for (stage, reason), items in sorted(grouped.items(), key=lambda kv: -len(kv[1]))
    ]


def count_reasons(fates: Sequence[Fate]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for fate in fates:
        stage = counts.setdefault(fate.stage, {})
        stage[fate.reason] = stage.get(fate.reason, 0) + 1
    return counts


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def fates_of(
    ids: Sequence[str],
    kept: set[str],
    examples: Mapping[str, Example],
    rejections: Iterable[Rejection],
    final: Mapping[str, Rejection],
) -> tuple[list[Fate], dict[str, int]]:
    """The fate of each distinct input example not kept, and the unfinished ones by reason.

    `final` (the last selection's verdicts) wins over earlier rejections; an
    example with only failed calls is unfinished, not dropped.
    """
    by_example: dict[str | None, list[Rejection]] = {}
    for rejection in rejections:
        by_example.setdefault(rejection.example_id, []).append(rejection)
    first: dict[str, int] = {}
    for i, eid in enumerate(ids):
        first.setdefault(eid, i)
    fates: list[Fate] = []
    unfinished: Counter[str] = Counter()
    for eid, i in first.items():
        if eid in kept:
            continue
        mine = by_example.get(eid, [])
        verdict = final.get(eid) or next((r for r in mine if r.is_verdict), None)
        if verdict is None:
            unfinished[mine[-1].reason if mine else "not_processed"] += 1
            continue
        example = examples.get(eid)
        fates.append(
            Fate(i, verdict.stage, verdict.reason, verdict.evidence, verdict.raw_output, example)
        )
    return fates, dict(unfinished)


def write_report(report: FilterReport, fates: Sequence[Fate], kept_original: Counter[str]) -> None:
    """`OUT.rejections.json`: the counts, samples of every reason, and what rewrite kept."""
    write_json(
        report.report_path,
        {
            **report.to_dict(),
            "reasons": group_samples(fates),
            "rewrites": {"rewritten": report.rewritten_count, "kept_original": dict(kept_original)},
        },
    )


class _InputOrder:
    """The store as export sees it, kept examples in input order (a rewrite at its original's place)."""

    def __init__(self, store: Store, positions: dict[str, int]) -> None:
        self.store = store
        self.positions = positions

    def _position(self, example: Example) -> int | None:
        if example.id in self.positions:
            return self.positions[example.id]
        return self.positions.get(example.parent_id or "")

    def iter_examples(self, **filters: Any) -> Iterator[Example]:
        placed = [(self._position(e), e) for e in self.store.iter_examples(**filters)]
        kept = [(p, e) for p, e in placed if p is not None]
        return (e for _, e in sorted(kept, key=lambda pe: pe[0]))

    def scores_for(self, ids: Sequence[str]) -> Any:
        return self.store.scores_for(ids)


def export_in_input_order(store: Store, ids: Sequence[str], fmt: str, out_path: Path) -> int:
    """Write the accepted examples in the order of their input rows (`ids`); returns how many."""
    positions: dict[str, int] = {}
    for i, eid in enumerate(ids):
        positions.setdefault(eid, i)
    return export(_InputOrder(store, positions), fmt, out_path, ExportFilter(statuses=["accepted"]))
