"""What `evoinstruct filter` reports: kept and dropped counts, and samples of every reason."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoinstruct.store.records import Example, ExampleDraft

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
