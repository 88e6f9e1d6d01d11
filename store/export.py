"""Writing the pool out in the formats LLaMA-Factory, TRL and `datasets` read.

The format is the row shape (alpaca, sharegpt, openai; `parquet` is alpaca rows),
the output's suffix the container (.json, .jsonl, .parquet); nothing else is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.records import SOURCES, STATUSES, Example

EXPORT_FORMATS = ("alpaca", "sharegpt", "openai", "parquet")
# The output's suffix alone decides the container; the format decides the row shape.
EXPORT_SUFFIXES = {".json": "JSON array", ".jsonl": "JSON Lines", ".parquet": "Parquet"}
PARQUET_BATCH = 1000


@dataclass
class ExportFilter:
    """Which examples to write. `statuses` empty means every status."""

    statuses: list[str] = field(default_factory=lambda: ["accepted"])
    sources: list[str] = field(default_factory=list)
    round: int | None = None
    min_scores: dict[str, float] = field(default_factory=dict)

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


def _messages(example: Example) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": example.system}] if example.system else []
    user = example.instruction + (f"\n\n{example.input}" if example.input else "")
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": example.output or ""})
    messages.extend(example.meta.get("extra_turns", []))
    return messages


def to_record(example: Example, fmt: str, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One example in one export format; `lineage` adds provenance fields."""
    if fmt in ("alpaca", "parquet"):
        record: dict[str, Any] = {
            "instruction": example.instruction,
            "input": example.input,
            "output": example.output or "",
            "system": example.system,
        }
    elif fmt == "sharegpt":
        roles = {"user": "human", "assistant": "gpt"}
        turns = [m for m in _messages(example) if m["role"] != "system"]
        record = {
            "conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in turns],
            "system": example.system,
        }
    elif fmt == "openai":
        record = {"messages": _messages(example)}
    else:
        raise InputError(
            f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})", field="--format"
        )
    if lineage is not None:
        record.update(lineage)
    return record


def _lineage_fields(example: Example, scores: dict[str, float]) -> dict[str, Any]:
    return {
        "id": example.id,
        "parent_id": example.parent_id,
        "operation": example.operation,
        "round": example.round,
        "source": example.source,
        "status": example.status,
        "model_version": example.model_version,
        "scores": json.dumps(scores, ensure_ascii=False, sort_keys=True),
    }


def iter_export(
    store: Any, fmt: str, filt: ExportFilter, *, with_lineage: bool = False
) -> Iterator[dict[str, Any]]:
    """Records to export, streamed from the store in batches."""
    batch: list[Example] = []

    def flush() -> Iterator[dict[str, Any]]:
        scores = (
            store.scores_for([e.id for e in batch]) if (filt.min_scores or with_lineage) else {}
        )
        for example in batch:
            by_dim: dict[str, float] = {}
            for s in scores.get(example.id, []):
                if s.value is not None:
                    by_dim[s.dimension] = max(s.value, by_dim.get(s.dimension, float("-inf")))
            if any(
                by_dim.get(dim, float("-inf")) < bound for dim, bound in filt.min_scores.items()
            ):
                continue
            lineage = _lineage_fields(example, by_dim) if with_lineage else None
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


def output_container(out: str | Path, fmt: str) -> str:
    """The container `out`'s suffix names ("json", "jsonl" or "parquet"), or an InputError.

    Callers that do expensive work before exporting (filter) can call this first.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        what = f"suffix {out.suffix!r}" if out.suffix else "no suffix"
        known = ", ".join(f"{s} ({name})" for s, name in EXPORT_SUFFIXES.items())
        raise InputError(
            f"cannot tell what to write from {what}; name the output {known}",
            file=str(out),
            field="-o",
        )
    if fmt == "parquet" and suffix != ".parquet":
        # `--format parquet` names a container, and a .json name another one: refuse
        # rather than pick one of the two.
        raise InputError(
            f"--format parquet writes Parquet but the output is named {out.suffix}; "
            "name it .parquet, or use --format alpaca for alpaca rows as JSON",
            file=str(out),
            field="--format",
        )
    return suffix[1:]


def export(
    store: Any,
    fmt: str,
    out: str | Path,
    filt: ExportFilter | None = None,
    *,
    with_lineage: bool = False,
) -> int:
    """Write the export file atomically; returns how many records it holds.

    `fmt` is the row shape (`parquet` means alpaca rows), the suffix of `out` the
    container: `.json` a JSON array, `.jsonl` JSON Lines, `.parquet` Parquet for
    every shape (chat turns as lists of structs, which `load_dataset("parquet")`
    reads back as lists of dicts). Anything else is refused before anything is written.
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(
            f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})", field="--format"
        )
    out = Path(out)
    container = output_container(out, fmt)
    shape = "alpaca" if fmt == "parquet" else fmt
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    records = iter_export(store, fmt, filt or ExportFilter(), with_lineage=with_lineage)
    try:
        if container == "parquet":
            count = _write_parquet(tmp, records, _arrow_schema(shape, with_lineage))
        else:
            count = _write_json(tmp, records, as_lines=container == "jsonl")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return count


def _write_json(tmp: Path, records: Iterator[dict[str, Any]], *, as_lines: bool) -> int:
    count = 0
    with tmp.open("w", encoding="utf-8") as fh:
        if not as_lines:
            fh.write("[\n")
        for record in records:
            line = json.dumps(record, ensure_ascii=False)
            if as_lines:
                fh.write(line + "\n")
            else:
                fh.write(("" if count == 0 else ",\n") + line)
            count += 1
        if not as_lines:
            fh.write("\n]\n")
    return count


def _arrow_schema(shape: str, with_lineage: bool) -> Any:
    """A fixed schema per row shape, so an empty export or all-null column keeps its types."""
    import pyarrow as pa

    text = pa.string()
    if shape == "alpaca":
        fields = [("instruction", text), ("input", text), ("output", text), ("system", text)]
    elif shape == "sharegpt":
        turn = pa.struct([("from", text), ("value", text)])
        fields = [("conversations", pa.list_(turn)), ("system", text)]
    else:
        message = pa.struct([("role", text), ("content", text)])
        fields = [("messages", pa.list_(message))]
    if with_lineage:
        fields += [
            ("id", text),
            ("parent_id", text),
            ("operation", text),
            ("round", pa.int64()),
            ("source", text),
            ("status", text),
            ("model_version", text),
            ("scores", text),
        ]
    return pa.schema(fields)


def _write_parquet(tmp: Path, records: Iterator[dict[str, Any]], schema: Any) -> int:
    """Streamed in batches, so a large pool never sits in memory as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(str(tmp), schema) as writer:
        for record in records:
            batch.append(record)
            if len(batch) >= PARQUET_BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count
