"""Containers: the output's suffix picks JSON array, JSON Lines or Parquet (fixed schemas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.export.files import OutputFiles
from evoinstruct.store.export.rows import CONSTRAINT_PARAMS

# The output's suffix alone decides the container; the format decides the row shape.
EXPORT_SUFFIXES = {".json": "JSON array", ".jsonl": "JSON Lines", ".parquet": "Parquet"}
PARQUET_BATCH = 1000


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


def _write_json(fh: IO[str], records: Iterator[dict[str, Any]], *, as_lines: bool) -> int:
    count = 0
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
    elif shape == "dpo":
        fields = [("prompt", text), ("chosen", text), ("rejected", text), ("system", text)]
    else:
        message = pa.struct([("role", text), ("content", text)])
        fields = [("messages", pa.list_(message))]
    kinds = {"int": pa.int64(), "str": text, "words": pa.list_(text)}
    params = pa.struct([(name, kinds[kind]) for name, kind in CONSTRAINT_PARAMS.items()])
    constraints = ("constraints", pa.list_(pa.struct([("id", text), ("params", params)])))
    if with_lineage and shape == "dpo":
        fields += [
            ("id", text),
            ("example_id", text),
            ("round", pa.int64()),
            ("model_version", text),
            ("rejected_failed", pa.list_(text)),
            ("chosen_repaired", pa.list_(text)),
            ("rejected_truncated", pa.bool_()),
            constraints,
        ]
    elif with_lineage:
        fields += [
            ("id", text),
            ("parent_id", text),
            ("operation", text),
            ("round", pa.int64()),
            ("source", text),
            ("status", text),
            ("model_version", text),
            (
                "scores",
                pa.list_(
                    pa.struct([("scorer", text), ("dimension", text), ("value", pa.float64())])
                ),
            ),
            constraints,
        ]
    return pa.schema(fields)


def _write_parquet(fh: IO[bytes], records: Iterator[dict[str, Any]], schema: Any) -> int:
    """Streamed in batches, so a large pool never sits in memory as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(fh, schema) as writer:
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


def _write_data(
    files: OutputFiles, out: Path, records: Iterator[dict[str, Any]], fmt: str, lineage: bool
) -> int:
    container = output_container(out, fmt)
    if container == "parquet":
        shape = "alpaca" if fmt == "parquet" else fmt
        with files.open(out, binary=True) as fh:
            return _write_parquet(fh, records, _arrow_schema(shape, lineage))
    with files.open(out) as fh:
        return _write_json(fh, records, as_lines=container == "jsonl")
