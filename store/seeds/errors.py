"""How a problem in a seed file is reported: one InputError, on one printable line.

It names the file, the line (or record) and the field, and quotes values from the file
briefly (strings shortened, containers by their JSON type). Record, a parsed JSON value
with the line and position it came from, lives here because every record error points
at one; the formats and the JSON reader share it.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError

# A lone surrogate in a parsed string: UTF-8 cannot store it, so SQLite and terminals fail on it.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Where a field sits in a record or a qna document, as `_dotted` names it: seed_examples[0].answer.
QnaPath = tuple[str | int, ...]


@dataclass
class Record:
    """One parsed JSON value with where it came from."""

    value: Any
    line: int
    index: int


def _fail(path: Path, record: Record, field: str, message: str) -> InputError:
    return InputError(
        f"record {record.index}: {message}", file=str(path), line=record.line, field=field
    )


def _one_line(exc: InputError) -> InputError:
    """The error with control characters, line separators and surrogates escaped.

    The message quotes the file name, field names and values from the file; a newline
    or U+2028 in any of them would split the one line the CLI promises.
    """
    parts = (exc.detail, exc.file, exc.field)
    if all(p is None or p.isprintable() for p in parts):
        return exc
    return InputError(
        _printable(exc.detail),
        file=None if exc.file is None else _printable(_path_text(exc.file)),
        line=exc.line,
        field=None if exc.field is None else _printable(exc.field),
    )


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _path_text(path: str | Path) -> str:
    """The path as text that can be stored and printed.

    A file name that is not UTF-8 reaches Python with surrogates in it; as they are, they
    fail the SQLite write or the print of the report, after the import.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _brief(value: Any, limit: int = 40) -> str:
    """A value from the file as an error quotes it: strings shortened, containers by type."""
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[:limit] + "…")
    if isinstance(value, dict | list):
        return _json_type(value)  # repr of a deeply nested value would itself recurse too far
    return repr(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _dotted(at: QnaPath) -> str:
    out = ""
    for step in at:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def _too_deep(path: Path, line: int | None) -> InputError:
    return InputError(
        "nested too deeply for the parser (a seed record is a flat object)",
        file=str(path),
        line=line,
    )


def _too_long_number(path: Path, line: int) -> InputError:
    limit = sys.get_int_max_str_digits()
    return InputError(f"a number too long to read (over {limit} digits)", file=str(path), line=line)


def _surrogate_message(ch: str) -> str:
    return (
        f"a lone surrogate \\u{ord(ch):04x} (half of a UTF-16 pair, not a character: "
        "UTF-8 cannot store it); fix the escape in the file"
    )
