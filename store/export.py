"""Writing the pool out in the formats LLaMA-Factory, TRL and `datasets` read.

The format is the row shape (alpaca, sharegpt, openai; `parquet` is alpaca rows),
the output's suffix the container (.json, .jsonl, .parquet). `export` writes the
data file alone (`evoinstruct filter` uses it); `export_dataset` also writes a
dataset card (README.md with the Hub's YAML header and the pool's provenance) and a
LLaMA-Factory `dataset_info.json` entry beside it; `push_to_hub` uploads both.

Every file is written one way: into a hidden partial file beside its target, then
renamed over it, all files of one export together or none. A symlink is written
through (its target is replaced), a device, FIFO or directory is refused, and an
OSError becomes one line naming the file, with nothing left behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import TracebackType
from typing import IO, Any

from evoinstruct.store.errors import EvoError, InputError
from evoinstruct.store.ids import language_of
from evoinstruct.store.records import SOURCES, STATUSES, Example

EXPORT_FORMATS = ("alpaca", "sharegpt", "openai", "parquet")
# The output's suffix alone decides the container; the format decides the row shape.
EXPORT_SUFFIXES = {".json": "JSON array", ".jsonl": "JSON Lines", ".parquet": "Parquet"}
PARQUET_BATCH = 1000
CARD_NAME = "README.md"
DATASET_INFO = "dataset_info.json"
# Written at the end of every card: a README.md carrying it is ours to replace.
CARD_MARKER = "<!-- written by `evoinstruct export`: exporting here again replaces this file -->"
# `datasets` maps these file stems to splits of the same name.
SPLIT_STEMS = {"train": "train", "test": "test", "validation": "validation", "valid": "validation"}
HUB_PROBE_TIMEOUT_S = 10.0


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

    def describe(self) -> list[str]:
        """The filter as the card states it."""
        out = [f"status {', '.join(self.statuses) or 'all'}"]
        if self.sources:
            out.append(f"source {', '.join(self.sources)}")
        if self.round is not None:
            out.append(f"round {self.round}")
        out.extend(f"{dim} ≥ {bound:g}" for dim, bound in self.min_scores.items())
        return out


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


# --- model names ------------------------------------------------------------------------
# A model's id is what its config names: a server's model name, a hub id, or for a local
# model the directory it was loaded from. Exports and cards carry names only: a local
# directory says nothing to a reader and tells them where the author keeps their files.


def is_local_path(value: str) -> bool:
    """Whether a model id is a path on the machine that ran it (absolute, home or ./)."""
    return (
        value.startswith(("/", "~", "./", "../", ".\\", "..\\", "\\\\"))
        or re.match(r"^[A-Za-z]:[\\/]", value) is not None
    )


def model_name(value: str | None, aliases: Mapping[str, str] | None = None) -> str | None:
    """The name a model id is shown by: its configured name, else a local directory's name."""
    if not value:
        return value
    if aliases and value in aliases:
        return aliases[value]
    if not is_local_path(value):
        return value
    stripped = value.rstrip("/\\")
    name = (PureWindowsPath if "\\" in stripped else PurePosixPath)(stripped).name
    return name or "local model"


def model_label(config: Mapping[str, Any]) -> str:
    """How a model's config names it: the model sent to its server, else its path's name."""
    for key in ("model", "path"):
        value = config.get(key)
        if isinstance(value, str) and value:
            return model_name(value) or value
    return "unnamed model"


