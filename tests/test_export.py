"""Export: the row shape comes from --format, the container from the output's suffix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evoinstruct.store.errors import InputError
from evoinstruct.store.export import ExportFilter, export, to_record
from evoinstruct.store.records import ExampleDraft
from tests.cli_helpers import run_cli

DRAFTS = [
    ExampleDraft(
        "Give three tips for staying healthy.", output="Eat well, sleep, move.", source="seed"
    ),
    ExampleDraft(
        "把句子翻译成英文。",
        "我喜欢读书。",
        "I like reading books.",
        system="你是一名翻译。",
        source="seed",
    ),
    ExampleDraft(
        "写一首诗。",
        output="春眠不觉晓。",
        source="seed",
        # Later turns of an imported conversation ride along in meta and are exported.
        meta={
            "extra_turns": [
                {"role": "user", "content": "再写一首。"},
                {"role": "assistant", "content": "床前明月光。"},
            ]
        },
    ),
    ExampleDraft("Summarize the text.", "A long text about rivers.", None, source="seed"),
]

SHAPES = ("alpaca", "sharegpt", "openai")
SUFFIXES = (".json", ".jsonl", ".parquet")


@pytest.fixture
def filled(store):
    store.add_candidates(DRAFTS, round=0)
    return store


def expected(store, fmt: str) -> list[dict[str, Any]]:
    return [to_record(e, fmt) for e in store.iter_examples()]


def read_back(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return json.loads(text)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("fmt", SHAPES)
def test_every_shape_round_trips_through_every_container(
    filled, tmp_path: Path, fmt: str, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    count = export(filled, fmt, out, ExportFilter(statuses=["all"]))
    rows = expected(filled, fmt)
    assert count == len(rows) == 4
    assert read_back(out) == rows
    head = out.read_bytes()[:4]
    assert (head == b"PAR1") == (suffix == ".parquet")
    assert not list(tmp_path.glob(".*.partial"))


def test_chat_rows_in_parquet_load_with_datasets(filled, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "chat.parquet"
    export(filled, "sharegpt", out, ExportFilter(statuses=["all"]))
    data = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert set(data.column_names) == {"conversations", "system"}
    poem = next(r for r in data if r["conversations"][0]["value"] == "写一首诗。")
    assert [t["from"] for t in poem["conversations"]] == ["human", "gpt", "human", "gpt"]


def test_parquet_with_lineage_keeps_types(filled, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "lineage.parquet"
    export(filled, "openai", out, ExportFilter(statuses=["all"]), with_lineage=True)
    table = pq.read_table(out)
    assert str(table.schema.field("round").type) == "int64"
    assert str(table.schema.field("parent_id").type) == "string"  # all null, still typed
    ids = {e.id for e in filled.iter_examples()}
    assert {r["id"] for r in table.to_pylist()} == ids


@pytest.mark.parametrize("fmt", [*SHAPES, "parquet"])
def test_an_empty_export_still_has_its_columns(store, tmp_path: Path, fmt: str) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "empty.parquet"
    assert export(store, fmt, out) == 0
    columns = {
        "alpaca": ["instruction", "input", "output", "system"],
        "parquet": ["instruction", "input", "output", "system"],
        "sharegpt": ["conversations", "system"],
        "openai": ["messages"],
    }[fmt]
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == columns


def test_format_parquet_is_alpaca_rows_in_parquet(filled, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    export(filled, "parquet", out, ExportFilter(statuses=["all"]))
    assert read_back(out) == expected(filled, "alpaca")


@pytest.mark.parametrize("name", ["out.csv", "out.txt", "out", "out.json.gz", "out.parquet.tmp"])
def test_an_unsupported_suffix_is_refused_and_nothing_written(
    filled, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "new_dir" / name
    with pytest.raises(InputError) as info:
        export(filled, "sharegpt", out)
    message = str(info.value)
    assert str(out) in message and ".json" in message and ".jsonl" in message
    assert ".parquet" in message
    assert info.value.exit_code == 2
    assert not (tmp_path / "new_dir").exists()


def test_format_parquet_to_a_json_name_is_refused(filled, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match="--format parquet writes Parquet"):
        export(filled, "parquet", out)
    assert not out.exists()


def test_cli_writes_what_the_suffix_says(project_dir: Path, tmp_path: Path, capsys) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "\n".join(
            json.dumps({"instruction": d.instruction, "input": d.input, "output": d.output or ""})
            for d in DRAFTS
        ),
        encoding="utf-8",
    )
    assert run_cli(capsys, "seed", "add", seeds, "-p", project_dir).code == 0
    out = tmp_path / "x.parquet"
    result = run_cli(capsys, "export", "-f", "sharegpt", "-o", out, "-p", project_dir)
    assert result.code == 0, result.err
    assert out.read_bytes()[:4] == b"PAR1" and len(read_back(out)) == 3  # accepted only

    bad = tmp_path / "x.csv"
    result = run_cli(capsys, "export", "-f", "sharegpt", "-o", bad, "-p", project_dir)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert str(bad) in result.err and ".jsonl" in result.err and ".parquet" in result.err
    assert not bad.exists() and not list(tmp_path.glob(".x.csv*"))
