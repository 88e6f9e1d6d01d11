"""Which examples an export holds: the filter, the stream from the store, its counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.export.names import model_name
from evoinstruct.store.export.rows import _lineage_fields, constraints_of, to_record
from evoinstruct.store.records import SOURCES, STATUSES, Example
from evoinstruct.text.rules import language_of


@dataclass
class ExportFilter:
    """Which examples to write. `statuses` empty means every status.

    `withhold(example)` returns why an example must not leave the project (the
    trainer's guard: it copies a held-out suite prompt, or carries a held-out
    constraint type or a suite-only phrasing), or None; the caller supplies it,
    since the store does not know the suite.
    """

    statuses: list[str] = field(default_factory=lambda: ["accepted"])
    sources: list[str] = field(default_factory=list)
    round: int | None = None
    min_scores: dict[str, float] = field(default_factory=dict)
    withhold: Callable[[Example], str | None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.statuses == ["all"]:
            self.statuses = []
        for status in self.statuses:
            if status not in STATUSES:
                raise InputError(
                    f"unknown status {status!r} (one of {', '.join(STATUSES)}, all)",
                    field="--status",
                )
        for source in self.sources:
            if source not in SOURCES:
                raise InputError(
                    f"unknown source {source!r} (one of {', '.join(SOURCES)})", field="--source"
                )

    def describe(self) -> list[str]:
        """The filter as the card states it."""
        out = [f"status {', '.join(self.statuses) or 'all'}"]
        if self.sources:
            out.append(f"source {', '.join(self.sources)}")
        if self.round is not None:
            out.append(f"round {self.round}")
        out.extend(f"{dim} ≥ {bound:g}" for dim, bound in self.min_scores.items())
        return out


def parse_min_score(values: list[str]) -> dict[str, float]:
    """`accuracy=4.5` → {"accuracy": 4.5}, with a clear error for anything else."""
    out: dict[str, float] = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(number)
        except ValueError:
            raise InputError(
                f"expected DIMENSION=NUMBER, got {value!r}", field="--min-score"
            ) from None
    return out


@dataclass
class ExportStats:
    """What an export held, counted while it streams: the card is written from it."""

    count: int = 0
    languages: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    rounds: Counter[int] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    writers: Counter[str] = field(default_factory=Counter)
    constraint_ids: Counter[str] = field(default_factory=Counter)
    with_constraints: int = 0
    # Held back by the filter's `withhold`, by the kind of its reason (suite, held_out_type...).
    withheld: Counter[str] = field(default_factory=Counter)

    def add(self, example: Example, aliases: Mapping[str, str] | None) -> None:
        self.count += 1
        language = example.language or language_of(f"{example.instruction} {example.input}")
        self.languages[language] += 1
        self.sources[example.source] += 1
        self.rounds[example.round] += 1
        if example.operation:
            self.operations[example.operation.split(":", 1)[0]] += 1
        writer = model_name(example.model_version, aliases)
        if writer:
            self.writers[writer] += 1
        constraints = constraints_of(example)
        if constraints:
            self.with_constraints += 1
            self.constraint_ids.update(c["id"] for c in constraints)


def iter_export(
    store: Any,
    fmt: str,
    filt: ExportFilter,
    *,
    with_lineage: bool = False,
    aliases: Mapping[str, str] | None = None,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Records to export, streamed from the store in batches; `stats` counts what went out."""
    batch: list[Example] = []

    def flush() -> Iterator[dict[str, Any]]:
        scores = (
            store.scores_for([e.id for e in batch]) if (filt.min_scores or with_lineage) else {}
        )
        for example in batch:
            mine = scores.get(example.id, [])
            by_dim: dict[str, float] = {}
            for s in mine:
                if s.value is not None:
                    by_dim[s.dimension] = max(s.value, by_dim.get(s.dimension, float("-inf")))
            if any(
                by_dim.get(dim, float("-inf")) < bound for dim, bound in filt.min_scores.items()
            ):
                continue
            reason = filt.withhold(example) if filt.withhold is not None else None
            if reason is not None:
                if stats is not None:
                    stats.withheld[reason.split(":", 1)[0]] += 1
                continue
            if stats is not None:
                stats.add(example, aliases)
            lineage = _lineage_fields(example, mine, aliases) if with_lineage else None
            yield to_record(example, fmt, lineage)

    for example in store.iter_examples(
        status=filt.statuses or None, source=filt.sources or None, round=filt.round
    ):
        batch.append(example)
        if len(batch) >= 1000:
            yield from flush()
            batch = []
    if batch:
        yield from flush()