def model_aliases(models: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Local model paths → names, from `[models.*]` tables (a stored or the current config)."""
    out: dict[str, str] = {}
    for config in models.values():
        path = config.get("path") if isinstance(config, Mapping) else None
        if isinstance(path, str) and is_local_path(path):
            out[path] = model_label(config)
    return out


# --- rows --------------------------------------------------------------------------------


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


# The parameters of every verifiable constraint type (agents/constraints), by kind: one
# struct holds any constraint's parameters in Parquet, as IFEval's own `kwargs` does.
# The store may not import agents; tests/test_export_card.py keeps this in step.
CONSTRAINT_PARAMS: dict[str, str] = {
    "capital_frequency": "int",
    "capital_relation": "str",
    "end_phrase": "str",
    "first_word": "str",
    "forbidden_words": "words",
    "frequency": "int",
    "keyword": "str",
    "keywords": "words",
    "language": "str",
    "let_frequency": "int",
    "let_relation": "str",
    "letter": "str",
    "nth_paragraph": "int",
    "num_bullets": "int",
    "num_chars": "int",
    "num_highlights": "int",
    "num_items": "int",
    "num_paragraphs": "int",
    "num_placeholders": "int",
    "num_sections": "int",
    "num_sentences": "int",
    "num_words": "int",
    "postscript_marker": "str",
    "prompt_to_repeat": "str",
    "relation": "str",
    "section_spliter": "str",
    "start_phrase": "str",
}


def _param_fits(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "words":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def constraints_of(example: Example) -> list[dict[str, Any]]:
    """The example's verifiable constraints from meta, as {id, params}; malformed parts left out
    (a column of fixed types must hold every row)."""
    raw = example.meta.get("constraints")
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        params = item.get("params") if isinstance(item.get("params"), dict) else {}
        kept = {
            k: v
            for k, v in params.items()
            if k in CONSTRAINT_PARAMS and _param_fits(CONSTRAINT_PARAMS[k], v)
        }
        out.append({"id": item["id"], "params": kept})
    return out


def _lineage_fields(
    example: Example, scores: Sequence[Any], aliases: Mapping[str, str] | None
) -> dict[str, Any]:
    return {
        "id": example.id,
        "parent_id": example.parent_id,
        "operation": example.operation,
        "round": example.round,
        "source": example.source,
        "status": example.status,
        "model_version": model_name(example.model_version, aliases),
        # A list of structs rather than a JSON string: Parquet and `datasets` keep the
        # structure, and one example may carry one dimension from several scorers.
        "scores": [
            {"scorer": s.scorer, "dimension": s.dimension, "value": s.value}
            for s in sorted(scores, key=lambda s: (s.scorer, s.dimension))
        ],
        "constraints": constraints_of(example),
    }


@dataclass
class ExportStats:
    """What an export held, counted while it streams: the card is written from it."""

    count: int = 0
    languages: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    rounds: Counter[int] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    writers: Counter[str] = field(default_factory=Counter)
    constraint_ids: Counter[str] = field(default_factory=Counter)
    with_constraints: int = 0

    def add(self, example: Example, aliases: Mapping[str, str] | None) -> None:
        self.count += 1
        language = example.language or language_of(f"{example.instruction} {example.input}")
        self.languages[language] += 1
        self.sources[example.source] += 1
        self.rounds[example.round] += 1
        if example.operation:
            self.operations[example.operation.split(":", 1)[0]] += 1
        writer = model_name(example.model_version, aliases)
        if writer:
            self.writers[writer] += 1
        constraints = constraints_of(example)
        if constraints:
            self.with_constraints += 1
            self.constraint_ids.update(c["id"] for c in constraints)


def iter_export(
    store: Any,
    fmt: str,
    filt: ExportFilter,
    *,
    with_lineage: bool = False,
    aliases: Mapping[str, str] | None = None,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Records to export, streamed from the store in batches; `stats` counts what went out."""
    batch: list[Example] = []

    def flush() -> Iterator[dict[str, Any]]:
        scores = (
            store.scores_for([e.id for e in batch]) if (filt.min_scores or with_lineage) else {}
        )
        for example in batch:
            mine = scores.get(example.id, [])
            by_dim: dict[str, float] = {}
            for s in mine:
                if s.value is not None:
                    by_dim[s.dimension] = max(s.value, by_dim.get(s.dimension, float("-inf")))
            if any(
                by_dim.get(dim, float("-inf")) < bound for dim, bound in filt.min_scores.items()
            ):
                continue
            if stats is not None:
                stats.add(example, aliases)
            lineage = _lineage_fields(example, mine, aliases) if with_lineage else None
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


# --- writing files safely -------------------------------------------------------------------

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)
# Errors that name a problem with the path the user gave (exit 2); anything else, a full
# disk first of all, is the machine's (exit 1).
_PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EEXIST,
    }
)
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def _errno_of(exc: OSError) -> int | None:
    """The errno, also of pyarrow's IO errors, which carry it only in their text."""
    if exc.errno is not None:
        return exc.errno
    found = _ERRNO_IN_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def _os_error(exc: OSError, shown: str, flag: str | None) -> EvoError:
    number = _errno_of(exc)
    reason = os.strerror(number) if number is not None else " ".join(str(exc).split())
    if number == errno.ENOENT:
        reason = "no such directory (or the file system does not allow creating files here)"
    if number in _PATH_ERRNOS:
        return InputError(f"cannot write here: {reason}", file=shown, field=flag)
    return EvoError(f"{shown}: writing failed: {reason}; nothing was written")


