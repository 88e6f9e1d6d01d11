"""Hub-ready exports: the dataset card, LLaMA-Factory's dataset_info.json, structured lineage,
model names instead of local paths, and --push-to-hub failing in one line without a network."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from evoinstruct.graph.config import RunConfig
from evoinstruct.store.errors import InputError
from evoinstruct.store.export import (
    CARD_MARKER,
    CONSTRAINT_PARAMS,
    CardOptions,
    ExportFilter,
    dataset_info_entry,
    export_dataset,
    model_name,
    size_category,
)
from evoinstruct.store.records import ExampleDraft, Rejection, Score
from tests.cli_helpers import run_cli

SECRET_DIR = "/home/alice/private/models/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty directory for what an export writes (the project lives beside it)."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def header(card: Path) -> dict[str, Any]:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture
def grown(project_dir: Path) -> Path:
    """A project whose pool went through two recorded rounds: seeds, evolved children with
    constraints and scores, rejections, a student trained from a local directory."""
    from evoinstruct.store import open_store

    config = RunConfig().model_dump(mode="json")
    config["models"]["student"]["path"] = SECRET_DIR
    config["critic"]["judge"]["threshold"] = 4.0
    with open_store(project_dir / "pool.db") as store:
        seeds = store.add_candidates(
            [
                ExampleDraft(
                    "Give three tips for staying healthy.", output="Sleep.", source="seed"
                ),
                ExampleDraft("把句子翻译成英文。", "我喜欢读书。", "I like books.", source="seed"),
            ],
            round=0,
        ).ids
        for n, writer in ((1, "Qwen/Qwen2.5-7B-Instruct"), (2, SECRET_DIR)):
            store.start_round(n, config, "v1" if n == 2 else None)
            child = store.add_candidates(
                [
                    ExampleDraft(
                        f"Give three tips for staying healthy, round {n}, in under 50 words.",
                        output="Sleep, eat, walk.",
                        source="evolved",
                        parent_id=seeds[0],
                        operation="add_constraints",
                        model_version=writer,
                        language="en",
                        meta={
                            "constraints": [
                                {
                                    "id": "length_constraints:number_words",
                                    "params": {"relation": "less than", "num_words": 50},
                                }
                            ]
                        },
                    )
                ],
                round=n,
                status="accepted",
            ).ids[0]
            store.record_scores(
                [Score(child, "judge", "accuracy", 4.5), Score(child, "verify", "all", 1.0)], n
            )
            store.record_rejections(
                [
                    Rejection("select", "near_duplicate", {"similar_to": child}, text="dup"),
                    Rejection("critique", "judge_below_threshold", {"score": 2.0}, text="bad"),
                    Rejection.failed_call("respond", "timeout", example_id=child),
                ],
                n,
            )
            store.finish_round(n, {"stages": {}, **store.round_counts(n)})
        store.register_model_version(
            "v1",
            base=SECRET_DIR,
            method="lora",
            path="/home/alice/private/proj/models/v1",
            round=1,
            metrics={"train_loss": 1.2},
            config={},
        )
        store.set_promoted("v1", "test")
    toml = project_dir / "evoinstruct.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace("# license = ", 'license = "cc-by-4.0"'),
        encoding="utf-8",
    )
    return project_dir


def test_the_card_has_the_hubs_header_and_loads_with_datasets(
    grown: Path, tmp_path: Path, capsys
) -> None:
    import datasets

    out = tmp_path / "mydata" / "train.jsonl"
    result = run_cli(capsys, "export", "-f", "sharegpt", "-o", out, "-p", grown)
    assert result.code == 0, result.err
    card = out.parent / "README.md"
    meta = header(card)
    assert meta["language"] == ["en", "zh"]
    assert meta["license"] == "cc-by-4.0"
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert {"synthetic", "evol-instruct"} <= set(meta["tags"])
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "train.jsonl"}]}
    ]
    data = datasets.load_dataset(str(out.parent), split="train")
    assert data.num_rows == 4 and "conversations" in data.column_names


def test_the_card_states_provenance_by_name_only(grown: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "d" / "x.parquet"
    args = ("export", "-o", out, "--with-lineage", "--status", "all", "-p", grown)
    assert run_cli(capsys, *args).code == 0
    text = (out.parent / "README.md").read_text(encoding="utf-8")
    for written in out.parent.iterdir():
        assert b"/home/alice" not in written.read_bytes(), written
    assert "Rounds: 2 run, 2 finished" in text
    assert "Qwen2.5-0.5B-Instruct" in text and "Qwen/Qwen2.5-7B-Instruct" in text
    assert "Student v1: lora on Qwen2.5-0.5B-Instruct, round 1, active" in text
    assert "threshold=4" in text  # the judge's threshold from the stored config
    assert "| select | near_duplicate | 2 |" in text
    assert "| critique | judge_below_threshold | 2 |" in text
    assert "Failed model calls (no verdict; tried again later): 2." in text
    assert "Verifiable constraints: 2 examples" in text
    assert "length_constraints:number_words" in text
    assert text.rstrip().endswith(CARD_MARKER)


def test_a_readme_that_is_not_ours_is_kept(grown: Path, tmp_path: Path, capsys) -> None:
    own = tmp_path / "README.md"
    own.write_text("# my repository\n", encoding="utf-8")
    assert run_cli(capsys, "export", "-o", tmp_path / "x.jsonl", "-p", grown).code == 0
    assert own.read_text(encoding="utf-8") == "# my repository\n"
    assert CARD_MARKER in (tmp_path / "x.README.md").read_text(encoding="utf-8")
    # A card of ours is replaced by the next export into its directory.
    data = tmp_path / "data"
    for name in ("a.jsonl", "b.jsonl"):
        assert run_cli(capsys, "export", "-o", data / name, "-p", grown).code == 0
    assert header(data / "README.md")["configs"][0]["data_files"][0]["path"] == "b.jsonl"


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "openai", "parquet"])
def test_dataset_info_entries_are_merged_in(grown: Path, tmp_path: Path, capsys, fmt: str) -> None:
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"alpaca_en": {"file_name": "alpaca_en.json"}}), encoding="utf-8")
    suffix = ".parquet" if fmt == "parquet" else ".jsonl"
    args = ("export", "-f", fmt, "-o", tmp_path / f"evo{suffix}", "--name", "evo_zh")
    assert run_cli(capsys, *args, "-p", grown).code == 0
    entries = json.loads(info.read_text(encoding="utf-8"))
    assert entries["alpaca_en"] == {"file_name": "alpaca_en.json"}
    entry = entries["evo_zh"]
    assert entry["file_name"] == f"evo{suffix}"
    row = (
        json.loads((tmp_path / "evo.jsonl").read_text().splitlines()[0])
        if suffix == ".jsonl"
        else None
    )
    if fmt in ("alpaca", "parquet"):
        assert entry["formatting"] == "alpaca" and entry["columns"]["prompt"] == "instruction"
    else:
        assert entry["formatting"] == "sharegpt"
        messages = row[entry["columns"]["messages"]]
        tags = entry["tags"]
        assert messages[0][tags["role_tag"]] in (tags["user_tag"], tags.get("system_tag"))
        assert messages[-1][tags["role_tag"]] == tags["assistant_tag"]
    assert header(tmp_path / "README.md")["pretty_name"] == "evo_zh"


def test_a_broken_dataset_info_writes_nothing(grown: Path, out: Path, capsys) -> None:
    info = out / "dataset_info.json"
    info.write_text('{\n  "a": {"file_name": "a.json"},\n}\n', encoding="utf-8")
    result = run_cli(capsys, "export", "-o", out / "x.jsonl", "-p", grown)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert f"{info}:3" in result.err and "--no-card" in result.err
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json"]
    assert run_cli(capsys, "export", "-o", out / "x.jsonl", "--no-card", "-p", grown).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json", "x.jsonl"]


def test_the_data_file_cannot_be_named_dataset_info(grown: Path, out: Path, capsys) -> None:
    result = run_cli(capsys, "export", "-o", out / "dataset_info.json", "-p", grown)
    assert result.code == 2 and "--no-card" in result.err and not list(out.iterdir())


def test_lineage_scores_and_constraints_keep_their_structure(
    grown: Path, tmp_path: Path, capsys
) -> None:
    import pyarrow.parquet as pq

    rows = {}
    for suffix in (".jsonl", ".parquet"):
        out = tmp_path / f"x{suffix}"
        args = ("export", "-o", out, "--with-lineage", "--no-card", "-p", grown)
        assert run_cli(capsys, *args).code == 0
        if suffix == ".jsonl":
            rows[suffix] = [json.loads(line) for line in out.read_text().splitlines()]
        else:
            rows[suffix] = pq.read_table(out).to_pylist()
    for found in rows.values():
        evolved = [r for r in found if r["source"] == "evolved"]
        assert [r["model_version"] for r in evolved] == [
            "Qwen/Qwen2.5-7B-Instruct",
            "Qwen2.5-0.5B-Instruct",  # the stored local path, by its directory's name
        ]
        for row in evolved:
            assert row["scores"] == [
                {"scorer": "judge", "dimension": "accuracy", "value": 4.5},
                {"scorer": "verify", "dimension": "all", "value": 1.0},
            ]
            (constraint,) = row["constraints"]
            assert constraint["id"] == "length_constraints:number_words"
            params = {k: v for k, v in constraint["params"].items() if v is not None}
            assert params == {"relation": "less than", "num_words": 50}
        seed = next(r for r in found if r["source"] == "seed")
        assert seed["scores"] == [] and seed["constraints"] == []


def test_min_score_still_filters_with_structured_scores(store, tmp_path: Path) -> None:
    ids = store.add_candidates(
        [
            ExampleDraft("A", output="a", source="seed"),
            ExampleDraft("B", output="b", source="seed"),
        ],
        round=0,
    ).ids
    store.record_scores([Score(ids[0], "judge", "accuracy", 5.0)], 0)
    store.record_scores([Score(ids[1], "judge", "accuracy", 3.0)], 0)
    result = export_dataset(
        store,
        "alpaca",
        tmp_path / "x.jsonl",
        ExportFilter(min_scores={"accuracy": 4.5}),
        with_lineage=True,
        card=CardOptions(name="x"),
    )
    assert result.count == 1 and result.card == tmp_path / "README.md"
    assert "accuracy ≥ 4.5" in result.card.read_text(encoding="utf-8")


def test_model_names() -> None:
    assert model_name("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert model_name("v3") == "v3"
    assert model_name("/srv/models/llama-3-8b/") == "llama-3-8b"
    assert model_name("~/m/tiny") == "tiny"
    assert model_name(r"C:\models\qwen") == "qwen"
    assert model_name("/srv/x", {"/srv/x": "served-name"}) == "served-name"
    assert model_name(None) is None


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]


def test_constraint_params_cover_the_registry() -> None:
    from evoinstruct.agents.constraints import REGISTRY

    kinds = {
        "int": "int",
        "str": "str",
        "relation": "str",
        "language": "str",
        "letter": "str",
        "choice": "str",
    }
    found = {}
    for constraint_type in REGISTRY.values():
        for param in constraint_type.params:
            found[param.name] = kinds.get(param.kind, param.kind)
    assert found == CONSTRAINT_PARAMS


def test_openai_rows_are_llama_factory_sharegpt() -> None:
    entry = dataset_info_entry("openai", "x.jsonl")
    assert entry["columns"] == {"messages": "messages"}
    assert entry["tags"]["system_tag"] == "system"


# --- the Hub ------------------------------------------------------------------------------------


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants

    from tests.openai_server import closed_port

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Nothing listens there: the push fails as it does without a network, in any sandbox.
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    return constants


def test_no_network_fails_in_one_line_quickly(grown: Path, tmp_path: Path, capsys, hub_env) -> None:
    out = tmp_path / "hub" / "train.jsonl"
    started = time.monotonic()
    result = run_cli(capsys, "export", "-o", out, "--push-to-hub", "someone/data", "-p", grown)
    assert time.monotonic() - started < 30
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1, result.err
    assert "cannot reach the Hub" in result.err and str(out) in result.err
    assert out.is_file()  # the local export stays


@pytest.mark.parametrize(
    ("env", "repo", "words"),
    [
        ({"HF_TOKEN": None}, "someone/data", "no Hugging Face token"),
        ({"HF_HUB_OFFLINE": "1"}, "someone/data", "HF_HUB_OFFLINE"),
        ({}, "not a repo!", "Repo id"),
    ],
)
def test_a_push_that_cannot_work_writes_nothing(
    grown: Path, tmp_path: Path, capsys, hub_env, monkeypatch, env, repo, words
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token either
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    out = tmp_path / "hub" / "train.jsonl"
    result = run_cli(capsys, "export", "-o", out, "--push-to-hub", repo, "-p", grown)
    assert result.code == 2 and words in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and not out.parent.exists()


def test_a_push_uploads_the_data_and_a_card_for_the_hub(
    grown: Path, tmp_path: Path, capsys, hub_env, monkeypatch
) -> None:
    import datasets
    from huggingface_hub import HfApi

    from evoinstruct.store.export import hub as export_module

    pushed: dict[str, Any] = {}
    monkeypatch.setattr(export_module, "_probe_hub", lambda endpoint, timeout: None)
    monkeypatch.setattr(
        datasets.Dataset,
        "push_to_hub",
        lambda self, repo, **kw: pushed.update(repo=repo, rows=self.num_rows, **kw),
    )
    monkeypatch.setattr(
        HfApi, "upload_file", lambda self, **kw: pushed.update(card=kw["path_or_fileobj"], **kw)
    )
    out = tmp_path / "hub" / "test.jsonl"
    args = ("export", "-o", out, "--push-to-hub", "someone/data", "--private", "-p", grown)
    result = run_cli(capsys, *args)
    assert result.code == 0, result.err
    assert pushed["repo"] == "someone/data" and pushed["rows"] == 4
    assert pushed["split"] == "test" and pushed["private"] is True
    card = pushed["card"].decode("utf-8")
    files = yaml.safe_load(card.split("---\n", 2)[1])["configs"][0]["data_files"]
    assert files == [{"split": "test", "path": "data/test-*"}]
    assert 'load_dataset("someone/data", split="test")' in card
    assert pushed["path_in_repo"] == "README.md" and pushed["repo_type"] == "dataset"


def test_a_failed_upload_is_one_line(grown: Path, tmp_path: Path, capsys, hub_env, monkeypatch):
    import datasets

    from evoinstruct.store.export import hub as export_module

    def refuse(self, repo, **kw):
        raise RuntimeError("401 Client Error: Unauthorized\nInvalid credentials in header")

    monkeypatch.setattr(export_module, "_probe_hub", lambda endpoint, timeout: None)
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", refuse)
    result = run_cli(
        capsys, "export", "-o", tmp_path / "x.jsonl", "--push-to-hub", "a/b", "-p", grown
    )
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "401 Client Error: Unauthorized Invalid credentials" in result.err


def test_private_needs_a_push(grown: Path, out: Path, capsys) -> None:
    result = run_cli(capsys, "export", "-o", out / "x.jsonl", "--private", "-p", grown)
    assert result.code == 2 and "--private" in result.err and not list(out.iterdir())


def test_license_must_look_like_a_hub_license_id(project_dir: Path) -> None:
    from evoinstruct.graph.config import load_config

    toml = project_dir / "evoinstruct.toml"
    toml.write_text('[project]\nlicense = "CC BY 4.0"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"project\.license"):
        load_config(toml)
