"""Seed import: every format, round trips through export, idempotence, and malformed input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from store.seeds import read_seed_file
from tests.cli_helpers import run_cli

ALPACA = [
    {
        "instruction": "Give three tips for staying healthy.",
        "input": "",
        "output": "Eat well, sleep, move.",
    },
    {
        "instruction": "把句子翻译成英文。",
        "input": "我喜欢读书。",
        "output": "I like reading books.",
    },
    {
        "instruction": "Summarize the text.",
        "input": "A long text about rivers.",
        "output": "Rivers flow.",
    },
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def make_files(tmp: Path) -> dict[str, Path]:
    files = {
        "alpaca_json": write_json(tmp / "alpaca.json", ALPACA),
        "alpaca_jsonl": write_jsonl(tmp / "alpaca.jsonl", ALPACA),
        "selfinstruct": write_jsonl(
            tmp / "seed_tasks.jsonl",
            [
                {
                    "id": "t1",
                    "name": "antonyms",
                    "instruction": "Give the antonym of the word.",
                    "instances": [
                        {"input": "hot", "output": "cold"},
                        {"input": "big", "output": "small"},
                    ],
                    "is_classification": False,
                },
                {
                    "id": "t2",
                    "name": "情感",
                    "instruction": "判断情感。",
                    "instances": [{"input": "太好了", "output": "正面"}],
                    "is_classification": True,
                },
            ],
        ),
        "sharegpt": write_json(
            tmp / "sharegpt.json",
            [
                {
                    "conversations": [
                        {"from": "system", "value": "You are terse."},
                        {"from": "human", "value": "What is 2+2?"},
                        {"from": "gpt", "value": "4"},
                    ]
                },
                {
                    "conversations": [
                        {"from": "human", "value": "写一首诗。"},
                        {"from": "gpt", "value": "春眠不觉晓。"},
                    ]
                },
            ],
        ),
        "openai": write_jsonl(
            tmp / "openai.jsonl",
            [
                {
                    "messages": [
                        {"role": "user", "content": "Name a colour."},
                        {"role": "assistant", "content": "Blue."},
                    ]
                },
                {
                    "messages": [
                        {"role": "system", "content": "用中文回答。"},
                        {"role": "user", "content": "天空为什么是蓝色的？"},
                        {"role": "assistant", "content": "因为瑞利散射。"},
                    ]
                },
            ],
        ),
        "text": tmp / "instructions.txt",
    }
    files["text"].write_text(
        "Write a haiku about autumn.\n\n# a comment\n给我讲一个笑话。\n", encoding="utf-8"
    )
    with (tmp / "seeds.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        for row in ALPACA:
            writer.writerow(row)
    files["csv"] = tmp / "seeds.csv"
    return files


EXPECTED_FORMAT = {
    "alpaca_json": "alpaca",
    "alpaca_jsonl": "alpaca",
    "selfinstruct": "selfinstruct",
    "sharegpt": "sharegpt",
    "openai": "openai",
    "text": "text",
    "csv": "csv",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_FORMAT))
def test_format_is_detected(tmp_path: Path, kind: str) -> None:
    path = make_files(tmp_path)[kind]
    seeds = read_seed_file(path)
    assert seeds.format == EXPECTED_FORMAT[kind]
    assert seeds.drafts and all(d.source == "seed" for d in seeds.drafts)


def test_selfinstruct_gives_one_example_per_instance(tmp_path: Path) -> None:
    seeds = read_seed_file(make_files(tmp_path)["selfinstruct"])
    assert [(d.input, d.output) for d in seeds.drafts] == [
        ("hot", "cold"),
        ("big", "small"),
        ("太好了", "正面"),
    ]
    assert seeds.drafts[2].meta["is_classification"] is True
    assert seeds.drafts[2].language == "zh"


def test_sharegpt_keeps_system_turn(tmp_path: Path) -> None:
    seeds = read_seed_file(make_files(tmp_path)["sharegpt"])
    assert seeds.drafts[0].system == "You are terse."
    assert (seeds.drafts[0].instruction, seeds.drafts[0].output) == ("What is 2+2?", "4")


def pool_snapshot(project: Path) -> list[tuple]:
    from store import open_store

    with open_store(project / "pool.db") as store:
        # Chat formats join instruction and input into one user turn; the id (over the
        # joined, normalized prompt) and the joined text are what must survive.
        return sorted(
            (e.id, f"{e.instruction}\n\n{e.input}".strip(), e.output, e.system, e.status)
            for e in store.iter_examples()
        )


@pytest.mark.parametrize("kind", sorted(EXPECTED_FORMAT))
@pytest.mark.parametrize("export_format", ["alpaca", "sharegpt", "openai"])
def test_round_trip_import_export_import(
    tmp_path: Path, capsys, kind: str, export_format: str
) -> None:
    from graph.project import init_project

    files = make_files(tmp_path)
    first = init_project(tmp_path / "a").root
    second = init_project(tmp_path / "b").root
    assert run_cli(capsys, "seed", "add", files[kind], "-p", first).code == 0
    out = tmp_path / f"out.{export_format}.jsonl"
    result = run_cli(
        capsys, "export", "-f", export_format, "-o", out, "--status", "all", "-p", first
    )
    assert result.code == 0, result.err
    assert run_cli(capsys, "seed", "add", out, "-p", second).code == 0
    assert pool_snapshot(first) == pool_snapshot(second)


def test_importing_twice_adds_nothing(project_dir: Path, tmp_path: Path, capsys) -> None:
    path = make_files(tmp_path)["alpaca_json"]
    assert run_cli(capsys, "seed", "add", path, "-p", project_dir).code == 0
    before = pool_snapshot(project_dir)
    result = run_cli(capsys, "seed", "add", path, "-p", project_dir, "--json")
    assert result.json()[0]["inserted"] == 0 and result.json()[0]["duplicates"] == 3
    assert pool_snapshot(project_dir) == before


def test_duplicates_inside_one_file_are_stored_once(
    project_dir: Path, tmp_path: Path, capsys
) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [ALPACA[0], {**ALPACA[0], "instruction": "  give THREE tips for staying healthy. "}],
    )
    result = run_cli(capsys, "seed", "add", path, "-p", project_dir, "--json")
    assert result.json()[0]["inserted"] == 1 and result.json()[0]["duplicates"] == 1


def test_plain_instructions_wait_for_an_answer(project_dir: Path, tmp_path: Path, capsys) -> None:
    path = make_files(tmp_path)["text"]
    run_cli(capsys, "seed", "add", path, "-p", project_dir)
    status = run_cli(capsys, "status", "-p", project_dir, "--json").json()
    assert status["examples"]["by_status"]["candidate"] == 2


MALFORMED: dict[str, tuple[str, bytes, str]] = {
    # name: (file name, content, text the error must contain)
    "bad_json_line": (
        "a.jsonl",
        b'{"instruction": "ok", "output": "x"}\n{"instruction": "broken"\n',
        ":2",
    ),
    "bad_json_array": ("a.json", b'[\n{"instruction": "ok"},\n{"instruction": }\n]', ":3"),
    "missing_instruction": (
        "a.jsonl",
        b'{"instruction": "ok"}\n{"input": "x", "output": "y", "instruction2": 1}\n',
        ":2, field 'instruction': record 2: missing",
    ),
    "missing_instruction_forced": (
        "b.jsonl",
        b'{"instruction": "ok"}\n{"input": "x", "output": "y"}\n',
        "field 'instruction'",
    ),
    "blank_instruction": ("a.jsonl", b'{"instruction": "   ", "output": "y"}\n', "blank"),
    "instruction_not_string": (
        "a.jsonl",
        b'{"instruction": 42, "output": "y"}\n',
        "expected a string",
    ),
    "unrecognized_shape": (
        "a.json",
        b'[{"question": "q", "answer": "a"}]',
        "unrecognized record shape",
    ),
    "not_objects": ("a.json", b"[1, 2, 3]", "expected JSON objects"),
    "empty_file": ("a.jsonl", b"", "empty"),
    "whitespace_only": ("a.jsonl", b"  \n\n ", "white space"),
    "binary_file": ("a.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "not_utf8": ("a.txt", "instruction\nnaïve\n".encode("latin-1"), "UTF-8"),
    "too_large_record": ("a.jsonl", b'{"instruction": "' + b"x" * (1 << 20) + b'"}\n', "1 MiB"),
    "sharegpt_bad_role": (
        "a.jsonl",
        b'{"conversations": [{"from": "wizard", "value": "hi"}]}\n',
        "unknown role",
    ),
    "sharegpt_gpt_first": (
        "a.jsonl",
        b'{"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "yo"}]}\n',
        "expected a user turn",
    ),
    "openai_bad_role": (
        "a.jsonl",
        b'{"messages": [{"role": "robot", "content": "hi"}]}\n',
        "unknown role",
    ),
    "openai_content_not_string": (
        "a.jsonl",
        b'{"messages": [{"role": "user", "content": ["x"]}]}\n',
        "string content",
    ),
    "openai_two_users": (
        "a.jsonl",
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n',
        "expected a assistant turn",
    ),
    "csv_without_instruction": ("a.csv", b"question,answer\nq,a\n", "no 'instruction' column"),
    "csv_blank_instruction": ("a.csv", b"instruction,output\nfine,ok\n ,x\n", ":3"),
    "selfinstruct_no_instances": (
        "a.jsonl",
        b'{"instruction": "x", "instances": []}\n',
        "instances",
    ),
    "selfinstruct_bad_classification": (
        "a.jsonl",
        b'{"instruction": "x", "instances": [{"input": "", "output": "y"}], "is_classification": "yes"}\n',
        "is_classification",
    ),
    "array_not_closed": ("a.json", b'[{"instruction": "a"}', "not closed"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_is_rejected_and_pool_unchanged(
    project_dir: Path, tmp_path: Path, capsys, case: str
) -> None:
    name, content, expected = MALFORMED[case]
    good = write_jsonl(tmp_path / "good.jsonl", ALPACA)
    path = tmp_path / name
    path.write_bytes(content)
    before = pool_snapshot(project_dir)
    args = ["seed", "add", good, path, "-p", project_dir]
    if case == "missing_instruction_forced":
        args += ["--format", "alpaca"]
    result = run_cli(capsys, *args)
    assert result.code == 2, (result.out, result.err)
    assert expected in result.err, result.err
    assert str(path) in result.err.replace("\n", "")
    assert len(result.err.strip().splitlines()) <= 4
    assert (
        pool_snapshot(project_dir) == before
    )  # the good file in the same call wrote nothing either


def test_unknown_format_flag(project_dir: Path, tmp_path: Path, capsys) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    result = run_cli(capsys, "seed", "add", path, "--format", "yaml", "-p", project_dir)
    assert result.code == 2 and "--format" in result.err