class OutputFiles:
    """The files of one export, written together or not at all.

    Each file goes to a hidden partial file beside its target (`.NAME.<random>.partial`,
    created exclusively, so a planted link is never followed); `commit` renames every
    partial over its target. Leaving the block by an exception removes the partials
    and the directories made for them; an OSError leaves it as one InputError (the path
    given is the problem) or EvoError (the machine is: a full disk).
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._made: list[Path] = []
        self._current: tuple[str, str | None] = ("", "-o")

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.commit()
            except OSError as failed:
                self.abort()
                raise _os_error(failed, *self._current) from None
            return
        self.abort()
        if isinstance(exc, OSError):
            raise _os_error(exc, *self._current) from None

    def target(self, path: Path, flag: str | None = "-o") -> Path:
        """The file `path` names: itself, or the file its symlink points at; only a regular
        file (or none yet) may be replaced. `flag` is the option that named it (None: a file
        written beside the data)."""
        self._current = (str(path), flag)
        target = Path(os.path.realpath(path)) if path.is_symlink() else path
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            return target
        for test, what in _NOT_REGULAR:
            if test(mode):
                through = f" (its link points at {target})" if target != path else ""
                todo = "name a file to write" if flag else "move it away, or pass --no-card"
                raise InputError(
                    f"is {what}{through}, not a regular file; {todo}", file=str(path), field=flag
                )
        return target

    def make_parents(self, path: Path, flag: str | None = "-o") -> None:
        """Create `path`'s missing directories, remembered so a failure removes them again."""
        self._current = (str(path), flag)
        missing: list[Path] = []
        directory = path.parent
        while not directory.exists() and not directory.is_symlink():
            missing.append(directory)
            if directory.parent == directory:
                break
            directory = directory.parent
        for directory in reversed(missing):
            directory.mkdir()
            self._made.append(directory)

    @contextmanager
    def open(
        self, path: Path, *, binary: bool = False, flag: str | None = "-o"
    ) -> Iterator[IO[Any]]:
        """A file to write `path`'s new content into; it replaces `path` at `commit`."""
        target = self.target(path, flag)
        if any(staged == target for staged, _ in self._staged):
            raise InputError(
                "is written twice by this export (a link points at another output)",
                file=str(path),
                field=flag,
            )
        try:
            keep_mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            keep_mode = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
            try:
                fd = os.open(partial, flags, 0o666)
                break
            except FileExistsError:
                continue
        self._staged.append((target, partial))
        if keep_mode is not None:  # replacing a file keeps its permissions
            os.fchmod(fd, keep_mode)
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            # A rename without fsync can leave an empty file after a power cut; a full disk
            # often shows only here.
            os.fsync(fh.fileno())
        self._current = (str(path), flag)

    def write_text(self, path: Path, text: str, flag: str | None = "-o") -> None:
        with self.open(path, flag=flag) as fh:
            fh.write(text)

    def commit(self) -> None:
        for target, partial in self._staged:
            self._current = (str(target), self._current[1])
            os.replace(partial, target)
        self._staged.clear()
        self._made.clear()

    def abort(self) -> None:
        for _, partial in self._staged:
            with suppress(OSError):
                partial.unlink(missing_ok=True)
        self._staged.clear()
        for directory in reversed(self._made):
            with suppress(OSError):
                directory.rmdir()
        self._made.clear()


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
    else:
        message = pa.struct([("role", text), ("content", text)])
        fields = [("messages", pa.list_(message))]
    if with_lineage:
        kinds = {"int": pa.int64(), "str": text, "words": pa.list_(text)}
        params = pa.struct([(name, kinds[kind]) for name, kind in CONSTRAINT_PARAMS.items()])
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
            ("constraints", pa.list_(pa.struct([("id", text), ("params", params)]))),
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


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise InputError(
            f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})", field="--format"
        )


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
    with OutputFiles() as files:
        files.target(out)
        files.make_parents(out)
        records = iter_export(store, fmt, filt or ExportFilter(), with_lineage=with_lineage)
        return _write_data(files, out, records, fmt, with_lineage)


