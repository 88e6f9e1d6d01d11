"""A project of your own on SmolLM2: `init --model smollm2`, `models fetch smollm2 --project`,
the weak-model profile written into the project's file with its reasons, the model's own name.

The model cache is a temporary directory holding an empty converted folder: fetching finds it
and returns at once (a converted folder is renamed into place only when complete), so these
tests never download or load the model.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from evoinstruct.graph.config import RunConfig, load_config
from evoinstruct.graph.profiles import WEAK_MODEL
from evoinstruct.models.smollm2 import CACHE_ENV, CPU_DTYPE, model_dir
from tests.cli_helpers import run_cli


@pytest.fixture
def converted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "model-cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    folder = model_dir(cache)
    folder.mkdir(parents=True)
    return folder


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part] if isinstance(config, dict) else getattr(config, part)
    return config


def test_every_profile_setting_is_a_config_key_and_applies() -> None:
    config = WEAK_MODEL.apply(RunConfig())
    keys = [s.key for s in WEAK_MODEL.settings]
    assert len(keys) == len(set(keys)), "a key set twice"
    for setting in WEAK_MODEL.settings:
        assert setting.why.strip(), setting.key
        value = _get(config, setting.key)
        dumped = value if isinstance(value, (int, float, str, bool)) else list(value)
        assert dumped == setting.value, setting.key
    # Replacing a value is explicit, and only for keys the profile has.
    replaced = WEAK_MODEL.overrides(replace={"responder.max_tokens": 160})
    assert "responder.max_tokens=160" in replaced
    with pytest.raises(KeyError, match=r"loop\.max_depth"):
        WEAK_MODEL.overrides(replace={"loop.max_depth": 2})


def test_init_with_a_model_writes_the_profile_and_its_reasons(
    converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "mine"
    result = run_cli(capsys, "init", project, "--model", "smollm2")
    assert result.code == 0, result.err
    assert "profile: weak-model" in result.out and "run --rounds 1" in result.out
    text = (project / "evoinstruct.toml").read_text(encoding="utf-8")
    config = load_config(project / "evoinstruct.toml", environ={})
    for name in ("teacher", "student"):
        served = config.models[name]
        assert (served.backend, served.path, served.dtype) == (
            "transformers",
            str(converted),
            CPU_DTYPE,
        )
        assert served.model is None  # no server's model name left to mislabel it
    assert list(config.models) == ["teacher", "student"]
    assert config.trainer.base_model == str(converted) and config.roles.student == "student"
    lines = text.splitlines()
    for setting in WEAK_MODEL.settings:
        assert _get(config, setting.key) == _get(WEAK_MODEL.apply(RunConfig()), setting.key)
        # The key's reason sits right above it in the project's own file.
        table, key = setting.key.rsplit(".", 1)
        at = lines.index(f"[{table}]")
        line = next(i for i in range(at, len(lines)) if lines[i].startswith(f"{key} = "))
        assert lines[line - 1] == f"# weak-model profile: {setting.why}", setting.key
    assert "Profile weak-model" in text and "SmolLM2-135M-Instruct (Apache-2.0)" in text
    again = run_cli(capsys, "init", project, "--model", "smollm2")
    assert again.code == 2 and "models fetch smollm2 --project" in again.err
    unknown = run_cli(capsys, "init", tmp_path / "other", "--model", "gpt5")
    assert unknown.code == 2 and "unknown model 'gpt5'" in unknown.err
    assert not (tmp_path / "other").exists()


def test_models_fetch_switches_an_existing_project(
    converted: Path, project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = project_dir / "evoinstruct.toml"
    text = config_file.read_text(encoding="utf-8").replace('language = "en"', 'language = "zh"')
    config_file.write_text(text, encoding="utf-8")
    before = load_config(config_file, environ={})
    assert before.models["teacher"].model == "Qwen/Qwen2.5-7B-Instruct"
    result = run_cli(capsys, "models", "fetch", "smollm2", "--project", project_dir)
    assert result.code == 0, result.err
    assert (project_dir / "evoinstruct.toml.bak").read_text(encoding="utf-8") == text
    after = load_config(config_file, environ={})
    assert after.project.language == "zh"  # the project's own settings stay
    assert after.models["teacher"].path == str(converted) and after.models["teacher"].model is None
    assert after.critic.judge.enabled is False and after.loop.rewrite is False
    assert "weak-model profile:" in config_file.read_text(encoding="utf-8")


def test_models_fetch_prints_every_line_readable(
    converted: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(capsys, "models", "fetch", "smollm2")
    assert result.code == 0, result.err
    flat = " ".join(result.out.split())
    # Table names in brackets were once eaten as rich markup: "replace the , ,  and  tables".
    assert "[models.teacher], [models.student], [roles] and [trainer]" in flat
    tables = tomllib.loads(result.out[result.out.index("# SmolLM2") :])
    assert tables["models"]["teacher"]["path"] == str(converted)


def test_a_local_model_is_labelled_by_what_its_backend_loads() -> None:
    from evoinstruct.store.export import model_label

    left_over = {
        "backend": "transformers",
        "model": "Qwen/Qwen2.5-7B-Instruct",  # left by `init`, never loaded
        "path": "/cache/smollm2-135m-instruct-float32",
    }
    assert model_label(left_over) == "smollm2-135m-instruct-float32"
    server = {"backend": "openai", "model": "Qwen/Qwen2.5-7B-Instruct", "path": None}
    assert model_label(server) == "Qwen/Qwen2.5-7B-Instruct"
