"""Seed import: every format, round trips through export, idempotence, and malformed input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evoinstruct.store.seeds import read_seed_file
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
    with (tmp / "seeds.tsv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"], delimiter="\t")
        writer.writeheader()
        for row in ALPACA:
            writer.writerow(row)
    files["tsv"] = tmp / "seeds.tsv"
    return files


EXPECTED_FORMAT = {
    "alpaca_json": "alpaca",
    "alpaca_jsonl": "alpaca",
    "selfinstruct": "selfinstruct",
    "sharegpt": "sharegpt",
    "openai": "openai",
    "text": "text",
    "csv": "csv",
    "tsv": "tsv",
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


# --- InstructLab taxonomy qna.yaml ---------------------------------------------------------

QNA_SKILL_EN = """\
version: 2
created_by: alice
task_description: Turn a blunt sentence into a polite request.
seed_examples:
  - context: Give me the report.
    question: Make this sentence polite.
    answer: Could you please send me the report?
  - question: |
      Rewrite as a polite request: close the door.
    answer: Would you mind closing the door?
  - question: "Is 'Move.' polite?"
    answer: "No; try: 'Could you please move?'"
"""

QNA_KNOWLEDGE_ZH = """\
version: 3
created_by: 李雷
domain: 地理
document_outline: 长江的基本信息
document:
  repo: https://example.com/rivers.git
  commit: 0123abc
  patterns:
    - changjiang.md
seed_examples:
  - context: |
      长江是中国最长的河流，全长约6300公里。
    questions_and_answers:
      - question: 长江有多长？
        answer: 约6300公里。
      - question: 中国最长的河流是哪条？
        answer: 长江。
  - context: 长江流经上海，注入东海。
    questions_and_answers:
      - question: 长江在哪里入海？
        answer: 在上海注入东海。
