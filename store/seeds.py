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
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.ids import language_of
from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.seed_fields import (
    FLAT_FIELDS,
    RENAMED,
    extra_fields,
    unread_key_problem,
)

FORMATS = ("selfinstruct", "alpaca", "sharegpt", "openai", "csv", "tsv", "qna", "text")
FORMATS_HELP = "|".join(FORMATS)
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".yaml": "qna",
    ".yml": "qna",
    ".txt": "text",
    ".text": "text",
}
JSON_SUFFIXES = (".json", ".jsonl")
KNOWN_SUFFIXES = ", ".join((*JSON_SUFFIXES, *SUFFIX_FORMATS))
QNA_VERSIONS = (2, 3)
MAX_RECORD_BYTES = 1 << 20
# The whole file is held in memory as bytes, then as text, then as drafts: a few times
# its size at the peak. Larger data sets import as several files.
MAX_FILE_BYTES = 1 << 30
# PyYAML's pure-Python parser reads about 200 KB/s; InstructLab qna files are a few KB.
MAX_QNA_BYTES = 2 << 20
DELIMITERS = {"csv": ",", "tsv": "\t"}

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}

_JSON_WS = re.compile(r"[ \t\r\n]*")
_CSV_BREAK = re.compile(r"\r\n|\r|\n")  # the line breaks of io.StringIO(newline="")
# A lone surrogate can only come from a \uD800-\uDFFF escape: UTF-8 text cannot hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_RECORD_KEYS = ("instruction", "instances", "conversations", "messages")


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


@dataclass
class Record:
    """One parsed JSON value with where it came from."""

    value: Any
    line: int
    index: int


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


# --- reading and detection ---------------------------------------------------------------


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    return _decode(path, data)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; only a regular file of a sane size is opened at all."""
    name = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError("a symbolic link to a missing file", file=name) from None
        raise InputError("no such file", file=name) from None
    except PermissionError:
        raise InputError("permission denied", file=name) from None
    except NotADirectoryError:
        raise InputError("no such file (a folder in its path is a file)", file=name) from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", file=name) from None
    _require_regular(name, info.st_mode)
    _require_size(name, info.st_size)
    # O_NONBLOCK: should the path have become a FIFO since stat(), opening it must not
    # wait for a writer; fstat() below then refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise InputError("permission denied", file=name) from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", file=name) from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        _require_regular(name, info.st_mode)
        try:
            # read(n) allocates n bytes up front: ask for the size, and one byte more to
            # notice a file that grew since stat(); only then read on, up to the limit.
            data = fh.read(min(info.st_size, MAX_FILE_BYTES) + 1)
            if len(data) > info.st_size:
                data += fh.read(MAX_FILE_BYTES + 1 - len(data))
        except OSError as exc:
            raise InputError(f"cannot read the file: {exc.strerror or exc}", file=name) from None
    _require_size(name, len(data))
    return data


def _require_regular(name: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise InputError("this is a folder, not a file", file=name)
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    kind = next((k for test, k in kinds if test(mode)), "not a regular file")
    raise InputError(
        f"this is {kind}, not a regular file; a seed file is read whole, so save the data "
        "to a file first",
        file=name,
    )


def _require_size(name: str, size: int) -> None:
    if size == 0:
        raise InputError("the file is empty", file=name)
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"the file is larger than the {_size(MAX_FILE_BYTES)} limit of one seed file "
            "(it is read whole into memory); split it into several files",
            file=name,
        )


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text, with a leading byte-order mark dropped; anything else is refused by name."""
    name = str(path)
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputError("the file is UTF-32 text; save it as UTF-8", file=name, line=1)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError("the file is UTF-16 text; save it as UTF-8", file=name, line=1)
    nul = data.find(b"\x00")  # memchr over the whole file: a NUL may come after any prefix
    if nul >= 0:
        if _looks_utf16(data):
            raise InputError(
                "the file looks like UTF-16 text (without a byte-order mark); save it as UTF-8",
                file=name,
                line=1,
            )
        raise InputError(
            "this is a binary file, not text (a NUL byte was found)",
            file=name,
            line=data.count(b"\n", 0, nul) + 1,
        )
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at = exc.start + bom  # utf-8-sig counts from after the mark
        raise InputError(
            f"not valid UTF-8 (byte 0x{data[at]:02X}); save the file as UTF-8 "
            "(GBK, Big5, Shift-JIS or Latin-1 files are not read)",
            file=name,
            line=data.count(b"\n", 0, at) + 1,
        ) from None
    if not text:
        raise InputError("the file is empty (it holds only a byte-order mark)", file=name)
    if text.isspace():
        raise InputError("the file holds only white space", file=name)
    return text


