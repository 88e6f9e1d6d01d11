"""Writing an export: the data file alone (`export`), or with its card and dataset_info.json
entry beside it (`export_dataset`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.export.card import CardData, CardOptions, card_path, render_card
from evoinstruct.store.export.containers import _write_data, output_container
from evoinstruct.store.export.dataset_info import (
    DATASET_INFO,
    dataset_info_entry,
    read_dataset_info,
)
from evoinstruct.store.export.files import OutputFiles
from evoinstruct.store.export.names import model_aliases
from evoinstruct.store.export.pairs import (
    PAIRS_FORMAT,
    PairStats,
    check_filter,
    iter_pair_export,
)
from evoinstruct.store.export.rows import _check_format
from evoinstruct.store.export.selection import ExportFilter, ExportStats, iter_export

# `datasets` maps these file stems to splits of the same name.
SPLIT_STEMS = {"train": "train", "test": "test", "validation": "validation", "valid": "validation"}


@dataclass
class ExportResult:
    """What `export_dataset` wrote."""

    count: int
    out: Path
    name: str
    split: str
    card: Path | None = None
    dataset_info: Path | None = None
    card_data: CardData | None = None
    withheld: dict[str, int] = field(default_factory=dict)  # held back by the filter, by kind


def split_of(out: Path) -> str:
    """The split a file is, by `datasets`' naming convention (train.jsonl, test.parquet)."""
    return SPLIT_STEMS.get(out.stem.lower(), "train")


def _pool_summary(store: Any) -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
    """Pool counts and rejections by stage and reason (a read-only aggregate)."""
    pool = store.pool_stats() if hasattr(store, "pool_stats") else {}
    rows: list[tuple[str, str, int]] = []
    db = getattr(store, "db", None)
    if db is not None:
        rows = [
            (r[0], r[1], r[2])
            for r in db.conn.execute(
                "SELECT stage, reason, count(*) FROM rejections GROUP BY stage, reason "
                "ORDER BY stage, count(*) DESC, reason"
            )
        ]
    return pool, rows


def export(
    store: Any,
    fmt: str,
    out: str | Path,
    filt: ExportFilter | None = None,
    *,
    with_lineage: bool = False,
) -> int:
    """Write the data file alone, atomically; returns how many records it holds.

    `fmt` is the row shape (`parquet` means alpaca rows), the suffix of `out` the
    container: `.json` a JSON array, `.jsonl` JSON Lines, `.parquet` Parquet for
    every shape (chat turns as lists of structs, which `load_dataset("parquet")`
    reads back as lists of dicts). Anything else is refused before anything is written.
    """
    _check_format(fmt)
    out = Path(out)
    output_container(out, fmt)
    filt = filt or ExportFilter()
    if fmt == PAIRS_FORMAT:
        check_filter(filt)
    with OutputFiles() as files:
        files.target(out)
        files.make_parents(out)
        records = _records(store, fmt, filt, with_lineage)
        return _write_data(files, out, records, fmt, with_lineage)


def _records(
    store: Any,
    fmt: str,
    filt: ExportFilter,
    with_lineage: bool,
    aliases: Mapping[str, str] | None = None,
    stats: ExportStats | PairStats | None = None,
) -> Iterator[dict[str, Any]]:
    """The rows of one export: preference pairs for `dpo`, else one example each."""
    if fmt == PAIRS_FORMAT:
        assert stats is None or isinstance(stats, PairStats)
        return iter_pair_export(
            store, filt, with_lineage=with_lineage, aliases=aliases, stats=stats
        )
    assert stats is None or isinstance(stats, ExportStats)
    return iter_export(store, fmt, filt, with_lineage=with_lineage, aliases=aliases, stats=stats)


def _check_card_paths(out: Path, options: CardOptions | None) -> None:
    if options is None:
        return
    if out.name == DATASET_INFO:
        raise InputError(
            f"{DATASET_INFO} is LLaMA-Factory's list of datasets and is written beside the "
            "data; name the data file otherwise, or pass --no-card",
            file=str(out),
            field="-o",
        )
    if not options.name.strip():
        raise InputError("a dataset name cannot be empty", field="--name")


def export_dataset(
    store: Any,
    fmt: str,
    out: str | Path,
    filt: ExportFilter | None = None,
    *,
    with_lineage: bool = False,
    card: CardOptions | None = None,
    aliases: Mapping[str, str] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ExportResult:
    """The data file, and unless `card` is None a dataset card and a dataset_info.json entry.

    `aliases` (local model path → name, e.g. from the current config) add to those of
    the configs stored with the rounds. All files are checked before any is written, and
    written together: an existing dataset_info.json that is not JSON, a target that is
    a device, or a full disk leaves every file as it was.
    """
    _check_format(fmt)
    out = Path(out)
    container = output_container(out, fmt)
    filt = filt or ExportFilter()
    if fmt == PAIRS_FORMAT:
        check_filter(filt)
    _check_card_paths(out, card)
    stats: ExportStats | PairStats = PairStats() if fmt == PAIRS_FORMAT else ExportStats()
    rounds = store.rounds() if hasattr(store, "rounds") else []
    names: dict[str, str] = {}
    for row in rounds:
        names.update(model_aliases(row["config"].get("models") or {}))
    names.update(aliases or {})
    result = ExportResult(0, out, card.name if card else out.stem, split_of(out))
    with OutputFiles() as files:
        files.target(out)
        info_path = out.parent / DATASET_INFO
        readme = card_path(out)
        if card is not None:
            files.target(readme, None)
            files.target(info_path, None)
            entries = read_dataset_info(info_path)
        files.make_parents(out)
        records = _records(store, fmt, filt, with_lineage, names, stats)
        result.count = _write_data(files, out, records, fmt, with_lineage)
        result.withheld = dict(stats.withheld)
        if card is None:
            return result
        pool, rejections = _pool_summary(store)
        result.card_data = CardData(
            options=card,
            fmt=fmt,
            container=container,
            filt=filt,
            with_lineage=with_lineage,
            stats=stats,
            pool=pool,
            rounds=rounds,
            versions=store.model_versions() if hasattr(store, "model_versions") else [],
            rejections=rejections,
            exported_at=now().strftime("%Y-%m-%d"),
            aliases=names,
        )
        data_files = [{"split": result.split, "path": out.name}]
        files.write_text(readme, render_card(result.card_data, data_files), None)
        entries[card.name] = dataset_info_entry(fmt, out.name)
        files.write_text(info_path, json.dumps(entries, ensure_ascii=False, indent=2) + "\n", None)
        result.card, result.dataset_info = readme, info_path
    return result
