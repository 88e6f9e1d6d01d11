"""Reading seed files in the formats people already have, all-or-nothing.

Formats: Self-Instruct seed tasks, Alpaca (JSON or JSONL), ShareGPT, OpenAI chat
messages, CSV or TSV with instruction/input/output columns, InstructLab taxonomy
qna.yaml (skills and knowledge), and plain text with one instruction per line. Every
problem is an InputError naming the file, the line (or record) and the field; nothing
reaches the pool unless the whole file reads.

Detection never guesses: the suffix names the format (.json/.jsonl → the JSON
formats by record shape, .csv, .tsv, .yaml/.yml → qna, .txt → text); any other suffix
is accepted only when its content is JSON of a known shape. Plain text is read
only from .txt files or with an explicit `--format text`, because anything reads
as text and a mislabelled file would otherwise become training data.

A file is read whole, so only regular files up to MAX_FILE_BYTES are read (never a
FIFO or a device, which could block or never end), and it must be UTF-8 (a leading
byte-order mark is dropped). Lines end at LF or CRLF only: U+2028, U+0085, form feeds
and the like are text inside a record, as they are to every JSON parser.

The modules, one job each: `limits` (how large a file, a record and a qna.yaml may
be), `errors` (one-line errors naming file, line, record and field; the Record they
point at), `reading` (file checks, decoding, format detection, JSON and JSON Lines
records with their line numbers), `json_formats` (Self-Instruct, Alpaca, ShareGPT,
OpenAI), `delimited` (CSV and TSV), `qna` (InstructLab taxonomy qna.yaml) and
`text_lines` (plain text). This module reads a file through them and imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.seeds.delimited import DELIMITERS, _read_csv
from evoinstruct.store.seeds.errors import QnaPath, Record, _one_line, _path_text
from evoinstruct.store.seeds.json_formats import (
    OPENAI_ROLES,
    SHAREGPT_ROLES,
    _alpaca,
    _openai,
    _selfinstruct,
    _sharegpt,
)
from evoinstruct.store.seeds.limits import MAX_FILE_BYTES, MAX_QNA_BYTES, MAX_RECORD_BYTES
from evoinstruct.store.seeds.qna import QNA_VERSIONS, _read_qna
from evoinstruct.store.seeds.reading import (
    FORMATS,
    FORMATS_HELP,
    JSON_SUFFIXES,
    KNOWN_SUFFIXES,
    SUFFIX_FORMATS,
    _detect_format,
    _json_records,
    _read_text,
)
from evoinstruct.store.seeds.text_lines import _read_text_lines
from evoinstruct.text.rules import language_of


@dataclass
class SeedFile:
    """What a seed file holds: its detected format and the drafts it yields."""

    path: Path
    format: str
    records: int
    drafts: list[ExampleDraft]


def read_seed_file(path: str | Path, fmt: str | None = None, *, source: str = "seed") -> SeedFile:
    """Parse a whole seed file into drafts; raises InputError at the first problem."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise InputError(
            f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", field="--format"
        )
    try:
        return _read_seed_file(path, fmt, source)
    except InputError as exc:
        raise _one_line(exc) from None


def _read_seed_file(path: Path, fmt: str | None, source: str) -> SeedFile:
    text = _read_text(path)
    fmt = fmt or _detect_format(path, text)
    if fmt in DELIMITERS:
        drafts, count = _read_csv(path, text, DELIMITERS[fmt])
    elif fmt == "qna":
        drafts, count = _read_qna(path, text)
    elif fmt == "text":
        drafts, count = _read_text_lines(path, text)
    else:
        reader = {
            "selfinstruct": _selfinstruct,
            "alpaca": _alpaca,
            "sharegpt": _sharegpt,
            "openai": _openai,
        }[fmt]
        drafts = []
        count = 0
        for record in _json_records(path, text):
            drafts.extend(reader(path, record))
            count += 1
    for draft in drafts:
        draft.source = source  # type: ignore[assignment]
        draft.language = language_of(draft.instruction + " " + draft.input)
    return SeedFile(path=path, format=fmt, records=count, drafts=drafts)


@dataclass
class ImportReport:
    """What `seed add` did: records read, examples they held, new and duplicate ones."""

    path: str
    format: str
    records: int
    examples: int
    inserted: int
    duplicates: int
    accepted: int
    waiting_for_output: int


def add_seed_file(
    store: Any, path: str | Path, fmt: str | None = None, *, round: int = 0
) -> ImportReport:
    """Read the whole file first, then write it in one transaction: all or nothing."""
    return import_seeds(store, read_seed_file(path, fmt), round=round)


def import_seeds(store: Any, seeds: SeedFile, *, round: int = 0) -> ImportReport:
    """Write a file read by read_seed_file in one transaction (without reading it again)."""
    result = store.add_candidates(seeds.drafts, round=round)
    with_output = sum(1 for d in seeds.drafts if d.output)
    return ImportReport(
        path=_path_text(seeds.path),
        format=seeds.format,
        records=seeds.records,
        examples=len(seeds.drafts),
        inserted=result.inserted,
        duplicates=result.duplicates,
        accepted=with_output,
        waiting_for_output=len(seeds.drafts) - with_output,
    )


__all__ = [
    "DELIMITERS",
    "FORMATS",
    "FORMATS_HELP",
    "JSON_SUFFIXES",
    "KNOWN_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_QNA_BYTES",
    "MAX_RECORD_BYTES",
    "OPENAI_ROLES",
    "QNA_VERSIONS",
    "SHAREGPT_ROLES",
    "SUFFIX_FORMATS",
    "ImportReport",
    "InputError",
    "QnaPath",
    "Record",
    "SeedFile",
    "add_seed_file",
    "import_seeds",
    "read_seed_file",
]
