"""A corpus of malformed seed files that `evoinstruct seed add` must refuse.

`write_hostile_inputs(dir)` writes every case into `dir` and returns them. Each must
end the import with exit code 2 and one stderr line that names the file (as `shown`
prints it), the line and the field where the case has them, and leaves the pool as it
was. Used by tests/test_seed_hostile.py and meant for benchmarks (bench/torture.py).

Two cases are special on disk: `too_large` is a sparse file just over the size limit
(it takes no space; copying it would), and `permission_denied` cannot deny root
(`skip` says so).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evoinstruct.store.seeds import MAX_FILE_BYTES, MAX_QNA_BYTES, MAX_RECORD_BYTES

Content = str | bytes | Callable[[], str | bytes]


@dataclass(frozen=True)
class HostileCase:
    """One malformed input and what the one-line refusal must say about it."""

    name: str
    path: Path
    expect_line: int | None
    expect_field: str | None
    expect_text: str  # a phrase of the message
    args: tuple[str, ...] = ()  # more `seed add` arguments, such as ("--format", "tsv")
    skip: str | None = None  # why this case cannot run here, if it cannot
    make: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)

    @property
    def shown(self) -> str:
        """The file name as the error line prints it."""
        return shown(self.path)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.make is not None:
            self.make(self.path)


def shown(path: Path | str) -> str:
    """Bytes that are not UTF-8 as \\xNN, then control characters and line separators
    escaped, as the CLI's errors print a file name."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _jsonl(*rows: object) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


GOOD_EN = {"instruction": "Name three rivers in Europe.", "output": "Danube, Rhine, Loire."}
GOOD_ZH = {
    "instruction": "把这句话翻译成英文。",
    "input": "今天天气很好。",
    "output": "The weather is nice today.",
}
QNA_HEAD = "version: 2\ncreated_by: 李雷\ntask_description: 礼貌地改写句子\nseed_examples:\n"


def _billion_laughs() -> str:
    lines = ['a: &a "哈"']
    for level in range(1, 10):
        prev = chr(ord("a") + level - 1)
        name = chr(ord("a") + level)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    # Line 1 is `version`; the first alias is on line 3 (b: &b [*a, ...]).
    return "version: 2\n" + "\n".join(lines) + "\nseed_examples: *j\n"


def _alias_amplification() -> str:
    # 100 KB of text, aliased as the question and answer of 5,000 examples: a 130 KB file
    # that would put a gigabyte into the pool.
    text = "长" * 33_000
    examples = ", ".join(["*e"] * 5000)
    return (
        f'version: 2\ntask_description: &text "{text}"\n'
        f"seed_examples: [&e {{question: *text, answer: *text}}, {examples}]\n"
    )


def write_hostile_inputs(directory: Path | str) -> list[HostileCase]:
    """Write every case under `directory` (created if needed) and return them."""
    cases = hostile_cases(directory)
    for case in cases:
        case.write()
    return cases


def _contents(content: Content) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        data = content() if callable(content) else content
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)

    return write


