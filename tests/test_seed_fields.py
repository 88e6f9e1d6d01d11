"""Keys a flat seed format does not read: kept as extras, or refused when they look like a
misspelt or renamed field (the row would otherwise lose its answer without a word)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoinstruct.store.seed_fields import (
    FLAT_FIELDS,
    edit_distance,
    missing_field_hint,
    misspelling_of,
)
from evoinstruct.store.seeds import read_seed_file


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("ouput", "output"),
        ("outptu", "output"),
        ("inputs", "input"),
        ("sytem", "system"),
        ("Instrution", "instruction"),
        ("instruction_id", None),  # a column of its own that names a field as a word
        ("output_2", None),
        ("id", None),
        ("text", None),
        ("history", None),
        ("category", None),
        ("类别", None),
    ],
)
def test_misspellings(key: str, expected: str | None) -> None:
    assert misspelling_of(key, FLAT_FIELDS) == expected


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (["instrution", "output"], "; found 'instrution': did you mean 'instruction'?"),
        (["Instruciton"], "; found 'Instruciton': did you mean 'instruction'?"),
        (["prompt", "response"], "; rename the key 'prompt' to 'instruction'"),
        (["指令", "输出"], "; rename the key '指令' to 'instruction'"),
        (["inputs", "output"], ""),  # a misspelt input, not an instruction
        (["instruction_id", "output"], ""),  # a column of its own
        (["text"], ""),
        ([], ""),
    ],
)
def test_a_missing_field_names_the_key_that_looks_like_it(
    present: list[str], expected: str
) -> None:
    assert missing_field_hint("instruction", present, FLAT_FIELDS) == expected


def test_edit_distance_counts_a_transposition_once() -> None:
    assert edit_distance("outptu", "output") == 1
    assert edit_distance("", "abc") == 3
    assert edit_distance("kitten", "sitting") == 3


def test_alpaca_extra_keys_are_kept_in_meta(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Name a river.", "output": "The Nile.", "id": 7, "category": "geo"},
        {
            "instruction": "列出三种水果。",
            "output": "苹果、香蕉、橙子",
            "类别": "常识",
            "tags": ["a"],
        },
        {"instruction": "Say hi.", "output": "Hi.", "response": "Hello.", "note": ""},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    drafts = read_seed_file(path).drafts
    assert [d.meta.get("extra") for d in drafts] == [
        {"id": 7, "category": "geo"},
        {"类别": "常识", "tags": ["a"]},
        {"response": "Hello."},  # beside an output it is a column of its own; empty ones drop
    ]
    assert drafts[1].output == "苹果、香蕉、橙子"


def test_csv_extra_columns_are_kept_per_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "instruction,output,category,instruction_id\nName a river.,The Nile.,geo,r1\n"
        "列出三种水果。,苹果、香蕉、橙子,,r2\n",
        "utf-8",
    )
    drafts = read_seed_file(path).drafts
    assert [d.meta.get("extra") for d in drafts] == [
        {"category": "geo", "instruction_id": "r1"},
        {"instruction_id": "r2"},
    ]