# --- the dataset card and LLaMA-Factory's dataset_info.json ----------------------------------


@dataclass
class CardOptions:
    """What the card and dataset_info.json entry need beyond the pool itself."""

    name: str
    license: str | None = None
    language: str = "en"  # when no exported example says which language it is in
    version: str = "unknown"  # of evoinstruct


@dataclass
class CardData:
    """Everything a card says, collected once: rendered for the local files and for the Hub."""

    options: CardOptions
    fmt: str
    container: str
    filt: ExportFilter
    with_lineage: bool
    stats: ExportStats
    pool: dict[str, Any]
    rounds: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    rejections: list[tuple[str, str, int]]
    exported_at: str
    aliases: dict[str, str] = field(default_factory=dict)


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


def split_of(out: Path) -> str:
    """The split a file is, by `datasets`' naming convention (train.jsonl, test.parquet)."""
    return SPLIT_STEMS.get(out.stem.lower(), "train")


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n rows."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    return next((label for bound, label in bounds if n < bound), "n>1B")


def _is_our_card(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return CARD_MARKER in fh.read(1_000_000)
    except OSError:
        return False


def card_path(out: Path) -> Path:
    """Where the card of `out` goes: README.md of its directory, as the Hub and
    `load_dataset(DIR)` read it, unless that README.md is someone else's (a project's
    or repository's own): then `<stem>.README.md` beside the data, left for the user to
    move."""
    readme = out.parent / CARD_NAME
    if not (readme.exists() or readme.is_symlink()) or _is_our_card(readme):
        return readme
    return out.with_name(f"{out.stem}.{CARD_NAME}")


def dataset_info_entry(fmt: str, file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's description of one data file (its data/README.md format)."""
    if fmt in ("alpaca", "parquet"):
        return {
            "file_name": file_name,
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
            },
        }
    if fmt == "sharegpt":
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt",
            },
        }
    # OpenAI messages are LLaMA-Factory's sharegpt formatting with OpenAI's tags.
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }


def read_dataset_info(path: Path) -> dict[str, Any]:
    """The entries of an existing dataset_info.json (none if there is none); a file that is
    not a JSON object is refused rather than overwritten."""
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read it: {detail}", file=str(path)) from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON ({exc.msg}); fix or remove it, or pass --no-card",
            file=str(path),
            line=exc.lineno,
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            "holds no JSON object of datasets; fix or remove it, or pass --no-card",
            file=str(path),
        )
    return data


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


def _scrub(value: Any) -> Any:
    """A config value as a card shows it: local paths by name only."""
    if isinstance(value, str):
        return model_name(value) if is_local_path(value) else value
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def _short(value: Any) -> str:
    value = _scrub(value)
    if isinstance(value, list) and len(value) > 6:
        return f"{len(value)} items"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return "none" if value is None else str(value)


