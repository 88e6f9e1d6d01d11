"""Reading seed files in the formats people already have, all-or-nothing.

Formats: Self-Instruct seed tasks, Alpaca (JSON or JSONL), ShareGPT, OpenAI chat
messages, CSV with instruction/input/output columns, InstructLab taxonomy qna.yaml
(skills and knowledge), and plain text with one instruction per line. Every problem
is an InputError naming the file, the line (or record) and the field; nothing
reaches the pool unless the whole file reads.

Detection never guesses: the suffix names the format (.json/.jsonl → the JSON
formats by record shape, .csv, .yaml/.yml → qna, .txt → text); any other suffix
is accepted only when its content is JSON of a known shape. Plain text is read
only from .txt files or with an explicit `--format text`, because anything reads
as text and a mislabelled file would otherwise become training data.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.ids import language_of
from evoinstruct.store.records import ExampleDraft

FORMATS = ("selfinstruct", "alpaca", "sharegpt", "openai", "csv", "qna", "text")
FORMATS_HELP = "|".join(FORMATS)
SUFFIX_FORMATS = {".csv": "csv", ".yaml": "qna", ".yml": "qna", ".txt": "text", ".text": "text"}
JSON_SUFFIXES = (".json", ".jsonl")
KNOWN_SUFFIXES = ", ".join((*JSON_SUFFIXES, *SUFFIX_FORMATS))
QNA_VERSIONS = (2, 3)
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
    elif fmt == "qna":
        drafts, count = _read_qna(path, text)
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
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix in JSON_SUFFIXES:
        return _json_shape(path, text)
    what = f"unknown file suffix {suffix!r}" if suffix else "no file suffix"
    advice = f"rename it ({KNOWN_SUFFIXES}) or pass --format ({FORMATS_HELP})"
    if not text.lstrip().startswith(("{", "[")):
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
        if len(value.encode("utf-8")) > MAX_RECORD_BYTES:
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


def _load_yaml(path: Path, text: str) -> tuple[Any, Any]:
    """The document (safe_load) and its node tree (compose, for line numbers)."""
    import yaml

    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
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
        raise qna.fail(("version",), f"expected one of {QNA_VERSIONS}, found {version!r}")
    examples = doc["seed_examples"]
    if not isinstance(examples, list) or not examples:
        raise qna.fail(("seed_examples",), "expected a non-empty list of seed examples")
    knowledge_v3 = version == 3 and ("document" in doc or "document_outline" in doc)
    kind = "knowledge" if "document" in doc or "document_outline" in doc else "skill"
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
                meta = {"seed_file": str(path), "qna_kind": kind, "qna_example": i, "qna_pair": j}
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
            meta = {"seed_file": str(path), "qna_kind": kind, "qna_example": i}
            drafts.append(ExampleDraft(question, context, answer, meta=meta))
    return drafts, len(examples)


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
