"""The real-model setups in examples/ load and wire up as their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from evoinstruct.graph.config import load_config
from evoinstruct.models.factory import ModelSet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "name",
    [
        "vllm-server.toml",
        "openai-teacher-hf-student.toml",
        "cpu-laptop.toml",
        "weak-to-strong.toml",
    ],
)
def test_example_config_is_valid(name: str) -> None:
    config = load_config(EXAMPLES / name, environ={})
    models = ModelSet(config.models, config.roles)  # validates every role without building a model
    assert set(models.role_names()) >= {"generator", "critic", "responder"}
    assert config.roles.student in config.models
    assert config.trainer.base_model


def test_vllm_example_matches_its_serve_command() -> None:
    text = (EXAMPLES / "vllm-server.toml").read_text()
    config = load_config(EXAMPLES / "vllm-server.toml", environ={})
    assert "--enable-lora" in text and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in text
    rank = int(text.split("--max-lora-rank", 1)[1].split()[0])
    assert config.trainer.lora_r <= rank == config.models["student"].max_lora_rank
    assert config.models["student"].backend == "openai"  # hot-loading goes through the server


def test_openai_example_keeps_the_key_out_of_the_file() -> None:
    config = load_config(EXAMPLES / "openai-teacher-hf-student.toml", environ={})
    assert config.models["teacher"].api_key_env == "OPENAI_API_KEY"
    assert config.models["student"].backend == "transformers"
    assert "sk-" not in (EXAMPLES / "openai-teacher-hf-student.toml").read_text()


def test_cpu_example_runs_everything_in_process() -> None:
    config = load_config(EXAMPLES / "cpu-laptop.toml", environ={})
    assert {m.backend for m in config.models.values()} == {"transformers"}
    assert config.trainer.device == "cpu" and config.project.language == "zh"


def test_weak_to_strong_example_names_a_weaker_supervisor() -> None:
    config = load_config(EXAMPLES / "weak-to-strong.toml", environ={})
    config.check_consistency()
    assert config.weak_to_strong.enabled and config.roles.weak == "weak"
    weak, student = config.models["weak"], config.models[config.roles.student]
    assert weak.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert student.model == config.trainer.base_model == "Qwen/Qwen2.5-7B-Instruct"
    assert "add_verifiable" in config.evolver.operations  # the experiment's prompts