def _looks_utf16(data: bytes) -> bool:
    """Mostly-ASCII UTF-16 has a NUL in every other byte and none in the rest."""
    sample = data[:4096]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    return min(even, odd) == 0 and max(even, odd) * 4 >= len(sample) // 2


def _detect_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix in JSON_SUFFIXES:
        return _json_shape(path, text)
    what = f"unknown file suffix {suffix!r}" if suffix else "no file suffix"
    advice = f"rename it ({KNOWN_SUFFIXES}) or pass --format ({FORMATS_HELP})"
    if not text.startswith(("{", "["), _skip_ws(text, 0)):
        raise InputError(f"{what} and the content is not JSON; {advice}", file=str(path))
    try:
        return _json_shape(path, text)
    except InputError as exc:
        raise InputError(
            f"{what}, and read as JSON: {exc.detail}; {advice}",
            file=str(path),
            line=exc.line,
            field=exc.field,
        ) from None


def _json_shape(path: Path, text: str) -> str:
    """The JSON format, from the shape of the first record; malformed JSON is an error here."""
    first = next(iter(_json_records(path, text, limit=1)), None)
    if first is None:
        raise InputError("no JSON records", file=str(path))
    value = first.value
    if isinstance(value, dict):
        if "instances" in value:
            return "selfinstruct"
        if "conversations" in value:
            return "sharegpt"
        if "messages" in value:
            return "openai"
        if "instruction" in value:
            return "alpaca"
        raise InputError(
            "unrecognized record shape (expected instruction, instances, conversations or "
            f"messages; found keys: {_keys(value)}){_nested_hint(value)}; "
            "pass --format to force one",
            file=str(path),
            line=first.line,
        )
    raise InputError(
        f"expected JSON objects, found {_json_type(value)}", file=str(path), line=first.line
    )


def _keys(obj: dict[str, Any]) -> str:
    return ", ".join(_brief(k) for k in sorted(obj)[:8]) or "none"


def _nested_hint(obj: dict[str, Any]) -> str:
    """Where records sit one level down, as in {"data": [...]}, say so: don't dig for them."""
    for key, value in obj.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return (
                f"; the records seem to be the list under {_brief(key)}: save that list as the file"
            )
    return ""


def _json_records(path: Path, text: str, limit: int | None = None) -> Iterator[Record]:
    """JSON array or JSON Lines, each value with its line number."""
    check_surrogates = _SURROGATE_ESCAPE.search(text) is not None
    start = _skip_ws(text, 0)
    if text.startswith("[", start):
        records = _json_array(path, text, start + 1, limit)
    else:
        records = _json_lines(path, text, start, limit)
    for record in records:
        if check_surrogates:
            _refuse_surrogates(path, record)
        yield record