def _settings(prefix: str, section: Mapping[str, Any]) -> list[str]:
    """One line per part of a config section: `off`, or its settings."""
    lines: list[str] = []
    scalars: list[str] = []
    for key, value in section.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            if value.get("enabled") is False:
                lines.append(f"- `{prefix}.{key}`: off")
            elif key in ("min_scores", "max_scores"):
                scalars.append(f"{key}={_short(value)}")
            else:
                lines.extend(_settings(f"{prefix}.{key}", value))
        elif key != "enabled":
            scalars.append(f"{key}={_short(value)}")
    if scalars:
        lines.insert(0, f"- `{prefix}`: " + ", ".join(scalars))
    return lines


def _models_by_role(config: Mapping[str, Any]) -> list[str]:
    models = config.get("models") or {}
    roles = config.get("roles") or {}
    lines = []
    for role, name in roles.items():
        if not isinstance(name, str) or role == "student":
            continue
        if name in models:
            lines.append(f"{role}: {model_label(models[name])} (`{name}`)")
    student = roles.get("student")
    if roles.get("follow_student") and isinstance(student, str) and student in models:
        lines.append(
            f"student (generates once a version is promoted): {model_label(models[student])}"
        )
    return lines


def _counts(counter: Mapping[Any, int], total: int) -> str:
    return ", ".join(
        f"{k} {n} ({100 * n / total:.0f}%)" if total else f"{k} {n}"
        for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))
    )


COLUMNS = {
    "alpaca": [
        ("instruction", "the task"),
        ("input", "its input (may be empty)"),
        ("output", "the response"),
        ("system", "system prompt (may be empty)"),
    ],
    "sharegpt": [
        ("conversations", "turns `{from, value}`, `from` human or gpt"),
        ("system", "system prompt (may be empty)"),
    ],
    "openai": [("messages", "turns `{role, content}`, `role` system, user or assistant")],
}
LINEAGE_COLUMNS = [
    ("id", "content-hash id in the pool (`evoinstruct inspect example ID`)"),
    ("parent_id", "the example it was evolved or rewritten from"),
    ("operation", "how: self_instruct, an Evol-Instruct operation, realign:TYPE"),
    ("round", "the round it was made in (0: seeds)"),
    ("source", "seed, generated, evolved, rewritten"),
    ("status", "accepted, rejected, candidate, superseded"),
    ("model_version", "the model that wrote it, by name (a student version such as v3)"),
    ("scores", "list of `{scorer, dimension, value}`"),
    ("constraints", "verifiable constraints `{id, params}` (IFEval ids)"),
]


