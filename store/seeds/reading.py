"""Reading a seed file: the checks before it is opened, its bytes decoded as UTF-8, its
format detected from the suffix (or, for another suffix, from the shape of its JSON), and
its JSON records, from an array or JSON Lines, each with the line it starts on.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.seed_fields import missing_field_hint
from evoinstruct.store.seeds.errors import (
    _SURROGATE,
    QnaPath,
    Record,
    _brief,
    _dotted,
    _fail,
    _json_type,
    _surrogate_message,
    _too_deep,
    _too_long_number,
)
from evoinstruct.store.seeds.limits import MAX_FILE_BYTES, _size, _too_big

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
_JSON_WS = re.compile(r"[ \t\r\n]*")
# A lone surrogate can only come from a \uD800-\uDFFF escape: UTF-8 text cannot hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_RECORD_KEYS = ("instruction", "instances", "conversations", "messages")


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
        present = [k for k, v in value.items() if v not in ("", None)]
        hint = next(
            (h for key in _RECORD_KEYS if (h := missing_field_hint(key, present, _RECORD_KEYS))), ""
        )
        raise InputError(
            "unrecognized record shape (expected instruction, instances, conversations or "
            f"messages; found keys: {_keys(value)}){'' if hint else _nested_hint(value)}; "
            f"pass --format to force one{hint}",
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