def _json_lines(path: Path, text: str, start: int, limit: int | None) -> Iterator[Record]:
    count = 0
    for lineno, line in _lines(text):
        if not line.strip():
            continue
        if _too_big(line):
            raise InputError("record is larger than 1 MiB", file=str(path), line=lineno)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if count == 0:
                _refuse_multiline_object(path, text, start)
            detail = f"{exc.msg} (column {exc.colno})"
            if line.lstrip().startswith("\ufeff"):
                detail = "a byte-order mark inside the file (were files joined together?)"
            elif "\r" in line:
                detail += " (the line holds a bare carriage return)"
            raise InputError(
                f"malformed JSON: {detail}",
                file=str(path),
                line=lineno,
            ) from None
        except RecursionError:
            raise _too_deep(path, lineno) from None
        except ValueError:  # an integer of more digits than int() converts
            raise _too_long_number(path, lineno) from None
        count += 1
        yield Record(value, lineno, count)
        if limit is not None and count >= limit:
            return


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(number, line), split at LF with a CR before it dropped.

    Not str.splitlines(): it also splits at U+2028, U+0085, \\x0b, \\x0c and \\x1c-\\x1e,
    which a JSON string or an instruction may hold.
    """
    pos, lineno, end_of_text = 0, 0, len(text)
    while pos < end_of_text:
        end = text.find("\n", pos)
        if end < 0:
            end = end_of_text
        lineno += 1
        line = text[pos:end]
        yield lineno, line[:-1] if line.endswith("\r") else line
        pos = end + 1


def _refuse_multiline_object(path: Path, text: str, start: int) -> None:
    """A pretty-printed object is not JSON Lines: say what the file holds instead."""
    if not text.startswith("{", start):
        return
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return  # the first line's own error is the better message
    lines = _LineIndex(text)
    first, last = lines.at(start), lines.at(end)
    if first == last:
        return  # e.g. two records on one line: the line's own error says so
    if _skip_ws(text, end) < len(text):
        raise InputError(
            f"a JSON object spans lines {first}-{last}: JSON Lines holds one record per "
            "line; write each record on one line, or put the records in a JSON array",
            file=str(path),
            line=first,
        )
    if any(key in value for key in _RECORD_KEYS):
        what = "one record spread over several lines"
        advice = "write it on one line, or put it in a JSON array"
    else:
        what = f"one JSON object (keys: {_keys(value)}), not a list of records"
        advice = _nested_hint(value).removeprefix("; ") or "expected a JSON array of records"
    raise InputError(f"the file is {what}; {advice}", file=str(path), line=first)


def _json_array(path: Path, text: str, pos: int, limit: int | None) -> Iterator[Record]:
    decoder = json.JSONDecoder()
    lines = _LineIndex(text)
    count = 0
    while True:
        last, pos = pos, _skip_ws(text, pos)
        if pos >= len(text):
            raise InputError(
                "malformed JSON: the array is not closed", file=str(path), line=lines.at(last)
            )
        if text[pos] == "]":
            if count == 0:
                raise InputError("the JSON array is empty", file=str(path), line=lines.at(pos))
            rest = _skip_ws(text, pos + 1)
            if rest < len(text):
                raise InputError(
                    "malformed JSON: extra data after the array",
                    file=str(path),
                    line=lines.at(rest),
                )
            return
        if count:
            if text[pos] != ",":
                raise InputError(
                    "malformed JSON: expected ',' or ']'", file=str(path), line=lines.at(pos)
                )
            pos = _skip_ws(text, pos + 1)
            if text.startswith("]", pos):
                raise InputError(
                    "malformed JSON: a comma before ']'", file=str(path), line=lines.at(pos)
                )
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON: {exc.msg} (column {exc.colno})", file=str(path), line=exc.lineno
            ) from None
        except RecursionError:
            raise _too_deep(path, lines.at(pos)) from None
        except ValueError:  # an integer of more digits than int() converts
            raise _too_long_number(path, lines.at(pos)) from None
        line = lines.at(pos)
        if _too_big(text, pos, end):
            raise InputError("record is larger than 1 MiB", file=str(path), line=line)
        count += 1
        yield Record(value, line, count)
        if limit is not None and count >= limit:
            return
        pos = end


class _LineIndex:
    """Line numbers of positions in one text, asked for in ascending order.

    Each step counts only the newlines since the last position asked: counting from the
    start for every record made reading a JSON array quadratic (a 52k-row array took
    minutes).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def at(self, pos: int) -> int:
        if pos < self.pos:  # not asked in order: start over rather than be wrong
            self.pos, self.line = 0, 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _skip_ws(text: str, pos: int) -> int:
    match = _JSON_WS.match(text, pos)
    return match.end() if match else pos


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _too_big(text: str, start: int = 0, end: int | None = None) -> bool:
    end = len(text) if end is None else end
    # A character is 1 to 4 UTF-8 bytes: only the lengths in between need encoding.
    if (end - start) * 4 <= MAX_RECORD_BYTES:
        return False
    if end - start > MAX_RECORD_BYTES:
        return True
    return len(text[start:end].encode("utf-8", "surrogatepass")) > MAX_RECORD_BYTES


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


