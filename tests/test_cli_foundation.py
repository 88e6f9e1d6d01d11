"""init, config validation, status and export through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli


def seeded(project_dir: Path, capsys) -> Path:
    for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
        assert (
            run_cli(capsys, "seed", "add", project_dir / "seeds" / name, "-p", project_dir).code
            == 0
        )
    return project_dir


def test_init_writes_a_config_that_loads(tmp_path: Path, capsys) -> None:
    from evoinstruct.graph.config import RunConfig, load_config

    result = run_cli(capsys, "init", tmp_path / "p")
    assert result.code == 0
    config_text = (tmp_path / "p" / "evoinstruct.toml").read_text()
    assert "# Prompt language, en or zh" in config_text
    assert load_config(tmp_path / "p" / "evoinstruct.toml") == RunConfig()
    assert run_cli(capsys, "init", tmp_path / "p").code == 2  # no silent overwrite


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[loop]\nbogus_key = 1\n", "field 'loop.bogus_key': unknown key"),
        ('[loop]\ngenerate_calls = "many"\n', "field 'loop.generate_calls'"),
        ('[roles]\ncritic = "nobody"\n', "roles.critic"),
        ("[loop\n", "evoinstruct.toml"),
    ],
)
def test_config_errors_name_the_key(project_dir: Path, capsys, snippet: str, expected: str) -> None:
    (project_dir / "evoinstruct.toml").write_text(snippet)
    from evoinstruct.graph.config import load_config
    from evoinstruct.store.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(project_dir / "evoinstruct.toml")
    assert expected in str(info.value)


def test_config_layers(project_dir: Path, monkeypatch) -> None:
    from evoinstruct.graph.config import load_config

    path = project_dir / "evoinstruct.toml"
    path.write_text("[loop]\ngenerate_calls = 5\nevolve_per_round = 3\n")
    monkeypatch.setenv("EVOINSTRUCT__LOOP__EVOLVE_PER_ROUND", "7")
    config = load_config(path, ["loop.generate_calls=9"])
    assert (config.loop.generate_calls, config.loop.evolve_per_round) == (9, 7)


def test_status_json_shape(project_dir: Path, capsys) -> None:
    seeded(project_dir, capsys)
    report = run_cli(capsys, "status", "-p", project_dir, "--json").json()
    assert report["examples"]["total"] == 16
    assert report["examples"]["by_status"]["accepted"] == 16
    assert report["examples"]["by_source"] == {"seed": 16}
    assert report["rounds"] == 0 and report["active_model"] is None
    human = run_cli(capsys, "status", "-p", project_dir)
    assert "16 examples" in human.out


def test_commands_outside_a_project_fail_clearly(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, "status", "-p", tmp_path)
    assert result.code == 2 and "evoinstruct init" in result.err


@pytest.mark.parametrize(
    ("fmt", "suffix", "columns"),
    [
        ("alpaca", "json", {"instruction", "input", "output", "system"}),
        ("sharegpt", "jsonl", {"conversations", "system"}),
        ("openai", "jsonl", {"messages"}),
        ("parquet", "parquet", {"instruction", "input", "output", "system"}),
    ],
)
def test_exports_load_with_datasets(
    project_dir: Path, tmp_path: Path, capsys, fmt, suffix, columns
) -> None:
    import datasets

    seeded(project_dir, capsys)
    out = tmp_path / f"out.{suffix}"
    assert run_cli(capsys, "export", "-f", fmt, "-o", out, "-p", project_dir).code == 0
    builder = "parquet" if fmt == "parquet" else "json"
    data = datasets.load_dataset(builder, data_files=str(out), split="train")
    assert len(data) == 16 and set(data.column_names) == columns
    if fmt == "sharegpt":
        assert data[0]["conversations"][0]["from"] == "human"
    if fmt == "openai":
        assert [m["role"] for m in data[0]["messages"]] == ["user", "assistant"]


def test_export_filters_and_lineage(project_dir: Path, tmp_path: Path, capsys) -> None:
    from evoinstruct.store import open_store
    from evoinstruct.store.records import Score

    seeded(project_dir, capsys)
    with open_store(project_dir / "pool.db") as store:
        ids = [e.id for e in store.iter_examples()]
        store.record_scores(
            [Score(ids[0], "judge", "accuracy", 5.0), Score(ids[1], "judge", "accuracy", 3.0)], 0
        )
    out = tmp_path / "x.jsonl"
    args = ("export", "-o", out, "--min-score", "accuracy=4.5", "--with-lineage", "-p", project_dir)
    assert run_cli(capsys, *args).code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [ids[0]]
    assert rows[0]["scores"] == [{"scorer": "judge", "dimension": "accuracy", "value": 5.0}]
    assert rows[0]["source"] == "seed"
    bad = run_cli(capsys, "export", "-o", out, "--min-score", "accuracy", "-p", project_dir)
    assert bad.code == 2 and "--min-score" in bad.err
    bad = run_cli(capsys, "export", "-o", out, "--status", "great", "-p", project_dir)
    assert bad.code == 2 and "--status" in bad.err


def test_run_fails_fast_when_the_teacher_is_unreachable(project_dir: Path, capsys) -> None:
    from tests.openai_server import closed_port

    url = f'models.teacher.base_url="http://127.0.0.1:{closed_port()}/v1"'
    result = run_cli(capsys, "run", "-p", project_dir, "--set", url)
    assert result.code == 1
    assert "cannot start the round: teacher: cannot connect" in result.err
    assert "evoinstruct models check" in result.err
    status = run_cli(capsys, "status", "--json", "-p", project_dir).json()
    assert status["rounds"] == 0 and status["examples"]["total"] == 0  # nothing started


def test_run_detach_fails_in_the_foreground_when_the_teacher_is_unreachable(
    project_dir: Path, capsys
) -> None:
    from tests.openai_server import closed_port

    url = f'models.teacher.base_url="http://127.0.0.1:{closed_port()}/v1"'
    result = run_cli(capsys, "run", "--detach", "-p", project_dir, "--set", url)
    assert result.code == 1 and "cannot connect" in result.err
    assert "Daemon started" not in result.out
