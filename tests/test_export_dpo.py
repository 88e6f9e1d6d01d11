"""`evoinstruct export --format dpo`: verified preference pairs as prompt/chosen/rejected rows that
`datasets` loads, TRL's DPOTrainer and LLaMA-Factory read, with a card saying what they are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evoinstruct.agents.constraints import Constraint, dump_constraints
from evoinstruct.store import Store, open_store
from evoinstruct.store.errors import InputError
from evoinstruct.store.export import CardOptions, ExportFilter, export, export_dataset
from evoinstruct.store.records import ExampleDraft, PreferencePair
from tests.cli_helpers import run_cli

NO_COMMA = Constraint("punctuation:no_comma")
LOWER = Constraint("change_case:english_lowercase")


def fill(store: Store) -> dict[str, str]:
    """Three constrained examples (en, zh with an input and a system prompt, a rejected one)
    with pairs, and an unconstrained accepted example without any."""
    drafts = [
        ExampleDraft(
            "Explain tides to a child.",
            output="tides follow the moon.",
            source="evolved",
            language="en",
            meta={"constraints": dump_constraints([NO_COMMA, LOWER])},
        ),
        ExampleDraft(
            "把这句话翻译成中文。",
            input="The sea rises twice a day.",
            output="海水每天涨两次。",
            system="你是一位翻译。",
            source="evolved",
            language="zh",
            meta={"constraints": dump_constraints([NO_COMMA])},
        ),
        ExampleDraft(
            "Explain waves.",
            output="waves come from wind.",
            source="evolved",
            language="en",
            meta={"constraints": dump_constraints([NO_COMMA])},
        ),
        ExampleDraft("Name a river.", output="The Nile.", source="generated", language="en"),
    ]
    en, zh, dropped, plain = store.add_candidates(drafts, 1).ids
    store.set_status([en, zh, plain], "accepted")
    store.set_status([dropped], "rejected")
    store.add_preference_pairs(
        [
            PreferencePair(en, "tides follow the moon.", "Tides, Mostly.", [NO_COMMA.id, LOWER.id], model_version="/home/alice/models/SmolLM2"),
            PreferencePair(en, "tides follow the moon.", "Tides Rise.", [LOWER.id], chosen_repaired=[]),
            PreferencePair(zh, "海水每天涨两次。", "海水，每天涨两次。", [NO_COMMA.id], model_version="teacher"),
            PreferencePair(dropped, "waves come from wind.", "Waves, Wind.", [NO_COMMA.id]),
        ],
        1,
    )  # fmt: skip
    return {"en": en, "zh": zh, "dropped": dropped}


@pytest.fixture
def filled(tmp_path: Path):
    with open_store(tmp_path / "pool.db") as store:
        ids = fill(store)
        yield store, ids


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_rows_load_with_datasets_and_hold_only_accepted_examples_pairs(
    filled, tmp_path: Path, suffix: str
) -> None:
    from datasets import load_dataset

    store, _ = filled
    out = tmp_path / f"pairs{suffix}"
    assert export(store, "dpo", out) == 3
    builder = "parquet" if suffix == ".parquet" else "json"
    data = load_dataset(builder, data_files=str(out), split="train")
    assert data.column_names == ["prompt", "chosen", "rejected", "system"]
    rows = list(data)
    assert {r["prompt"] for r in rows} == {
        "Explain tides to a child.",
        "把这句话翻译成中文。\n\nThe sea rises twice a day.",
    }
    zh = next(r for r in rows if r["system"])
    assert zh == {
        "prompt": "把这句话翻译成中文。\n\nThe sea rises twice a day.",
        "chosen": "海水每天涨两次。",
        "rejected": "海水，每天涨两次。",
        "system": "你是一位翻译。",
    }
    assert "Waves, Wind." not in {r["rejected"] for r in rows}  # its example was rejected
    assert export(store, "dpo", tmp_path / f"all{suffix}", ExportFilter(statuses=["all"])) == 4


def test_lineage_says_what_each_answer_failed_and_who_drew_it(filled, tmp_path: Path) -> None:
    from datasets import load_dataset

    store, ids = filled
    out = tmp_path / "pairs.parquet"
    export(store, "dpo", out, with_lineage=True)
    rows = list(load_dataset("parquet", data_files=str(out), split="train"))
    by_rejected = {r["rejected"]: r for r in rows}
    row = by_rejected["Tides, Mostly."]
    assert row["example_id"] == ids["en"] and row["round"] == 1
    assert row["rejected_failed"] == [NO_COMMA.id, LOWER.id] and row["chosen_repaired"] == []
    assert row["rejected_truncated"] is False
    assert row["model_version"] == "SmolLM2"  # a local path is shown by name only
    assert [c["id"] for c in row["constraints"]] == [NO_COMMA.id, LOWER.id]


def test_the_card_and_llama_factory_entry_say_what_the_pairs_are(
    filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = filled
    out = tmp_path / "data" / "train.jsonl"
    result = export_dataset(store, "dpo", out, card=CardOptions(name="tide-pairs"))
    assert result.count == 3
    card = result.card.read_text(encoding="utf-8")
    assert "3 preference pairs" in card and "fails at least one" in card
    assert "- Prompts: 2 (3 pairs)" in card
    assert "`punctuation:no_comma` 2" in card and "`change_case:english_lowercase` 2" in card
    assert "dpo" in card.split("---")[1]  # a tag in the Hub header
    assert "| `rejected` |" in card and "| `instruction` |" not in card
    entry = json.loads(result.dataset_info.read_text())["tide-pairs"]
    assert entry == {
        "file_name": "train.jsonl",
        "formatting": "alpaca",
        "ranking": True,
        "columns": {
            "prompt": "prompt",
            "chosen": "chosen",
            "rejected": "rejected",
            "system": "system",
        },
    }
    # The card's loading code runs as written, and gives TRL's conversational rows.
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    monkeypatch.chdir(out.parent)
    scope: dict = {}
    exec(code, scope)
    first = next(r for r in scope["data"] if r["prompt"][0]["role"] == "system")
    assert first["prompt"] == [
        {"role": "system", "content": "你是一位翻译。"},
        {"role": "user", "content": "把这句话翻译成中文。\n\nThe sea rises twice a day."},
    ]
    assert first["chosen"] == [{"role": "assistant", "content": "海水每天涨两次。"}]


def test_an_empty_export_keeps_its_columns_and_min_score_is_refused(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    with open_store(tmp_path / "pool.db") as store:
        out = tmp_path / "none.parquet"
        assert export(store, "dpo", out, with_lineage=True) == 0
        schema = pq.read_schema(out)
        assert schema.names[:4] == ["prompt", "chosen", "rejected", "system"]
        assert schema.field("rejected_failed").type.value_type == "string"
        with pytest.raises(InputError, match="--min-score"):
            export(store, "dpo", tmp_path / "x.jsonl", ExportFilter(min_scores={"accuracy": 4}))
        assert not (tmp_path / "x.jsonl").exists()


def test_cli_exports_pairs(project_dir: Path, tmp_path: Path, capsys) -> None:
    with open_store(project_dir / "pool.db") as store:
        fill(store)
    out = tmp_path / "prefs" / "train.jsonl"
    result = run_cli(capsys, "export", "--format", "dpo", "-o", out, "-p", project_dir)
    assert result.code == 0, result.err
    assert "Wrote 3 preference pairs" in result.out
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    bad = run_cli(
        capsys, "export", "-f", "dpo", "-o", tmp_path / "y.jsonl", "--min-score", "a=1",
        "-p", project_dir,
    )  # fmt: skip
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1, bad.err
