"""N-gram decontamination against JSONL, JSON and plain-text evaluation files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoinstruct.agents.selection.decontam import Decontaminator, read_eval_texts
from evoinstruct.store.errors import InputError

EN_QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
)
ZH_QUESTION = (
    "小明有十二个苹果，他把其中的三分之一送给了同学，剩下的苹果又平均分给了四个朋友，每人得到几个？"
)


@pytest.fixture
def eval_files(tmp_path: Path) -> list[Path]:
    jsonl = tmp_path / "gsm8k.jsonl"
    jsonl.write_text(
        json.dumps({"question": EN_QUESTION, "answer": "72"})
        + "\n\n"
        + json.dumps({"question": "short"})
        + "\n",
        encoding="utf-8",
    )
    js = tmp_path / "cmath.json"
    js.write_text(
        json.dumps([{"q": ZH_QUESTION, "meta": {"tags": ["算术"]}}], ensure_ascii=False),
        encoding="utf-8",
    )
    txt = tmp_path / "notes.txt"
    txt.write_text(
        "The quick brown fox jumps over the lazy dog near the old river bank today.\n",
        encoding="utf-8",
    )
    return [jsonl, js, txt]


def test_english_copy_is_caught_with_file_and_ngram(eval_files: list[Path]) -> None:
    index = Decontaminator.from_files(eval_files, n=13)
    # casing and punctuation differ; the 13-gram of tokens is the same
    found = index.check(
        "Solve: natalia SOLD clips to 48 of her friends in april and then she sold half as many!"
    )
    assert found is not None
    assert found.eval_file == str(eval_files[0])
    assert found.ngram == "natalia sold clips to 48 of her friends in april and then she"


def test_chinese_copy_is_caught_by_characters(eval_files: list[Path]) -> None:
    index = Decontaminator.from_files(eval_files)
    found = index.check("请回答：小明有十二个苹果，他把其中的三分之一送给了同学。")
    assert found is not None and found.eval_file == str(eval_files[1])
    assert found.ngram == "小明有十二个苹果他把其中的"  # 13 characters
    assert index.check("小明有十二个梨，他把其中的一半送给了同学。") is None


def test_plain_text_file_and_twelve_shared_tokens_are_not_enough(eval_files: list[Path]) -> None:
    index = Decontaminator.from_files(eval_files)
    assert index.check("the quick brown fox jumps over the lazy dog near the old river") is not None
    # only 12 consecutive shared tokens
    assert index.check("quick brown fox jumps over the lazy dog near the old river") is None
    assert index.check("") is None


def test_ngram_size_is_configurable_and_fields_checked_separately(eval_files: list[Path]) -> None:
    index = Decontaminator.from_files(eval_files, n=4)
    assert index.check("clips to 48 of") is not None
    hit = index.check_fields(
        {"instruction": "Summarize this.", "input": "", "output": "The lazy dog near the river"}
    )
    assert hit is not None and hit[0] == "output" and hit[1].ngram == "the lazy dog near"
    # a 4-gram split across two fields does not count
    assert index.check_fields({"instruction": "the lazy", "output": "dog near"}) is None


def test_empty_index_and_first_file_wins(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one two three four", encoding="utf-8")
    b.write_text("one two three four five", encoding="utf-8")
    index = Decontaminator.from_files([a, b], n=4)
    assert index.check("one two three four").eval_file == str(a)
    assert Decontaminator.from_files([], n=13).check("anything at all") is None


def test_bad_eval_files_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing:
        list(read_eval_texts(tmp_path / "nope.jsonl"))
    assert missing.value.file.endswith("nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "fine"}\n{"q": broken}\n', encoding="utf-8")
    with pytest.raises(InputError) as broken:
        Decontaminator.from_files([bad])
    assert broken.value.line == 2
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(InputError):
        Decontaminator.from_files([bad_json])
