"""Keys and columns a flat seed format does not read: refused when they look like a misspelt or
renamed field (the row would silently lose its answer), kept in `meta["extra"]` otherwise.

Alpaca rows and CSV/TSV files often carry more than instruction/input/output/system: an id,
a category, a source. Those are kept, as datasets and distilabel keep extra columns. But
`ouput` or Dolly's `response` next to no `output` would import every row as a task without
an answer — a silent guess — so such a key is refused with the name to use instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FLAT_FIELDS = ("instruction", "input", "output", "system")

# Other datasets' names for the fields this format reads (Dolly, Alpaca-GPT4 variants,
# OpenAssistant exports, Chinese column headers).
RENAMED = {
    "prompt": "instruction",
    "question": "instruction",
    "query": "instruction",
    "指令": "instruction",
    "问题": "instruction",
    "context": "input",
    "输入": "input",
    "response": "output",
    "answer": "output",
    "completion": "output",
    "输出": "output",
    "回答": "output",
    "答案": "output",
}

_WORDS = re.compile(r"[^0-9a-z]+")


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, transpositions."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


def misspelling_of(key: str, known: Sequence[str]) -> str | None:
    """The known field `key` is a likely typo of, or None.

    A key that holds a known field as a whole word (`instruction_id`, `output_2`) is a
    column of its own, not a typo.
    """
    name = key.strip().lower()
    if name in known or any(word in known for word in _WORDS.split(name)):
        return None
    for field in known:
        if edit_distance(name, field) <= (1 if len(field) <= 5 else 2):
            return field
    return None


def _meant_field(key: str, have: set[str], known: Sequence[str]) -> tuple[str, bool] | None:
    """(the known field `key` stands for, whether by another dataset's name) when that field
    is absent from `have` (the lower-cased keys holding a value), else None."""
    name = key.strip().lower()
    if name in known:
        return None
    target = RENAMED.get(name)
    if target is not None and target in known and target not in have:
        return target, True
    near = misspelling_of(name, known)
    if near is not None and near not in have:
        return near, False
    return None


def unread_key_problem(key: str, present: Iterable[str], known: Sequence[str]) -> str | None:
    """Why `key` must not be skipped over, or None when it may be kept as an extra.

    `present` are the row's (or header's) keys that hold a value.
    """
    meant = _meant_field(key, {k.strip().lower() for k in present}, known)
    if meant is None:
        return None
    target, renamed = meant
    if renamed:
        return f"unknown key {key!r}: this format reads {target!r}; rename the key to {target!r}"
    return f"unknown key {key!r}: did you mean {target!r}?"


def missing_field_hint(
    field: str, present: Iterable[str], known: Sequence[str], *, noun: str = "key"
) -> str:
    """What to say after "`field` is missing" when a present key looks like it misspelt or
    renamed (`instrution`, `prompt`): the same did-you-mean a misspelt extra key gets.

    `known` are the fields the format reads (a misspelling is matched against all of them,
    so `inputs` is taken for `input`, never for a missing `instruction`); "" when no key fits.
    """
    keys = list(present)
    have = {k.strip().lower() for k in keys}
    for key in keys:
        meant = _meant_field(key, have, known)
        if meant is not None and meant[0] == field:
            if meant[1]:
                return f"; rename the {noun} {key!r} to {field!r}"
            return f"; found {key!r}: did you mean {field!r}?"
    return ""


def extra_fields(values: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    """The row's non-empty values under keys the format does not read, as they are."""
    return {
        key: value
        for key, value in values.items()
        if key.strip().lower() not in known and value not in ("", None)
    }
