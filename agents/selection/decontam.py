"""Decontamination: drop examples that share a long n-gram with an evaluation set.

METHODS 2.5: an example sharing any 13-gram (configurable) of tokens with a
file the user lists as evaluation data is dropped, with the eval file and the
n-gram as evidence. Tokens come from `agents.text.tokenize`, so a Chinese
13-gram is 13 characters and punctuation or case differences do not hide a
copy. Eval files may be JSONL (one JSON value per line), JSON, or plain
text; every string inside a JSON value is scanned separately (keys are not),
a plain-text file as one text.

Each n-gram is stored as a stable 64-bit BLAKE2b hash in one sorted numpy
array with a parallel array of file numbers (16 bytes per n-gram, a million
n-grams in 16 MB); lookups are one vectorized `searchsorted` per text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.text import join_tokens, tokenize
from evoinstruct.store.errors import InputError


class DecontamConfig(BaseModel):
    """Decontamination settings (METHODS 2.5)."""

    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(
        13,
        ge=1,
        description="Tokens per n-gram; an example sharing one with an eval file is dropped.",
    )
    eval_files: list[str] = Field(
        default_factory=list,
        description="Evaluation data (JSONL, JSON or plain text) the pool must not overlap.",
    )
    fields: list[Literal["system", "instruction", "input", "output"]] = Field(
        default_factory=lambda: ["instruction", "input", "output"],
        description="Example fields checked, each on its own (no n-gram spans two fields).",
    )


@dataclass(frozen=True)
class Contamination:
    """Evidence: which eval file shares which n-gram."""

    eval_file: str
    ngram: str


def _hash(gram: Sequence[str]) -> int:
    digest = hashlib.blake2b("\x1f".join(gram).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _hashes(tokens: Sequence[str], n: int) -> np.ndarray:
    return np.fromiter(
        (_hash(tokens[i : i + n]) for i in range(len(tokens) - n + 1)), dtype=np.uint64
    )


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """The hashes of a text's token n-grams, as the index stores them (e.g. for `ignore`)."""
    return _hashes(tokenize(text), n)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def read_eval_texts(path: str | Path) -> Iterator[str]:
    """Texts of one eval file: strings of JSONL/JSON values, or the whole plain-text file."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError("evaluation file not found", file=str(path)) from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read evaluation file: {err}", file=str(path)) from err
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for number, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                try:
                    yield from _strings(json.loads(line))
                except json.JSONDecodeError as err:
                    raise InputError(
                        f"invalid JSON: {err.msg}", file=str(path), line=number
                    ) from err
    elif suffix == ".json":
        try:
            yield from _strings(json.loads(raw))
        except json.JSONDecodeError as err:
            raise InputError(f"invalid JSON: {err.msg}", file=str(path), line=err.lineno) from err
    else:
        yield raw


class Decontaminator:
    """N-gram index of evaluation files; `check(text)` names the first shared n-gram."""

    def __init__(
        self, n: int, hashes: np.ndarray, file_ids: np.ndarray, files: Sequence[str]
    ) -> None:
        order = np.argsort(hashes, kind="stable")  # stable: on a shared n-gram the first file wins
        self.n = n
        self.files = list(files)
        self._hashes = hashes[order]
        self._file_ids = file_ids[order]

    @classmethod
    def from_texts(
        cls,
        sources: Iterable[tuple[str, str]],
        n: int = 13,
        *,
        ignore: np.ndarray | None = None,
    ) -> Decontaminator:
        """An index of (source name, text) pairs, e.g. the prompts of a stored eval suite.

        `ignore` holds n-gram hashes that are never evidence (boilerplate both sides
        share, such as the wording of constraint descriptions).
        """
        names: dict[str, int] = {}
        hashes, file_ids = [], []
        for name, text in sources:
            number = names.setdefault(name, len(names))
            h = _hashes(tokenize(text), n)
            if ignore is not None and len(ignore) and len(h):
                h = h[~np.isin(h, ignore)]
            hashes.append(h)
            file_ids.append(np.full(len(h), number, dtype=np.int32))
        return cls(
            n,
            np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64),
            np.concatenate(file_ids) if file_ids else np.zeros(0, dtype=np.int32),
            list(names),
        )

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], n: int = 13) -> Decontaminator:
        hashes, file_ids = [], []
        for number, path in enumerate(paths):
            for text in read_eval_texts(path):
                h = _hashes(tokenize(text), n)
                hashes.append(h)
                file_ids.append(np.full(len(h), number, dtype=np.int32))
        empty = np.zeros(0, dtype=np.uint64)
        return cls(
            n,
            np.concatenate(hashes) if hashes else empty,
            np.concatenate(file_ids) if file_ids else np.zeros(0, dtype=np.int32),
            [str(p) for p in paths],
        )

    def __len__(self) -> int:
        return len(self._hashes)

    def check(self, text: str) -> Contamination | None:
        """The first n-gram of the text found in an eval file, or None."""
        tokens = tokenize(text)
        if len(tokens) < self.n or not len(self._hashes):
            return None
        query = _hashes(tokens, self.n)
        pos = np.searchsorted(self._hashes, query)
        pos[pos == len(self._hashes)] = 0
        hits = np.flatnonzero(self._hashes[pos] == query)
        if not len(hits):
            return None
        first = int(hits[0])
        file_id = int(self._file_ids[pos[first]])
        return Contamination(self.files[file_id], join_tokens(tokens[first : first + self.n]))

    def sources_in(self, text: str) -> set[str]:
        """Every source sharing at least one n-gram with the text (check() names only the first)."""
        tokens = tokenize(text)
        if len(tokens) < self.n or not len(self._hashes):
            return set()
        query = np.unique(_hashes(tokens, self.n))
        left = np.searchsorted(self._hashes, query, side="left")
        right = np.searchsorted(self._hashes, query, side="right")
        found: set[str] = set()
        for lo, hi in zip(left[left < right], right[left < right], strict=True):
            found.update(self.files[int(i)] for i in self._file_ids[lo:hi])
        return found

    def check_fields(self, fields: dict[str, str]) -> tuple[str, Contamination] | None:
        """Check each field separately; (field name, evidence) of the first hit."""
        for name, text in fields.items():
            if text:
                found = self.check(text)
                if found is not None:
                    return name, found
        return None
