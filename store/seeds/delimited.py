"""CSV and TSV seed files: a header that names the instruction, input, output and system
columns, then one example a row. Quoting is strict, so a quote left open is reported at the
line it opens on rather than swallowing the rest of the file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

from evoinstruct.store.errors import InputError
from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.seed_fields import (
    FLAT_FIELDS,
    extra_fields,
    missing_field_hint,
    unread_key_problem,
)
from evoinstruct.store.seeds.limits import MAX_FILE_BYTES, _too_big

DELIMITERS = {"csv": ",", "tsv": "\t"}
_CSV_BREAK = re.compile(r"\r\n|\r|\n")  # the line breaks of io.StringIO(newline="")


def _read_csv(path: Path, text: str, delimiter: str = ",") -> tuple[list[ExampleDraft], int]:
    # The csv module's own field limit (128 KiB, process-wide) is lifted for this read:
    # fields are checked here against MAX_RECORD_BYTES, by name, with their line.
    old_limit = csv.field_size_limit(min(MAX_FILE_BYTES + 1, 2**31 - 1))
    try:
        return _read_delimited(path, text, delimiter)
    finally:
        csv.field_size_limit(old_limit)


def _read_delimited(path: Path, text: str, delimiter: str) -> tuple[list[ExampleDraft], int]:
    kind = "TSV" if delimiter == "\t" else "CSV"
    name = str(path)
    rows = _csv_rows(path, text, delimiter, kind)
    header_line, header = next(rows, (1, []))
    columns = [c.strip().lower() for c in header]
    seen: dict[str, int] = {}
    for i, column in enumerate(columns):
        if column in seen and column:  # unnamed columns (a trailing delimiter) hold nothing read
            raise InputError(
                f"column {column!r} appears twice (columns {seen[column] + 1} and {i + 1})",
                file=name,
                line=header_line,
                field=column,
            )
        seen[column] = i
    if "instruction" not in seen:
        hint = missing_field_hint("instruction", columns, FLAT_FIELDS, noun="column")
        if not hint and delimiter == "," and any("\t" in c for c in columns):
            hint = "; the header holds tabs: if this is TSV, name it .tsv or pass --format tsv"
        elif not hint and delimiter == "\t" and any("," in c for c in columns):
            hint = "; the header holds commas: if this is CSV, name it .csv or pass --format csv"
        raise InputError(
            f"no 'instruction' column (columns: {', '.join(columns) or 'none'}){hint}",
            file=name,
            line=header_line,
            field="instruction",
        )
    for column in columns:
        if (problem := unread_key_problem(column, columns, FLAT_FIELDS)) is not None:
            raise InputError(problem, file=name, line=header_line, field=column)
    drafts = []
    count = 0
    for line, row in _csv_rows_checked(path, rows, columns):
        count += 1
        values = dict(zip(columns, row, strict=False))  # a short row leaves the rest empty
        instruction = values["instruction"].strip()
        if not instruction:
            raise InputError("blank", file=name, line=line, field="instruction")
        output = values.get("output", "").strip()
        extra = extra_fields({k: v for k, v in values.items() if k}, FLAT_FIELDS)
        drafts.append(
            ExampleDraft(
                instruction,
                values.get("input", "").strip(),
                output or None,
                system=values.get("system", "").strip(),
                meta={"extra": extra} if extra else {},
            )
        )
    if not drafts:
        raise InputError(f"the {kind} has a header but no rows", file=name, line=header_line + 1)
    return drafts, count


def _csv_rows_checked(
    path: Path, rows: Iterator[tuple[int, list[str]]], columns: list[str]
) -> Iterator[tuple[int, list[str]]]:
    for line, row in rows:
        if len(row) > len(columns):
            raise InputError(
                f"more values than columns ({len(row)} values, {len(columns)} columns)",
                file=str(path),
                line=line,
            )
        for column, value in zip(columns, row, strict=False):
            if _too_big(value):
                raise InputError("larger than 1 MiB", file=str(path), line=line, field=column)
        if _too_big(",".join(row)):
            raise InputError("record is larger than 1 MiB", file=str(path), line=line)
        yield line, row


def _csv_rows(path: Path, text: str, delimiter: str, kind: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, values) of each non-blank row. strict: text after a closing quote, or a
    quote still open at the end of the file, is an error, not a field swallowing the rest."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            opened = _unclosed_quote(text, start, delimiter) if "end of data" in str(exc) else None
            if opened is not None:
                line, column = opened
                columns = header or []
                field = (
                    columns[column].strip().lower()
                    if column < len(columns)
                    else f"column {column + 1}"
                )
                raise InputError(
                    "a quoted field opens here and is never closed (a missing '\"')",
                    file=str(path),
                    line=line,
                    field=field,
                ) from None
            raise InputError(
                f"malformed {kind}: {exc}", file=str(path), line=reader.line_num
            ) from None
        if row:  # [] is a blank line
            if header is None:
                header = row
            yield start, row


def _unclosed_quote(text: str, start_line: int, delimiter: str) -> tuple[int, int] | None:
    """(line, 0-based column) of the quote that opens a field running to the end of the
    file, in the row that starts on `start_line` (lines as the csv module counts them)."""
    pos = 0
    for _ in range(start_line - 1):
        match = _CSV_BREAK.search(text, pos)
        pos = match.end() if match else len(text)
    line, column, field_start = start_line, 0, True
    while pos < len(text):
        ch = text[pos]
        if field_start and ch == '"':
            close = _closing_quote(text, pos + 1)
            if close < 0:
                return line, column
            line += len(_CSV_BREAK.findall(text, pos, close))
            pos, field_start = close + 1, False
            continue
        if ch == delimiter:
            column, field_start = column + 1, True
        elif ch in "\r\n":
            if text.startswith("\r\n", pos):
                pos += 1
            line, column, field_start = line + 1, 0, True
        else:
            field_start = False
        pos += 1
    return None


def _closing_quote(text: str, pos: int) -> int:
    """Where the quoted field that started before `pos` closes; "" inside is a quote."""
    while True:
        pos = text.find('"', pos)
        if pos < 0 or not text.startswith('""', pos):
            return pos
        pos += 2
