"""IFEval-format files: JSONL rows `{"key", "prompt", "instruction_id_list", "kwargs"}`.

Instruction ids are registry ids and kwargs are registry parameters under
IFEval's own names, so a row maps onto constraints one to one. Some copies
of the data set pad every kwargs dict with all parameter names set to null;
null values are dropped before validation.

Scoring follows IFEval's four numbers: prompt-level (every instruction of a
row followed) and instruction-level (each instruction on its own), strict
and loose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoinstruct.agents.constraints.registry import REGISTRY, CheckResult, Constraint, check_all

# The 25 instruction types of the IFEval paper; the registry adds a few more
# (start_checker, number_characters, numbered_list) under ids of the same shape.
IFEVAL_IDS: frozenset[str] = frozenset(
    {
        "change_case:capital_word_frequency",
        "change_case:english_capital",
        "change_case:english_lowercase",
        "combination:repeat_prompt",
        "combination:two_responses",
        "detectable_content:number_placeholders",
        "detectable_content:postscript",
        "detectable_format:constrained_response",
        "detectable_format:json_format",
        "detectable_format:multiple_sections",
        "detectable_format:number_bullet_lists",
        "detectable_format:number_highlighted_sections",
        "detectable_format:title",
        "keywords:existence",
        "keywords:forbidden_words",
        "keywords:frequency",
        "keywords:letter_frequency",
        "language:response_language",
        "length_constraints:nth_paragraph_first_word",
        "length_constraints:number_paragraphs",
        "length_constraints:number_sentences",
        "length_constraints:number_words",
        "punctuation:no_comma",
        "startend:end_checker",
        "startend:quotation",
    }
)


def from_ifeval(instruction_id: str, kwargs: Mapping[str, Any] | None = None) -> Constraint:
    """The registry constraint for an IFEval instruction id and its kwargs.

    Raises ValueError naming the id for an unknown id, a missing or unknown
    kwarg, or a bad value (e.g. a relation other than "less than"/"at least").
    """
    if not isinstance(instruction_id, str) or instruction_id not in REGISTRY:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"{instruction_id}: kwargs must be an object, got {kwargs!r}")
    clean = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return Constraint(instruction_id, clean)


def to_ifeval(constraint: Constraint) -> tuple[str, dict[str, Any]]:
    """The (instruction id, kwargs) pair for a constraint; inverse of `from_ifeval`."""
    return constraint.id, constraint.to_dict()["params"]


@dataclass(frozen=True)
class IFEvalRow:
    """One row of an IFEval-format file."""

    key: int | str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]

    def constraints(self) -> list[Constraint]:
        """The row's constraints, in order; ValueError naming the row on a bad entry."""
        try:
            return [
                from_ifeval(i, kw)
                for i, kw in zip(self.instruction_id_list, self.kwargs, strict=True)
            ]
        except ValueError as exc:
            raise ValueError(f"row {self.key!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "prompt": self.prompt,
            "instruction_id_list": list(self.instruction_id_list),
            "kwargs": [dict(kw) for kw in self.kwargs],
        }

    @classmethod
    def from_constraints(
        cls, key: int | str, prompt: str, constraints: Sequence[Constraint]
    ) -> IFEvalRow:
        """A row for a prompt that already carries these constraints' descriptions."""
        pairs = [to_ifeval(c) for c in constraints]
        return cls(key, prompt, tuple(i for i, _ in pairs), tuple(kw for _, kw in pairs))


def parse_ifeval_row(data: Any) -> IFEvalRow:
    """Validate one decoded JSON row's shape (not its ids: see `IFEvalRow.constraints`)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a row must be a JSON object, got {type(data).__name__}")
    missing = [f for f in ("key", "prompt", "instruction_id_list") if f not in data]
    if missing:
        raise ValueError(f"row is missing field(s) {missing}")
    key, prompt, ids = data["key"], data["prompt"], data["instruction_id_list"]
    kwargs = data.get("kwargs")
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise ValueError(f"key must be an integer or string, got {key!r}")
    if not isinstance(prompt, str):
        raise ValueError(f"row {key!r}: prompt must be a string")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"row {key!r}: instruction_id_list must be a list of strings")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if not isinstance(kwargs, list) or not all(isinstance(k, dict | None) for k in kwargs):
        raise ValueError(f"row {key!r}: kwargs must be a list of objects")
    if len(kwargs) != len(ids):
        raise ValueError(
            f"row {key!r}: {len(ids)} instruction ids but {len(kwargs)} kwargs entries"
        )
    return IFEvalRow(key, prompt, tuple(ids), tuple(dict(k or {}) for k in kwargs))


def read_ifeval(path: str | Path, *, validate: bool = True) -> list[IFEvalRow]:
    """Rows of an IFEval-format JSONL file; blank lines are skipped.

    With `validate` (the default) every row's ids and kwargs are resolved
    too, so a file with an unknown id fails at once; the ValueError starts
    with "path:line:". Pass validate=False to resolve rows one by one and
    skip the ones this registry cannot check.
    """
    rows: list[IFEvalRow] = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = parse_ifeval_row(json.loads(line))
                if validate:
                    row.constraints()
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            rows.append(row)
    return rows


def write_ifeval(path: str | Path, rows: Iterable[IFEvalRow]) -> None:
    """Write rows as IFEval-format JSONL (UTF-8, Chinese unescaped)."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class RowScore:
    """One row's per-instruction results, strict and loose."""

    key: int | str
    strict: tuple[CheckResult, ...]
    loose: tuple[CheckResult, ...]

    @property
    def prompt_strict(self) -> bool:
        return all(r.passed for r in self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(r.passed for r in self.loose)


def score_row(row: IFEvalRow, response: str) -> RowScore:
    """Check a response against every instruction of the row, strict and loose."""
    constraints = row.constraints()
    return RowScore(
        row.key,
        tuple(check_all(constraints, response)),
        tuple(check_all(constraints, response, loose=True)),
    )


def accuracy(scores: Sequence[RowScore]) -> dict[str, float]:
    """IFEval's four accuracies; all 0.0 for no rows."""
    strict = [r.passed for s in scores for r in s.strict]
    loose = [r.passed for s in scores for r in s.loose]

    def share(flags: Sequence[bool]) -> float:
        return sum(flags) / len(flags) if flags else 0.0

    return {
        "prompt_strict": share([s.prompt_strict for s in scores]),
        "instruction_strict": share(strict),
        "prompt_loose": share([s.prompt_loose for s in scores]),
        "instruction_loose": share(loose),
    }