"""


def write_qna(tmp: Path) -> tuple[Path, Path]:
    (tmp / "skill").mkdir(exist_ok=True)
    (tmp / "knowledge").mkdir(exist_ok=True)
    skill = tmp / "skill" / "qna.yaml"
    knowledge = tmp / "knowledge" / "qna.yml"
    skill.write_text(QNA_SKILL_EN, encoding="utf-8")
    knowledge.write_text(QNA_KNOWLEDGE_ZH, encoding="utf-8")
    return skill, knowledge


def test_qna_skill_gives_one_example_per_seed_example(tmp_path: Path) -> None:
    skill, _ = write_qna(tmp_path)
    seeds = read_seed_file(skill)
    assert (seeds.format, seeds.records, len(seeds.drafts)) == ("qna", 3, 3)
    assert [(d.instruction, d.input, d.output) for d in seeds.drafts] == [
        (
            "Make this sentence polite.",
            "Give me the report.",
            "Could you please send me the report?",
        ),
        ("Rewrite as a polite request: close the door.", "", "Would you mind closing the door?"),
        ("Is 'Move.' polite?", "", "No; try: 'Could you please move?'"),
    ]
    assert [d.meta for d in seeds.drafts] == [
        {"seed_file": str(skill), "qna_kind": "skill", "qna_example": i} for i in range(3)
    ]
    assert all(d.source == "seed" and d.language == "en" for d in seeds.drafts)


def test_qna_knowledge_gives_one_example_per_question(tmp_path: Path) -> None:
    _, knowledge = write_qna(tmp_path)
    seeds = read_seed_file(knowledge)
    assert (seeds.format, seeds.records, len(seeds.drafts)) == ("qna", 2, 3)
    context = "长江是中国最长的河流，全长约6300公里。"
    assert [(d.instruction, d.input, d.output) for d in seeds.drafts] == [
        ("长江有多长？", context, "约6300公里。"),
        ("中国最长的河流是哪条？", context, "长江。"),
        ("长江在哪里入海？", "长江流经上海，注入东海。", "在上海注入东海。"),
    ]
    assert [(d.meta["qna_example"], d.meta["qna_pair"]) for d in seeds.drafts] == [
        (0, 0),
        (0, 1),
        (1, 0),
    ]
    assert {d.meta["seed_file"] for d in seeds.drafts} == {str(knowledge)}
    assert {d.meta["qna_kind"] for d in seeds.drafts} == {"knowledge"}
    assert all(d.language == "zh" for d in seeds.drafts)


def test_qna_files_import_through_the_cli(project_dir: Path, tmp_path: Path, capsys) -> None:
    from evoinstruct.store import open_store

    skill, knowledge = write_qna(tmp_path)
    result = run_cli(capsys, "seed", "add", skill, knowledge, "-p", project_dir, "--json")
    assert result.code == 0, result.err
    assert [(r["format"], r["records"], r["examples"], r["inserted"]) for r in result.json()] == [
        ("qna", 3, 3, 3),
        ("qna", 2, 3, 3),
    ]
    with open_store(project_dir / "pool.db") as store:
        pool = {e.instruction: e for e in store.iter_examples()}
    assert len(pool) == 6
    answer = pool["长江在哪里入海？"]
    assert (answer.input, answer.output, answer.status) == (
        "长江流经上海，注入东海。",
        "在上海注入东海。",
        "accepted",
    )
    assert answer.meta["seed_file"] == str(knowledge) and answer.meta["qna_example"] == 1
    again = run_cli(capsys, "seed", "add", skill, "-p", project_dir, "--json")
    assert again.json()[0]["inserted"] == 0 and again.json()[0]["duplicates"] == 3


def test_explicit_text_format_reads_any_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("Write a poem about rain.\n写一首关于雨的诗。\n", encoding="utf-8")
    seeds = read_seed_file(path, "text")
    assert [d.instruction for d in seeds.drafts] == [
        "Write a poem about rain.",
        "写一首关于雨的诗。",
    ]


def test_unknown_suffix_with_json_of_a_known_shape_is_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "alpaca.ndjson", ALPACA)
    seeds = read_seed_file(path)
    assert seeds.format == "alpaca" and len(seeds.drafts) == 3


def pool_snapshot(project: Path) -> list[tuple]:
    from evoinstruct.store import open_store

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
    from evoinstruct.graph.project import init_project

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
    # Input that is not what its name claims is refused, never read as plain text.
    "json_that_is_text": ("not_json.json", b"hello {", "not_json.json:1: malformed JSON"),
    "jsonl_with_a_text_line_first": (
        "a.jsonl",
        b'just words\n{"instruction": "ok"}\n',
        "a.jsonl:1: malformed JSON",
    ),
    "unknown_suffix": (
        "notes.md",
        "# 笔记\nWrite a poem.\n".encode(),
        "unknown file suffix '.md' and the content is not JSON",
    ),
    "unknown_suffix_not_json": (
        "links.md",
        b"[a link](http://example.com)\n",
        "links.md:1: unknown file suffix '.md', and read as JSON: malformed JSON",
    ),
    "no_suffix": ("README", b"Write a poem.\n", "no file suffix"),
    "qna_missing_answer": (
        "qna.yaml",
        "version: 2\ncreated_by: a\ntask_description: t\nseed_examples:\n"
        "  - question: 一加一等于几？\n    answer: 二。\n"
        "  - question: 二加二等于几？\n".encode(),
        "qna.yaml:7, field 'seed_examples[1].answer': missing",
    ),
    "qna_knowledge_missing_answer": (
        "qna.yaml",
        "version: 3\ndomain: d\ndocument_outline: o\ndocument: {patterns: [a.md]}\n"
        "seed_examples:\n  - context: 上下文\n    questions_and_answers:\n"
        "      - question: 问？\n        answer: 答。\n"
        "      - question: 又问？\n".encode(),
        "qna.yaml:10, field 'seed_examples[0].questions_and_answers[1].answer': missing",
    ),
    "yaml_not_qna": (
        "config.yaml",
        b"name: demo\nitems: [1, 2]\n",
        "config.yaml:1, field 'seed_examples': not an InstructLab qna document",
    ),
    "yaml_list": ("list.yml", b"- a\n- b\n", "not an InstructLab qna document"),
    "qna_syntax_error": (
        "qna.yaml",
        b"version: 2\nseed_examples:\n  - question: q\n    answer: a\n   extra: x\n",
        "qna.yaml:5: invalid YAML (column 4)",
    ),
    "qna_answer_not_string": (
        "qna.yaml",
        b"version: 2\nseed_examples:\n  - question: How many legs has a cat?\n    answer: 4\n",
        "qna.yaml:4, field 'seed_examples[0].answer': expected a string, found int",
    ),
    "qna_empty_question": (
        "qna.yaml",
        b'version: 2\nseed_examples:\n  - question: "  "\n    answer: a\n',
        "qna.yaml:3, field 'seed_examples[0].question': empty",
    ),
    "qna_answer_without_value": (
        "qna.yaml",
        b"version: 2\nseed_examples:\n  - question: q\n    answer:\n",
        "field 'seed_examples[0].answer': empty",
    ),
    "qna_unknown_key": (
        "qna.yaml",
        b"version: 2\nseed_examples:\n  - question: q\n    answer: a\n    contxt: c\n",
        "qna.yaml:5, field 'seed_examples[0].contxt': unknown key",
    ),
    "qna_duplicate_key": (
        "qna.yaml",
        b"version: 2\nseed_examples:\n  - question: q\n    answer: a\n    answer: b\n",
        "qna.yaml:5, field 'seed_examples[0].answer': key 'answer' appears twice",
    ),
    "qna_no_version": (
        "qna.yaml",
        b"seed_examples:\n  - question: q\n    answer: a\n",
        "field 'version': missing",
    ),
    "qna_unknown_version": (
        "qna.yaml",
        b"version: 1\nseed_examples:\n  - question: q\n    answer: a\n",
        "qna.yaml:1, field 'version': expected one of (2, 3)",
    ),
    "qna_no_seed_examples": (
        "qna.yaml",
        b"version: 2\nseed_examples: []\n",
        "qna.yaml:2, field 'seed_examples': expected a non-empty list",
    ),
    "alpaca_misspelt_output": (
        "a.jsonl",
        b'{"instruction": "Name a river.", "ouput": "The Nile."}\n',
        "a.jsonl:1, field 'ouput': record 1: unknown key 'ouput': did you mean 'output'?",
    ),
    "alpaca_dolly_response": (
        "dolly.jsonl",
        b'{"instruction": "x", "context": "", "response": "y", "category": "qa"}\n',
        "dolly.jsonl:1, field 'response': record 1: unknown key 'response': this format reads 'output'",
    ),
    "alpaca_chinese_answer_key": (
        "zh.jsonl",
        '{"instruction": "列出三种水果。", "回答": "苹果、香蕉、橙子"}\n'.encode(),
        "zh.jsonl:1, field '回答': record 1: unknown key '回答': this format reads 'output'",
    ),
    "csv_misspelt_column": (
        "a.csv",
        b"instruction,sytem\nName a river.,be brief\n",
        "a.csv:1, field 'sytem': unknown key 'sytem': did you mean 'system'?",
    ),
    "csv_question_column": (
        "q.csv",
        b"question,answer\nName a river.,The Nile.\n",
        "q.csv:1, field 'instruction': no 'instruction' column (columns: question, answer); rename the column 'question' to 'instruction'",
    ),
    # A missing required field gets the did-you-mean a misspelt extra key gets.
    "alpaca_misspelt_instruction": (
        "a.jsonl",
        b'{"instrution": "Name a river.", "output": "The Nile."}\n',
        "a.jsonl:1: unrecognized record shape (expected instruction, instances, conversations "
        "or messages; found keys: 'instrution', 'output'); pass --format to force one; found "
        "'instrution': did you mean 'instruction'?",
    ),
    "alpaca_misspelt_instruction_forced": (
        "c.jsonl",
        '{"instruction": "ok"}\n{"指令x": "", "Instrucion": "列出三种水果。"}\n'.encode(),
        "c.jsonl:2, field 'instruction': record 2: missing; found 'Instrucion': did you mean "
        "'instruction'?",
    ),
    "csv_misspelt_instruction_column": (
        "m.csv",
        b"instrution,output\nName a river.,The Nile.\n",
        "m.csv:1, field 'instruction': no 'instruction' column (columns: instrution, output); "
        "found 'instrution': did you mean 'instruction'?",
    ),
    "qna_misspelt_answer": (
        "qna.yaml",
        "version: 2\nseed_examples:\n  - question: 列出三种水果。\n    anwser: 苹果\n".encode(),
        "field 'seed_examples[0].anwser': unknown key 'anwser': did you mean 'answer'? "
        "(expected question, answer, context)",
    ),
    "qna_python_tag": (
        "qna.yaml",
        b"version: 2\nseed_examples: !!python/object/apply:os.getcwd []\n",
        "qna.yaml:2: invalid YAML",
    ),
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
    if case in ("missing_instruction_forced", "alpaca_misspelt_instruction_forced"):
        args += ["--format", "alpaca"]
    result = run_cli(capsys, *args)
    assert result.code == 2, (result.out, result.err)
    assert expected in result.err, result.err
    assert str(path) in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert (
        pool_snapshot(project_dir) == before
    )  # the good file in the same call wrote nothing either


def test_unknown_format_flag(project_dir: Path, tmp_path: Path, capsys) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    result = run_cli(capsys, "seed", "add", path, "--format", "yaml", "-p", project_dir)
    assert result.code == 2 and "--format" in result.err


# --- text the readers must keep, and real-world habits they accept ---------------------------

# Characters str.splitlines() breaks at, which are ordinary text inside a record.
LINE_BREAKERS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_line_separators_inside_records_survive_a_round_trip(tmp_path: Path, capsys) -> None:
    from evoinstruct.graph.project import init_project

    rows = [
        {
            "instruction": f"Explain{ch}this 第{i}段",
            "input": f"上下文{ch}context",
            "output": f"answer{ch}答案",
        }
        for i, ch in enumerate(LINE_BREAKERS)
    ]
    path = write_jsonl(tmp_path / "breakers.jsonl", rows)
    seeds = read_seed_file(path)
    assert [(d.instruction, d.input, d.output) for d in seeds.drafts] == [
        (r["instruction"], r["input"], r["output"]) for r in rows
    ]
    first = init_project(tmp_path / "a").root
    assert run_cli(capsys, "seed", "add", path, "-p", first).code == 0
    for suffix in ("jsonl", "json"):
        second = init_project(tmp_path / f"b-{suffix}").root
        out = tmp_path / f"export.{suffix}"
        result = run_cli(capsys, "export", "-o", out, "--status", "all", "-p", first)
        assert result.code == 0, result.err
        result = run_cli(capsys, "seed", "add", out, "-p", second)
        assert result.code == 0, result.err
        assert pool_snapshot(second) == pool_snapshot(first)


def test_text_lines_end_at_lf_or_crlf_only(tmp_path: Path) -> None:
    path = tmp_path / "instructions.txt"
    path.write_bytes(
        "Write a poem\u2028about rain.\r\n写一首诗\x0c关于雨。\n# 注释\r\nName a colour.".encode()
    )
    seeds = read_seed_file(path)
    assert [d.instruction for d in seeds.drafts] == [
        "Write a poem\u2028about rain.",
        "写一首诗\x0c关于雨。",
        "Name a colour.",
    ]


def test_csv_with_bom_crlf_and_line_breaks_in_fields(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffInstruction,Input,Output\r\n"
        '"Summarize,\r\nbriefly",text\u2028more,"好的\n第二行"\r\n'
        "翻译成英文,我喜欢读书。,I like reading.\r\n".encode()
    )
    seeds = read_seed_file(path)
    assert [(d.instruction, d.input, d.output) for d in seeds.drafts] == [
        ("Summarize,\r\nbriefly", "text\u2028more", "好的\n第二行"),
        ("翻译成英文", "我喜欢读书。", "I like reading."),
    ]


def test_tsv_reads_its_header_and_quoted_fields(tmp_path: Path) -> None:
    path = tmp_path / "seeds.tsv"
    path.write_text(
        'instruction\tinput\toutput\n"Split\tthis"\t\t"a\nb"\n列出水果\t\t苹果\n', encoding="utf-8"
    )
    seeds = read_seed_file(path)
    assert (seeds.format, seeds.records) == ("tsv", 2)
    assert [(d.instruction, d.output) for d in seeds.drafts] == [
        ("Split\tthis", "a\nb"),
        ("列出水果", "苹果"),
    ]
    forced = tmp_path / "seeds.txt"
    forced.write_bytes(path.read_bytes())
    assert read_seed_file(forced, "tsv").drafts == seeds.drafts


def test_crlf_json_and_jsonl_are_read_and_lines_counted(tmp_path: Path) -> None:
    array = tmp_path / "crlf.json"
    array.write_bytes(
        json.dumps(ALPACA, ensure_ascii=False, indent=2).replace("\n", "\r\n").encode()
    )
    assert len(read_seed_file(array).drafts) == 3
    lines = tmp_path / "crlf.jsonl"
    rows = [json.dumps(r, ensure_ascii=False) for r in ALPACA]
    lines.write_bytes("\r\n".join([*rows[:2], '{"instruction": 7}', ""]).encode())
    from evoinstruct.store.errors import InputError

    with pytest.raises(InputError) as caught:
        read_seed_file(lines)
    assert (caught.value.line, caught.value.field) == (3, "instruction")


def test_duplicate_json_keys_keep_the_last_value(tmp_path: Path) -> None:
    """Documented: as json.loads and every mainstream JSON reader do, the last value wins."""
    path = tmp_path / "dup.jsonl"
    path.write_text('{"instruction": "旧的", "instruction": "Write a poem."}\n', encoding="utf-8")
    assert [d.instruction for d in read_seed_file(path).drafts] == ["Write a poem."]


def test_an_escaped_surrogate_pair_is_one_character(tmp_path: Path) -> None:
    path = tmp_path / "emoji.jsonl"
    path.write_text('{"instruction": "Reply with \\ud83d\\ude00 only."}\n', encoding="utf-8")
    assert read_seed_file(path).drafts[0].instruction == "Reply with \U0001f600 only."


def test_a_record_just_under_the_limit_is_read(tmp_path: Path) -> None:
    from evoinstruct.store.seeds import MAX_RECORD_BYTES

    text = "长" * ((MAX_RECORD_BYTES - 100) // 3)
    path = write_jsonl(tmp_path / "long.jsonl", [{"instruction": text}])
    assert read_seed_file(path).drafts[0].instruction == text
    array = write_json(tmp_path / "long.json", [{"instruction": text}, ALPACA[0]])
    assert len(read_seed_file(array).drafts) == 2


def test_qna_under_a_folder_whose_name_is_not_utf8(
    project_dir: Path, tmp_path: Path, capsys
) -> None:
    import os

    from evoinstruct.store import open_store

    folder = Path(os.fsdecode(bytes(tmp_path) + b"/taxonomy-\xff"))
    try:
        folder.mkdir()
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    skill = folder / "qna.yaml"
    skill.write_text(QNA_SKILL_EN, encoding="utf-8")
    result = run_cli(capsys, "seed", "add", skill, "-p", project_dir)
    assert result.code == 0, result.err
    with open_store(project_dir / "pool.db") as store:
        files = {e.meta["seed_file"] for e in store.iter_examples()}
    assert files == {str(tmp_path) + "/taxonomy-\\xff/qna.yaml"}