def _refuse_surrogates(path: Path, record: Record) -> None:
    """Refuse a string that holds a lone surrogate, naming its field; replacing it would be
    a silent edit, and keeping it fails later, when SQLite or a terminal encodes it."""
    stack: list[tuple[QnaPath, Any]] = [((), record.value)]
    while stack:  # not recursive: a record may be nested as deep as the parser allows
        at, value = stack.pop()
        if isinstance(value, dict):
            for key in value:
                if found := _SURROGATE.search(key):
                    field = _dotted((*at, key))
                    raise _fail(path, record, field, _surrogate_message(found.group()))
            stack.extend(((*at, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*at, i), v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, str) and (found := _SURROGATE.search(value)):
            field = _dotted(at) or "(record)"
            raise _fail(path, record, field, _surrogate_message(found.group()))


# --- field helpers -----------------------------------------------------------------------


def _fail(path: Path, record: Record, field: str, message: str) -> InputError:
    return InputError(
        f"record {record.index}: {message}", file=str(path), line=record.line, field=field
    )


def _object(path: Path, record: Record) -> dict[str, Any]:
    if not isinstance(record.value, dict):
        raise _fail(
            path, record, "(record)", f"expected a JSON object, found {_json_type(record.value)}"
        )
    return record.value


def _string(path: Path, record: Record, obj: dict[str, Any], field: str, *, required: bool) -> str:
    value = obj.get(field)
    if value is None:
        if required:
            raise _fail(path, record, field, "missing")
        return ""
    if not isinstance(value, str):
        raise _fail(path, record, field, f"expected a string, found {_json_type(value)}")
    if required and not value.strip():
        raise _fail(path, record, field, "blank")
    return value.strip()


# --- the formats -------------------------------------------------------------------------


def _selfinstruct(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    instruction = _string(path, record, obj, "instruction", required=True)
    instances = obj.get("instances")
    if not isinstance(instances, list) or not instances:
        raise _fail(path, record, "instances", "expected a non-empty list of {input, output}")
    is_classification = obj.get("is_classification", False)
    if not isinstance(is_classification, bool):
        raise _fail(path, record, "is_classification", "expected true or false")
    for key in ("id", "name"):
        # Kept in meta as they are: a nested value there would be stored, unread, forever.
        if isinstance(obj.get(key), dict | list):
            raise _fail(path, record, key, f"expected a string, found {_json_type(obj[key])}")
    meta = {
        "seed_id": obj.get("id"),
        "name": obj.get("name"),
        "is_classification": is_classification,
    }
    drafts = []
    for i, instance in enumerate(instances):
        field = f"instances[{i}]"
        if not isinstance(instance, dict):
            raise _fail(path, record, field, "expected an object with input and output")
        inner = Record(instance, record.line, record.index)
        input_ = _string(path, inner, instance, "input", required=False)
        output = _string(path, inner, instance, "output", required=False)
        drafts.append(ExampleDraft(instruction, input_, output or None, meta=dict(meta)))
    return drafts


def _alpaca(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    instruction = _string(path, record, obj, "instruction", required=True)
    input_ = _string(path, record, obj, "input", required=False)
    output = _string(path, record, obj, "output", required=False)
    system = _string(path, record, obj, "system", required=False)
    present = [k for k, v in obj.items() if v not in ("", None)]
    for key in present:  # an empty value loses nothing when it is skipped
        if (problem := unread_key_problem(key, present, FLAT_FIELDS)) is not None:
            raise _fail(path, record, key, problem)
    extra = extra_fields(obj, FLAT_FIELDS)
    meta = {"extra": extra} if extra else {}
    return [ExampleDraft(instruction, input_, output or None, system=system, meta=meta)]


def _turns_to_draft(
    path: Path, record: Record, turns: list[tuple[str, str]], field: str
) -> ExampleDraft:
    """system? user (assistant user)* assistant? → the first exchange, later turns kept in meta."""
    system = ""
    if turns and turns[0][0] == "system":
        system = turns.pop(0)[1]
    if not turns:
        raise _fail(path, record, field, "no user turn")
    for i, (role, _) in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise _fail(
                path, record, f"{field}[{i}]", f"expected a {expected} turn here, found {role}"
            )
    instruction = turns[0][1]
    if not instruction.strip():
        raise _fail(path, record, f"{field}[0]", "the first user turn is blank")
    output = turns[1][1] if len(turns) > 1 else None
    meta = (
        {"extra_turns": [{"role": r, "content": c} for r, c in turns[2:]]} if len(turns) > 2 else {}
    )
    return ExampleDraft(instruction.strip(), "", output or None, system=system, meta=meta)


def _chat_turns(
    path: Path,
    record: Record,
    obj: dict[str, Any],
    list_key: str,
    role_key: str,
    text_key: str,
    roles: dict[str, str],
    *,
    fold_case: bool,
) -> list[tuple[str, str]]:
    """(role, text) pairs of a ShareGPT or OpenAI conversation, roles mapped to system/user/assistant."""
    items = obj.get(list_key)
    if not isinstance(items, list) or not items:
        raise _fail(
            path, record, list_key, f"expected a non-empty list of {{{role_key}, {text_key}}}"
        )
    turns = []
    for i, item in enumerate(items):
        field = f"{list_key}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get(text_key), str):
            raise _fail(
                path, record, field, f"expected {{{role_key}, {text_key}}} with a string {text_key}"
            )
        raw = item.get(role_key)
        role = roles.get(raw.lower() if fold_case else raw) if isinstance(raw, str) else None
        if role is None:
            known = ", ".join(dict.fromkeys(roles))
            raise _fail(
                path, record, f"{field}.{role_key}", f"unknown role {_brief(raw)} ({known})"
            )
        turns.append((role, item[text_key]))
    return turns


def _sharegpt(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    turns = _chat_turns(
        path, record, obj, "conversations", "from", "value", SHAREGPT_ROLES, fold_case=True
    )
    system = _string(path, record, obj, "system", required=False)
    if system and turns[0][0] != "system":
        turns.insert(0, ("system", system))
    return [_turns_to_draft(path, record, turns, "conversations")]


def _openai(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    turns = _chat_turns(
        path, record, obj, "messages", "role", "content", OPENAI_ROLES, fold_case=False
    )
    return [_turns_to_draft(path, record, turns, "messages")]


# --- CSV and TSV ---------------------------------------------------------------------------


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
        hint = ""
        renamed = [c for c in columns if RENAMED.get(c) == "instruction"]
        if renamed:
            hint = f"; rename the column {renamed[0]!r} to 'instruction'"
        elif delimiter == "," and any("\t" in c for c in columns):
            hint = "; the header holds tabs: if this is TSV, name it .tsv or pass --format tsv"
        elif delimiter == "\t" and any("," in c for c in columns):
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


# --- InstructLab taxonomy qna.yaml ---------------------------------------------------------

QnaPath = tuple[str | int, ...]


class _Qna:
    """Errors for one qna document, each with the line of the YAML node it is about."""

    def __init__(self, path: Path, root: Any) -> None:
        self.path = path
        self.root = root  # the yaml.compose node tree: safe_load's values carry no lines

    def node(self, at: QnaPath) -> Any:
        """The deepest node on `at` that exists (a missing key reports its mapping's line)."""
        import yaml

        node = self.root
        for step in at:
            if isinstance(node, yaml.SequenceNode) and isinstance(step, int):
                if step >= len(node.value):
                    break
                node = node.value[step]
            elif isinstance(node, yaml.MappingNode) and isinstance(step, str):
                found = [v for k, v in node.value if _scalar(k) == step]
                if not found:
                    break
                node = found[-1]  # PyYAML keeps the last of duplicate keys
            else:
                break
        return node

    def fail(self, at: QnaPath, message: str) -> InputError:
        node = self.node(at)
        line = node.start_mark.line + 1 if node is not None else None
        return InputError(message, file=str(self.path), line=line, field=_dotted(at) or None)

    def mapping(self, at: QnaPath, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(at, f"expected a mapping with {', '.join(allowed)}")
        # The upstream schema refuses unknown keys too; a typo such as `contxt:` would
        # otherwise drop the context without a word.
        for key in value:
            if key not in allowed:
                raise self.fail(
                    (*at, str(key)), f"unknown key {key!r} (expected {', '.join(allowed)})"
                )
        self.unique_keys(at)
        return value

    def unique_keys(self, at: QnaPath) -> None:
        """Refuse a key given twice: safe_load would silently keep only the last value."""
        import yaml

        node = self.node(at)
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            key = _scalar(key_node)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise InputError(
                    f"key {key!r} appears twice (first on line {seen[key]})",
                    file=str(self.path),
                    line=line,
                    field=_dotted((*at, key)),
                )
            seen[key] = line

    def string(self, at: QnaPath, obj: dict[str, Any], *, required: bool) -> str:
        key = str(at[-1])
        if key not in obj:
            if required:
                raise self.fail(at, "missing")
            return ""
        value = obj[key]
        if value is None:
            raise self.fail(at, "empty (the key has no value)")
        if not isinstance(value, str):
            # YAML turns unquoted `yes`, `42` or `2024-01-01` into bool, int or date.
            raise self.fail(
                at, f"expected a string, found {type(value).__name__} (quote the value)"
            )
        if not value.strip():
            raise self.fail(at, "empty")
        if found := _SURROGATE.search(value):  # from a "\ud800" escape
            raise self.fail(at, _surrogate_message(found.group()))
        if _too_big(value):
            raise self.fail(at, "value is larger than 1 MiB")
        return value.strip()


def _scalar(node: Any) -> str | None:
    import yaml

    return node.value if isinstance(node, yaml.ScalarNode) else None


def _dotted(at: QnaPath) -> str:
    out = ""
    for step in at:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


class _YamlAlias(Exception):
    def __init__(self, anchor: str, line: int) -> None:
        super().__init__(anchor)
        self.anchor = anchor
        self.line = line


@functools.cache
def _strict_yaml_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases: safe_load shares each aliased value, but whatever walks
        the result (or a merge key, which copies) expands nine lines of anchors and aliases
        into a billion values (billion laughs). A qna file has no use for them."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _YamlAlias(event.anchor, event.start_mark.line + 1)
            return super().compose_node(parent, index)

        def construct_yaml_int(self, node: Any) -> int:
            try:
                return super().construct_yaml_int(node)
            except ValueError:  # more digits than int() converts: a plain ValueError
                raise yaml.constructor.ConstructorError(
                    None, None, "a number too long to read; quote it", node.start_mark
                ) from None

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


def _load_yaml(path: Path, text: str) -> tuple[Any, Any]:
    """The document and its node tree (for line numbers: constructed values carry none)."""
    import yaml

    if len(text) > MAX_QNA_BYTES:  # characters: a cheap lower bound of the bytes
        raise InputError(
            f"a qna.yaml larger than {_size(MAX_QNA_BYTES)}: too slow to parse as YAML "
            "(an InstructLab qna file holds a few seed examples); split it",
            file=str(path),
        )
    loader = None
    try:
        loader = _strict_yaml_loader()(text)  # checks every character: it raises too
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except _YamlAlias as exc:
        raise InputError(
            f"YAML alias *{exc.anchor}: aliases are not accepted in a seed file (they can "
            "expand a small file into billions of values); write the value out",
            file=str(path),
            line=exc.line,
        ) from None
    except RecursionError:
        mark = loader.get_mark() if loader is not None else None
        raise _too_deep(path, mark.line + 1 if mark is not None else None) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            detail += f" ({exc.context}, which starts on line {exc.context_mark.line + 1})"
        line = mark.line + 1 if mark is not None else None
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise InputError(f"invalid YAML{column}: {detail}", file=str(path), line=line) from None
    except yaml.YAMLError as exc:  # ReaderError: a control character, reported by position
        position = getattr(exc, "position", None)
        line = _line_at(text, position) if isinstance(position, int) else None
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise InputError(f"invalid YAML: {first}", file=str(path), line=line) from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_qna(path: Path, text: str) -> tuple[list[ExampleDraft], int]:
    """InstructLab taxonomy qna.yaml, schema versions 2 and 3, skills and knowledge.

    Skills (and version 2 knowledge): seed_examples[i] = {question, answer, context?}.
    Version 3 knowledge (it has `document`/`document_outline`):
    seed_examples[i] = {context, questions_and_answers: [{question, answer}]}.
    Each question/answer becomes one example: instruction=question, input=context,
    output=answer; meta names the file and the 0-based positions they came from.
    """
    doc, root = _load_yaml(path, text)
    qna = _Qna(path, root)
    if not isinstance(doc, dict):
        shape = "empty" if doc is None else f"a {type(doc).__name__}"
        raise qna.fail(
            (),
            f"not an InstructLab qna document: the top level is {shape}, "
            "not a mapping with seed_examples",
        )
    if "seed_examples" not in doc:
        keys = ", ".join(sorted(map(str, doc))[:8]) or "none"
        raise InputError(
            f"not an InstructLab qna document: no top-level seed_examples (found keys: {keys})",
            file=str(path),
            line=1,
            field="seed_examples",
        )
    qna.unique_keys(())
    version = doc.get("version")
    if version is None:
        raise qna.fail(("version",), f"missing (this reader knows qna versions {QNA_VERSIONS})")
    if not isinstance(version, int) or isinstance(version, bool) or version not in QNA_VERSIONS:
        raise qna.fail(("version",), f"expected one of {QNA_VERSIONS}, found {_brief(version)}")
    examples = doc["seed_examples"]
    if not isinstance(examples, list) or not examples:
        raise qna.fail(("seed_examples",), "expected a non-empty list of seed examples")
    knowledge_v3 = version == 3 and ("document" in doc or "document_outline" in doc)
    kind = "knowledge" if "document" in doc or "document_outline" in doc else "skill"
    seed_file = _path_text(path)
    drafts = []
    for i, example in enumerate(examples):
        at: QnaPath = ("seed_examples", i)
        if knowledge_v3:
            obj = qna.mapping(at, example, ("context", "questions_and_answers"))
            context = qna.string((*at, "context"), obj, required=True)
            pairs = obj.get("questions_and_answers")
            if not isinstance(pairs, list) or not pairs:
                raise qna.fail(
                    (*at, "questions_and_answers"),
                    "expected a non-empty list of {question, answer}",
                )
            for j, pair in enumerate(pairs):
                inner: QnaPath = (*at, "questions_and_answers", j)
                pobj = qna.mapping(inner, pair, ("question", "answer"))
                question = qna.string((*inner, "question"), pobj, required=True)
                answer = qna.string((*inner, "answer"), pobj, required=True)
                meta = {"seed_file": seed_file, "qna_kind": kind, "qna_example": i, "qna_pair": j}
                drafts.append(ExampleDraft(question, context, answer, meta=meta))
        else:
            if isinstance(example, dict) and "questions_and_answers" in example:
                raise qna.fail(
                    (*at, "questions_and_answers"),
                    "only a version 3 knowledge document (with document and document_outline) "
                    "has questions_and_answers",
                )
            obj = qna.mapping(at, example, ("question", "answer", "context"))
            question = qna.string((*at, "question"), obj, required=True)
            answer = qna.string((*at, "answer"), obj, required=True)
            context = qna.string((*at, "context"), obj, required=False)
            meta = {"seed_file": seed_file, "qna_kind": kind, "qna_example": i}
            drafts.append(ExampleDraft(question, context, answer, meta=meta))
    return drafts, len(examples)


def _read_text_lines(path: Path, text: str) -> tuple[list[ExampleDraft], int]:
    drafts = []
    for lineno, line in _lines(text):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\r" in line:
            # Lines that end in CR alone (classic Mac) would read as one long instruction.
            raise InputError(
                "a carriage return (CR) inside the line: lines must end in LF or CRLF",
                file=str(path),
                line=lineno,
            )
        if _too_big(line):
            raise InputError("line is larger than 1 MiB", file=str(path), line=lineno)
        drafts.append(ExampleDraft(line.strip()))
    if not drafts:
        raise InputError("no instructions (only blank or comment lines)", file=str(path))
    return drafts, len(drafts)


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