def render_card(
    card: CardData, data_files: Sequence[Mapping[str, str]], repo: str | None = None
) -> str:
    """The dataset card: the Hub's YAML header, how to load it, and the pool's provenance.

    `data_files` are the `configs` entries (paths relative to the card); `repo` is the Hub
    repo the card is for (None: a local directory).
    """
    import yaml

    opts, stats = card.options, card.stats
    languages = [lang for lang, _ in stats.languages.most_common() if lang in ("en", "zh")]
    header = {
        "language": languages or [opts.language],
        "license": opts.license or "unknown",
        "size_categories": [size_category(stats.count)],
        "task_categories": ["text-generation"],
        "tags": [
            "synthetic",
            "instruction-tuning",
            "self-instruct",
            "evol-instruct",
            "evoinstruct",
        ],
        "pretty_name": opts.name,
        "configs": [{"config_name": "default", "data_files": [dict(d) for d in data_files]}],
    }
    if stats.sources.get("rewritten"):
        header["tags"].append("realign")
    shape = "alpaca" if card.fmt == "parquet" else card.fmt
    container = EXPORT_SUFFIXES[f".{card.container}"]
    files = ", ".join(f"`{d['path']}`" for d in data_files)
    first = data_files[0]
    if repo:
        entry = {"hf_hub_url": repo, **dataset_info_entry(card.fmt, "")}
        entry.pop("file_name")
        factory = (
            f"LLaMA-Factory: add `{opts.name}` to your `{DATASET_INFO}` as "
            f"`{json.dumps(entry, ensure_ascii=False)}`."
        )
    else:
        factory = (
            f"LLaMA-Factory: `{DATASET_INFO}` beside the data names it `{opts.name}` "
            f"(`dataset: {opts.name}` with `dataset_dir` this directory). Data: {files}."
        )
    builder = "parquet" if card.container == "parquet" else "json"
    load = (
        f'data = load_dataset("{repo}", split="{first["split"]}")'
        if repo
        else f'data = load_dataset("{builder}", data_files="{first["path"]}", split="train")'
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {opts.name}",
        "",
        f"{stats.count} instruction-tuning examples in {shape} rows ({container}), grown with "
        "evoinstruct: LLM agents generate tasks (Self-Instruct), evolve them (Evol-Instruct), "
        "answer, judge and filter them.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        load,
        "```",
        "",
        factory,
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "| --- | --- |",
    ]
    columns = COLUMNS[shape] + (LINEAGE_COLUMNS if card.with_lineage else [])
    lines += [f"| `{name}` | {meaning} |" for name, meaning in columns]
    lines += ["", "## Composition", ""]
    lines.append(f"- Languages: {_counts(stats.languages, stats.count) or 'none'}")
    lines.append(f"- Sources: {_counts(stats.sources, stats.count) or 'none'}")
    if stats.rounds:
        by_round = ", ".join(f"{r}: {n}" for r, n in sorted(stats.rounds.items()))
        lines.append(f"- By round made in: {by_round}")
    if stats.operations:
        lines.append(f"- Operations: {_counts(stats.operations, sum(stats.operations.values()))}")
    if stats.writers:
        lines.append(f"- Written by: {_counts(stats.writers, sum(stats.writers.values()))}")
    if stats.with_constraints:
        ids = ", ".join(f"`{i}` {n}" for i, n in stats.constraint_ids.most_common())
        lines.append(
            f"- Verifiable constraints: {stats.with_constraints} examples carry them ({ids})"
        )
    lines.append(f"- Exported: {'; '.join(card.filt.describe())}")
    lines += _provenance(card)
    lines += ["", f"Exported by evoinstruct {opts.version} on {card.exported_at}.", "", CARD_MARKER]
    return "\n".join(lines) + "\n"


def _provenance(card: CardData) -> list[str]:
    lines = ["", "## Provenance", ""]
    finished = [r for r in card.rounds if r.get("finished_at")]
    lines.append(f"- Rounds: {len(card.rounds)} run, {len(finished)} finished")
    generators = Counter(r.get("model_version") or "teacher" for r in card.rounds)
    if card.rounds:
        lines.append(
            "- Generator by round: "
            + ", ".join(f"{name} {n}" for name, n in sorted(generators.items()))
        )
    config = card.rounds[-1]["config"] if card.rounds else {}
    for line in _models_by_role(config):
        lines.append(f"- {line}")
    for v in card.versions:
        state = "active" if v.get("active") else "promoted" if v.get("promoted") else "trained"
        base = model_name(v.get("base"), card.aliases) or "?"
        lines.append(
            f"- Student {v['version']}: {v.get('method')} on {base}, round {v.get('round')}, {state}"
        )
    sections = [(key, config.get(key)) for key in ("critic", "selector")]
    if any(isinstance(section, dict) for _, section in sections):
        changed = [
            r["number"]
            for r in card.rounds[:-1]
            if any(r["config"].get(k) != s for k, s in sections)
        ]
        lines += ["", f"### Filters and thresholds (round {card.rounds[-1]['number']})", ""]
        if changed:
            lines.append(f"Rounds {', '.join(map(str, changed))} ran with other settings.")
            lines.append("")
        for key, section in sections:
            if isinstance(section, dict):
                lines += _settings(key, section)
    pool = card.pool.get("by_status") or {}
    lines += ["", "### Acceptance by stage", ""]
    if pool:
        lines.append("Pool: " + ", ".join(f"{s} {n}" for s, n in pool.items()) + ".")
        lines.append("")
    verdicts = [(s, r, n) for s, r, n in card.rejections if not r.startswith("model_failure:")]
    failures = sum(n for _, r, n in card.rejections if r.startswith("model_failure:"))
    if verdicts:
        lines += ["| stage | reason | rejections |", "| --- | --- | --- |"]
        lines += [f"| {s} | {r} | {n} |" for s, r, n in verdicts]
    else:
        lines.append("No rejections recorded.")
    if failures:
        lines += ["", f"Failed model calls (no verdict; tried again later): {failures}."]
    return lines


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
    _check_card_paths(out, card)
    stats = ExportStats()
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
        records = iter_export(
            store, fmt, filt, with_lineage=with_lineage, aliases=names, stats=stats
        )
        result.count = _write_data(files, out, records, fmt, with_lineage)
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


