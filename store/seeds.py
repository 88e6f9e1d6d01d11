"""Reading seed files in the formats people already have, all-or-nothing.

Formats: Self-Instruct seed tasks, Alpaca (JSON or JSONL), ShareGPT, OpenAI chat
messages, CSV with instruction/input/output columns, and plain text with one
instruction per line. Every problem is an InputError naming the file, the line
(or record) and the field; nothing reaches the pool unless the whole file reads.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.errors import InputError
from store.ids import language_of
from store.records import ExampleDraft

FORMATS = ("selfinstruct", "alpaca", "sharegpt", "openai", "csv", "text")
MAX_RECORD_BYTES = 1 << 20
MAX_FILE_BYTES = 2 << 30

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}


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
    text = _read_text(path)
    if fmt is not None and fmt not in FORMATS:
        raise InputError(
            f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", field="--format"
        )
    fmt = fmt or _detect_format(path, text)
    if fmt == "csv":
        drafts, count = _read_csv(path, text)
    elif fmt == "text":
        drafts, count = _read_text_lines(path, text)
    else:
        records = list(_json_records(path, text))
        reader = {
            "selfinstruct": _selfinstruct,
            "alpaca": _alpaca,
            "sharegpt": _sharegpt,
            "openai": _openai,
        }[fmt]
        drafts = []
        for record in records:
            drafts.extend(reader(path, record))
        count = len(records)
    for draft in drafts:
        draft.source = source  # type: ignore[assignment]
        draft.language = language_of(draft.instruction + " " + draft.input)
    return SeedFile(path=path, format=fmt, records=count, drafts=drafts)


# --- reading and detection ---------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError("no such file", file=str(path))
    size = path.stat().st_size
    if size == 0:
        raise InputError("the file is empty", file=str(path))
    if size > MAX_FILE_BYTES:
        raise InputError(f"the file is larger than {MAX_FILE_BYTES >> 30} GiB", file=str(path))
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise InputError("this is a binary file, not text (a NUL byte was found)", file=str(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError("not valid UTF-8 text", file=str(path), line=line) from exc
    if not text.strip():
        raise InputError("the file holds only white space", file=str(path))
    return text


def _detect_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    stripped = text.lstrip()
    if suffix in (".txt", ".text") or not stripped.startswith(("{", "[")):
        return "text"
    first = next(iter(_json_records(path, text, limit=1)))
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
        keys = ", ".join(sorted(map(str, value))[:8]) or "none"
        raise InputError(
            "unrecognized record shape (expected instruction, instances, conversations or "
            f"messages; found keys: {keys}); pass --format to force one",
            file=str(path),
            line=first.line,
        )
    raise InputError(
        f"expected JSON objects, found {type(value).__name__}", file=str(path), line=first.line
    )


def _json_records(path: Path, text: str, limit: int | None = None) -> Iterator[Record]:
    """JSON array or JSON Lines, each value with its line number."""
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if text.startswith("[", start):
        yield from _json_array(path, text, start + 1, decoder, limit)
        return
    count = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line.encode("utf-8")) > MAX_RECORD_BYTES:
            raise InputError("record is larger than 1 MiB", file=str(path), line=lineno)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON: {exc.msg} (column {exc.colno})", file=str(path), line=lineno
            ) from exc
        count += 1
        yield Record(value, lineno, count)
        if limit is not None and count >= limit:
            return


def _json_array(
    path: Path, text: str, pos: int, decoder: json.JSONDecoder, limit: int | None
) -> Iterator[Record]:
    count = 0
    while True:
        pos = _skip_ws(text, pos)
        if pos >= len(text):
            raise InputError(
                "malformed JSON: the array is not closed", file=str(path), line=text.count("\n") + 1
            )
        if text[pos] == "]":
            if count == 0:
                raise InputError(
                    "the JSON array is empty", file=str(path), line=_line_at(text, pos)
                )
            if text[pos + 1 :].strip():
                raise InputError(
                    "malformed JSON: extra data after the array",
                    file=str(path),
                    line=_line_at(text, pos),
                )
            return
        if count and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg}", file=str(path), line=exc.lineno) from exc
        if len(text[pos:end].encode("utf-8")) > MAX_RECORD_BYTES:
            raise InputError(
                "record is larger than 1 MiB", file=str(path), line=_line_at(text, pos)
            )
        count += 1
        yield Record(value, _line_at(text, pos), count)
        if limit is not None and count >= limit:
            return
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] not in ",]":
            raise InputError(
                "malformed JSON: expected ',' or ']'", file=str(path), line=_line_at(text, pos)
            )


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# --- field helpers -----------------------------------------------------------------------


def _fail(path: Path, record: Record, field: str, message: str) -> InputError:
    return InputError(
        f"record {record.index}: {message}", file=str(path), line=record.line, field=field
    )


def _object(path: Path, record: Record) -> dict[str, Any]:
    if not isinstance(record.value, dict):
        raise _fail(
            path, record, "(record)", f"expected a JSON object, found {type(record.value).__name__}"
        )
    return record.value


def _string(path: Path, record: Record, obj: dict[str, Any], field: str, *, required: bool) -> str:
    value = obj.get(field)
    if value is None:
        if required:
            raise _fail(path, record, field, "missing")
        return ""
    if not isinstance(value, str):
        raise _fail(path, record, field, f"expected a string, found {type(value).__name__}")
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
    return [ExampleDraft(instruction, input_, output or None, system=system)]


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
        role = roles.get(str(raw).lower() if fold_case else raw)
        if role is None:
            known = ", ".join(dict.fromkeys(roles))
            raise _fail(path, record, f"{field}.{role_key}", f"unknown role {raw!r} ({known})")
        turns.append((role, item[text_key]))
    return turns


def _sharegpt(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    turns = _chat_turns(
        path, record, obj, "conversations", "from", "value", SHAREGPT_ROLES, fold_case=True
    )
    if obj.get("system") and isinstance(obj["system"], str) and turns[0][0] != "system":
        turns.insert(0, ("system", obj["system"]))
    return [_turns_to_draft(path, record, turns, "conversations")]


def _openai(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    turns = _chat_turns(
        path, record, obj, "messages", "role", "content", OPENAI_ROLES, fold_case=False
    )
    return [_turns_to_draft(path, record, turns, "messages")]


def _read_csv(path: Path, text: str) -> tuple[list[ExampleDraft], int]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "instruction" not in columns:
        raise InputError(
            f"no 'instruction' column (columns: {', '.join(columns) or 'none'})",
            file=str(path),
            line=1,
            field="instruction",
        )
    reader.fieldnames = columns
    drafts = []
    count = 0
    for row in reader:
        count += 1
        line = reader.line_num
        if None in row:
            raise InputError("more values than columns", file=str(path), line=line)
        instruction = (row.get("instruction") or "").strip()
        if not instruction:
            raise InputError("blank", file=str(path), line=line, field="instruction")
        if len(",".join(v or "" for v in row.values()).encode("utf-8")) > MAX_RECORD_BYTES:
            raise InputError("record is larger than 1 MiB", file=str(path), line=line)
        output = (row.get("output") or "").strip()
        drafts.append(
            ExampleDraft(
                instruction,
                (row.get("input") or "").strip(),
                output or None,
                system=(row.get("system") or "").strip(),
            )
        )
    if not drafts:
        raise InputError("the CSV has a header but no rows", file=str(path), line=2)
    return drafts, count


def _read_text_lines(path: Path, text: str) -> tuple[list[ExampleDraft], int]:
    drafts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if len(line.encode("utf-8")) > MAX_RECORD_BYTES:
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
    seeds = read_seed_file(path, fmt)
    result = store.add_candidates(seeds.drafts, round=round)
    with_output = sum(1 for d in seeds.drafts if d.output)
    return ImportReport(
        path=str(seeds.path),
        format=seeds.format,
        records=seeds.records,
        examples=len(seeds.drafts),
        inserted=result.inserted,
        duplicates=result.duplicates,
        accepted=with_output,
        waiting_for_output=len(seeds.drafts) - with_output,
    )