def _sparse(size: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as fh:  # no disk space taken, and never read
            fh.truncate(size)

    return write


def _chmod0(content: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(content, encoding="utf-8")
        path.chmod(0)

    return write


def hostile_cases(directory: Path | str) -> list[HostileCase]:
    """The cases and where they would be written, without touching the disk."""
    root = Path(directory)
    cases: list[HostileCase] = []

    def add(
        name: str,
        filename: str,
        content: Content | None,
        line: int | None,
        field_name: str | None,
        text: str,
        args: tuple[str, ...] = (),
        skip: str | None = None,
        make: Callable[[Path], None] | None = None,
    ) -> None:
        if content is not None:
            make = _contents(content)
        path = root / name / filename
        cases.append(HostileCase(name, path, line, field_name, text, args, skip, make))

    good_lines = _jsonl(GOOD_EN, GOOD_ZH)

    # --- JSON and JSON Lines: syntax ---------------------------------------------------------
    add(
        "json_array_truncated",
        "seeds.json",
        '[\n  {"instruction": "写一首诗", "output": "床前明月光"},\n  {"instruction": "Summarize the te',
        3,
        None,
        "malformed JSON: Unterminated string",
    )
    add(
        "json_array_not_closed",
        "seeds.json",
        '[\n  {"instruction": "写一首诗"},\n  {"instruction": "Write a poem."}\n\n',
        3,
        None,
        "the array is not closed",
    )
    add(
        "json_trailing_garbage",
        "seeds.json",
        '[{"instruction": "写一首诗"}]\n\nDEBUG: wrote 1 record\n',
        3,
        None,
        "extra data after the array",
    )
    add(
        "json_trailing_comma",
        "seeds.json",
        '[\n  {"instruction": "写一首诗"},\n  {"instruction": "Write a poem."},\n]\n',
        4,
        None,
        "a comma before ']'",
    )
    add(
        "json_missing_comma",
        "seeds.json",
        '[\n  {"instruction": "写一首诗"}\n  {"instruction": "Write a poem."}\n]\n',
        3,
        None,
        "expected ',' or ']'",
    )
    add("json_empty_array", "seeds.json", "[\n]\n", 2, None, "the JSON array is empty")
    add("json_top_level_number", "seeds.json", "42\n", 1, None, "found a number")
    add("json_top_level_string", "seeds.json", '"写一首诗"\n', 1, None, "found a string")
    add(
        "json_object_not_records",
        "seeds.json",
        json.dumps({"version": 1, "data": [GOOD_EN, GOOD_ZH]}, ensure_ascii=False, indent=2),
        1,
        None,
        "records seem to be the list under 'data'",
    )
    add(
        "jsonl_pretty_printed_records",
        "seeds.jsonl",
        "".join(json.dumps(r, ensure_ascii=False, indent=2) + "\n" for r in (GOOD_EN, GOOD_ZH)),
        1,
        None,
        "a JSON object spans lines 1-4",
    )
    add(
        "jsonl_two_records_on_one_line",
        "seeds.jsonl",
        good_lines + '{"instruction": "甲"} {"instruction": "乙"}\n',
        3,
        None,
        "malformed JSON: Extra data",
    )
    add(
        "jsonl_bom_inside_the_file",  # two files concatenated, each with its own BOM
        "seeds.jsonl",
        "\ufeff" + good_lines + "\ufeff" + _jsonl({"instruction": "拼接的文件"}),
        3,
        None,
        "a byte-order mark inside the file",
    )
    add(
        "jsonl_cr_only_line_endings",
        "seeds.jsonl",
        good_lines.replace("\n", "\r"),
        1,
        None,
        "bare carriage return",
    )
    add(
        "json_array_deep_nesting",
        "seeds.json",
        lambda: (
            '[\n{"instruction": "深", "output": "x"},\n{"instruction": "deep", "output": '
            + "[" * 5000
            + "]" * 5000
            + "}\n]\n"
        ),
        3,
        None,
        "nested too deeply",
    )
    add(
        "jsonl_deep_nesting",
        "seeds.jsonl",
        lambda: (
            good_lines
            + '{"instruction": "deep", "meta": '
            + '{"a": ' * 100_000
            + "1"
            + "}" * 100_001
            + "\n"
        ),
        3,
        None,
        "nested too deeply",
    )
    add(
        "json_integer_too_long",  # int() refuses more than 4300 digits: a ValueError
        "seeds.json",
        '[\n{"instruction": "写一首诗"},\n{"instruction": "Count.", "id": 1' + "0" * 5000 + "}\n]",
        3,
        None,
        "a number too long to read",
    )
    add(
        "jsonl_integer_too_long",
        "seeds.jsonl",
        good_lines + '{"instruction": "Count.", "id": -' + "9" * 5000 + "}\n",
        3,
        None,
        "a number too long to read",
    )
    add(
        "jsonl_record_too_large",
        "seeds.jsonl",
        lambda: good_lines + _jsonl({"instruction": "长" * (MAX_RECORD_BYTES // 3 + 1)}),
        3,
        None,
        "larger than 1 MiB",
    )

    # --- JSON: text that cannot be stored -----------------------------------------------------
    add(
        "jsonl_lone_surrogate",
        "seeds.jsonl",
        good_lines + '{"instruction": "broken \\ud800 emoji", "output": "好"}\n',
        3,
        "instruction",
        "lone surrogate \\ud800",
    )
    add(
        "sharegpt_lone_surrogate",
        "sharegpt.json",
        '[\n  {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "hi"}]},\n'
        '  {"conversations": [{"from": "human", "value": "Hi"}, '
        '{"from": "gpt", "value": "half a pair: \\udfff"}]}\n]\n',
        3,
        "conversations[1].value",
        "lone surrogate \\udfff",
    )

    # --- JSON: records of the wrong shape or type ---------------------------------------------
    add(
        "jsonl_record_is_an_array",
        "seeds.jsonl",
        good_lines + '["instruction", "写一首诗"]\n',
        3,
        "(record)",
        "expected a JSON object, found an array",
    )
    add(
        "alpaca_instruction_number",
        "seeds.jsonl",
        good_lines + '{"instruction": 42, "output": "四十二"}\n',
        3,
        "instruction",
        "expected a string, found a number",
    )
    add(
        "alpaca_output_object",
        "seeds.jsonl",
        good_lines + '{"instruction": "翻译", "output": {"text": "translate"}}\n',
        3,
        "output",
        "found an object",
    )
    add(
        "alpaca_output_nan",
        "seeds.jsonl",
        good_lines + '{"instruction": "Give a number.", "output": NaN}\n',
        3,
        "output",
        "found a number",
    )
    add(
        "alpaca_system_list",
        "seeds.jsonl",
        good_lines + '{"instruction": "Be brief.", "system": ["你是助手"]}\n',
        3,
        "system",
        "found an array",
    )
    add(
        "unrecognized_shape_key_with_newline",
        "seeds.json",
        '[{"prompt\\nline two": "写一首诗", "response": "床前明月光"}]',
        1,
        None,
        "unrecognized record shape",
    )
    add(
        "jsonl_records_nested_one_level_down",
        "seeds.jsonl",
        json.dumps({"train": [GOOD_EN, GOOD_ZH]}, ensure_ascii=False) + "\n",
        1,
        None,
        "records seem to be the list under 'train'",
    )
    sharegpt_ok = {
        "conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]
    }
    add(
        "sharegpt_unknown_role",
        "sharegpt.jsonl",
        _jsonl(
            sharegpt_ok,
            {
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "bot", "value": "Hello"},
                ]
            },
        ),
        2,
        "conversations[1].from",
        "unknown role 'bot'",
    )
    add(
        "sharegpt_role_not_a_string",
        "sharegpt.jsonl",
        _jsonl(sharegpt_ok, {"conversations": [{"from": ["human"], "value": "Hi"}]}),
        2,
        "conversations[0].from",
        "unknown role an array",
    )
    add(
        "sharegpt_system_not_a_string",
        "sharegpt.jsonl",
        _jsonl(sharegpt_ok, {**sharegpt_ok, "system": {"text": "你是助手"}}),
        2,
        "system",
        "expected a string, found an object",
    )
    add(
        "openai_content_null",
        "openai.jsonl",
        _jsonl(
            {
                "messages": [
                    {"role": "user", "content": "天空为什么是蓝色的？"},
                    {"role": "assistant", "content": None},
                ]
            }
        ),
        1,
        "messages[1]",
        "with a string content",
    )
    add(
        "openai_assistant_first",
        "openai.jsonl",
        _jsonl(
            {
                "messages": [
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "你好"},
                ]
            }
        ),
        1,
        "messages[0]",
        "expected a user turn",
    )
    selfinstruct_ok = {
        "id": "seed_task_0",
        "name": "antonyms",
        "instruction": "Give the antonym.",
        "instances": [{"input": "hot", "output": "cold"}],
        "is_classification": False,
    }
    add(
        "selfinstruct_instances_not_a_list",
        "seed_tasks.jsonl",
        _jsonl(selfinstruct_ok, {**selfinstruct_ok, "instances": {"input": "大", "output": "小"}}),
        2,
        "instances",
        "expected a non-empty list",
    )
    add(
        "selfinstruct_nested_id",
        "seed_tasks.jsonl",
        _jsonl(selfinstruct_ok, {**selfinstruct_ok, "id": {"task": [1, [2, [3]]]}}),
        2,
        "id",
        "expected a string, found an object",
    )
    add(
        "forced_format_does_not_fit",
        "seeds.jsonl",
        good_lines,
        1,
        "conversations",
        "expected a non-empty list",
        args=("--format", "sharegpt"),
    )

    # --- CSV and TSV ---------------------------------------------------------------------------
    add(
        "csv_huge_field",
        "seeds.csv",
        lambda: (
            "instruction,input,output\n写一首诗,,床前明月光\nSummarize the text.,"
            + "x" * (20 << 20)
            + ",Short.\n"
        ),
        3,
        "input",
        "larger than 1 MiB",
    )
    add(
        "csv_unclosed_quote",
        "seeds.csv",
        'instruction,input,output\n写一首诗,,床前明月光\nTranslate.,"hello, world,\n'
        "Name a colour.,,Blue.\n总结,一段话,好\n",
        3,
        "input",
        "never closed",
    )
    add(
        "csv_unclosed_quote_after_multiline_field",
        "seeds.csv",
        'instruction,input,output\n"Line one\nline two",上下文,"答案\n'
        "第二行\nName a colour.,,Blue.\n",
        3,
        "output",
        "never closed",
    )
    add(
        "csv_text_after_closing_quote",
        "seeds.csv",
        'instruction,output\n写一首诗,床前明月光\n"Hamlet" is a play. Summarize it.,ok\n',
        3,
        None,
        "malformed CSV",
    )
    add(
        "csv_duplicate_column",
        "seeds.csv",
        "instruction,output,Output\n写一首诗,床前明月光,静夜思\n",
        1,
        "output",
        "appears twice",
    )
    add(
        "csv_more_values_than_columns",
        "seeds.csv",
        "instruction,output\n写一首诗,床前明月光\nList fruits,apples,pears\n",
        3,
        None,
        "more values than columns",
    )
    add(
        "csv_header_only",
        "seeds.csv",
        "\ufeffinstruction,input,output\r\n",
        2,
        None,
        "header but no rows",
    )
    add(
        "csv_that_is_tab_separated",
        "seeds.csv",
        "instruction\tinput\toutput\n写一首诗\t\t床前明月光\n",
        1,
        "instruction",
        "if this is TSV, name it .tsv",
    )
    add(
        "tsv_that_is_comma_separated",
        "seeds.tsv",
        "instruction,input,output\n写一首诗,,床前明月光\n",
        1,
        "instruction",
        "if this is CSV, name it .csv",
    )
    add(
        "tsv_blank_instruction",
        "seeds.tsv",
        "instruction\toutput\n写一首诗\t床前明月光\n \tNo instruction.\n",
        3,
        "instruction",
        "blank",
    )
    add(
        "tsv_unclosed_quote",
        "seeds.tsv",
        'instruction\toutput\n"Say hi\thello\nName a colour.\tBlue.\n',
        2,
        "instruction",
        "never closed",
    )

    # --- bytes and encodings -------------------------------------------------------------------
    filler = _jsonl(*({"instruction": f"第{i}题：Explain item {i}."} for i in range(400)))
    add(
        "nul_after_8_kib",
        "seeds.jsonl",
        filler + '{"instruction": "after the first 8 KiB\x00"}\n',
        401,
        None,
        "NUL byte",
    )
    add(
        "invalid_utf8_gbk",
        "seeds.jsonl",
        good_lines.encode() + '{"instruction": "用GBK保存的文件"}\n'.encode("gbk"),
        3,
        None,
        "not valid UTF-8",
    )
    add(
        "invalid_utf8_text",
        "instructions.txt",
        "Write a poem.\n写一首诗。\n".encode() + "naïve café\n".encode("latin-1"),
        3,
        None,
        "not valid UTF-8",
    )
    add(
        "utf16_le_with_bom",
        "seeds.jsonl",
        codecs.BOM_UTF16_LE + good_lines.encode("utf-16-le"),
        1,
        None,
        "UTF-16 text; save it as UTF-8",
    )
    add(
        "utf16_be_with_bom",
        "seeds.csv",
        codecs.BOM_UTF16_BE + "instruction,output\n写一首诗,床前明月光\n".encode("utf-16-be"),
        1,
        None,
        "UTF-16 text; save it as UTF-8",
    )
    add(
        "utf16_without_bom",
        "instructions.txt",
        "Write a poem.\nName a colour.\n".encode("utf-16-le"),
        1,
        None,
        "looks like UTF-16",
    )
    add(
        "utf32_with_bom",
        "seeds.jsonl",
        good_lines.encode("utf-32"),
        1,
        None,
        "UTF-32 text",
    )
    add("empty_file", "seeds.jsonl", b"", None, None, "the file is empty")
    add("bom_only", "seeds.csv", codecs.BOM_UTF8, None, None, "only a byte-order mark")
    add("whitespace_only", "seeds.jsonl", "\n \t\r\n\u3000\n", None, None, "only white space")
    add(
        "binary_named_json",
        "seeds.json",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        3,  # the line of the first NUL
        None,
        "binary file",
    )

    # --- things that are not a readable regular file -------------------------------------------
    add("a_folder", "seeds.jsonl", None, None, None, "this is a folder", make=Path.mkdir)
    add("missing_file", "seeds.jsonl", None, None, None, "no such file")
    add(
        "broken_symlink",
        "seeds.jsonl",
        None,
        None,
        None,
        "a symbolic link to a missing file",
        make=lambda path: path.symlink_to(path.with_name("gone.jsonl")),
    )
    add("named_pipe", "seeds.jsonl", None, None, None, "named pipe (FIFO)", make=os.mkfifo)
    add(
        "character_device",
        "seeds.jsonl",
        None,
        None,
        None,
        "a character device",
        make=lambda path: path.symlink_to("/dev/zero"),
    )
    add(
        "permission_denied",
        "seeds.jsonl",
        None,
        None,
        None,
        "permission denied",
        skip="root reads any file" if os.geteuid() == 0 else None,
        make=_chmod0(good_lines),
    )
    add(
        "too_large",
        "seeds.jsonl",
        None,
        None,
        None,
        f"larger than the {MAX_FILE_BYTES >> 30} GiB limit",
        make=_sparse(MAX_FILE_BYTES + 1),
    )
    add(
        "name_not_utf8",
        os.fsdecode(b"seeds-\xff\xfe.jsonl"),
        good_lines + "{not json}\n",
        3,
        None,
        "malformed JSON",
    )
    add(
        "name_with_a_newline",
        "bad\nname\u2028.jsonl",
        good_lines + "{not json}\n",
        3,
        None,
        "malformed JSON",
    )

    # --- plain text ----------------------------------------------------------------------------
    add(
        "text_line_too_long",
        "instructions.txt",
        lambda: "Write a poem.\n" + "长" * (MAX_RECORD_BYTES // 3 + 1) + "\n",
        2,
        None,
        "larger than 1 MiB",
    )
    add(
        "text_cr_only_line_endings",
        "instructions.txt",
        "Write a poem.\r写一首诗。\rName a colour.\r",
        1,
        None,
        "carriage return (CR) inside the line",
    )
    add(
        "text_only_comments",
        "instructions.txt",
        "# 只有注释\n# only comments\n\n",
        None,
        None,
        "no instructions",
    )

    # --- InstructLab qna.yaml ------------------------------------------------------------------
    add("qna_billion_laughs", "qna.yaml", _billion_laughs(), 3, None, "YAML alias *a")
    add("qna_alias_amplification", "qna.yaml", _alias_amplification, 3, None, "YAML alias *text")
    add(
        "qna_deep_nesting",
        "qna.yaml",
        QNA_HEAD + "  - question: " + "[" * 1500 + "\n",
        5,
        None,
        "nested too deeply",
    )
    add(
        "qna_lone_surrogate",
        "qna.yaml",
        QNA_HEAD + '  - question: "把它改得礼貌些：\\ud800"\n    answer: 好的。\n',
        5,
        "seed_examples[0].question",
        "lone surrogate \\ud800",
    )
    add(
        "qna_integer_too_long",
        "qna.yaml",
        QNA_HEAD + "  - question: 数一数\n    answer: " + "7" * 5000 + "\n",
        6,
        None,
        "a number too long to read",
    )
    add(
        "qna_control_character",
        "qna.yaml",
        QNA_HEAD + "  - question: 响铃\x07\n    answer: ding\n",
        5,
        None,
        "unacceptable character #x0007",
    )
    add(
        "qna_two_documents",
        "qna.yaml",
        "---\n" + QNA_HEAD + "  - {question: 问, answer: 答}\n---\nversion: 2\n",
        7,
        None,
        "expected a single document",
    )
    example = "  - question: 请礼貌地说：关门。\n    answer: 请您把门关上好吗？\n"
    add(
        "qna_too_large",
        "qna.yaml",
        lambda: QNA_HEAD + example * (MAX_QNA_BYTES // len(example) + 1),
        None,
        None,
        "a qna.yaml larger than",
    )
    return cases