# --- the Hub ---------------------------------------------------------------------------------


def check_hub_push(repo: str) -> None:
    """Refuse a push that cannot work before anything is written: a bad repo id, offline mode,
    no token."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except Exception as exc:  # HFValidationError: the id's rules in one sentence
        raise InputError(" ".join(str(exc).split()), field="--push-to-hub") from None
    # The constant is read once at import; the environment is asked again for a late change.
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    if constants.HF_HUB_OFFLINE or offline:
        raise InputError(
            "HF_HUB_OFFLINE is set, so nothing can be pushed; unset it or leave out --push-to-hub",
            field="--push-to-hub",
        )
    if not get_token():
        raise InputError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login`", field="--push-to-hub"
        )


def _probe_hub(endpoint: str, timeout: float) -> str | None:
    """Why the Hub cannot be reached, or None. In a thread with a deadline: a name lookup
    that hangs (no network, a dead resolver) is bounded by no socket timeout."""
    import threading

    from huggingface_hub import get_session

    outcome: dict[str, BaseException] = {}

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=timeout)
        except BaseException as exc:  # reported, never raised, from this thread
            outcome["error"] = exc

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 2)
    if worker.is_alive():
        return f"no answer within {timeout:g} s"
    error = outcome.get("error")
    return None if error is None else " ".join(str(error).split()) or type(error).__name__


def push_to_hub(
    result: ExportResult,
    repo: str,
    *,
    private: bool = False,
    probe_timeout: float = HUB_PROBE_TIMEOUT_S,
) -> str:
    """Upload the export as a Hub dataset (Parquet shards via `datasets`) and its card;
    returns the repo's URL. Any failure is one EvoError (exit 1): the local files stay."""
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    kept = f"the export is written to {result.out}"
    problem = _probe_hub(endpoint, probe_timeout)
    if problem is not None:
        raise EvoError(f"cannot reach the Hub at {endpoint} ({problem}); {kept}")
    import datasets
    from huggingface_hub import utils as hub_utils

    # Progress bars on stderr would bury the one line a failure prints.
    bars = datasets.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        from huggingface_hub import HfApi

        load = datasets.Dataset.from_parquet if result.out.suffix == ".parquet" else None
        data = (load or datasets.Dataset.from_json)(str(result.out), keep_in_memory=True)
        data.push_to_hub(repo, split=result.split, private=private or None)
        if result.card_data is not None:
            hub_files = [{"split": result.split, "path": f"data/{result.split}-*"}]
            text = render_card(result.card_data, hub_files, repo)
            HfApi(endpoint=endpoint).upload_file(
                path_or_fileobj=text.encode("utf-8"),
                path_in_repo=CARD_NAME,
                repo_id=repo,
                repo_type="dataset",
                commit_message="Dataset card from evoinstruct export",
            )
    except Exception as exc:  # network, auth, quota: one line, whatever the library
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise EvoError(f"pushing to {repo} failed ({reason}); {kept}") from None
    finally:
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            hub_utils.enable_progress_bars()
    return f"{endpoint}/datasets/{repo}"
