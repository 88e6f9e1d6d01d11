"""Promotion: the generator serves the promoted student, and rollback restores the old outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from evoinstruct.models.base import ChatRequest
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.fingerprint import adapter_digest
from evoinstruct.models.openai_backend import OpenAIChatModel
from evoinstruct.models.transformers_backend import TransformersModel
from evoinstruct.store.errors import InputError, UnsupportedError
from evoinstruct.trainer.promote import hand_off, promote, rollback, versions_table
from tests.openai_server import OpenAITestServer

pytest_plugins = ["tests.conftest_trainer"]

if TYPE_CHECKING:
    from tests.conftest_trainer import TrainedProject

REQUESTS = [
    ChatRequest(messages=[{"role": "user", "content": text}], temperature=0.0, max_tokens=12)
    for text in ("Explain the sea in simple words.", "请写一句关于春天的话。")
]


async def _texts(model) -> list[str]:
    return [g.text for g in await model.generate(REQUESTS)]


async def test_promotion_changes_outputs_and_rollback_restores(
    trained_lora: TrainedProject, tiny_model_dir: Path
) -> None:
    store = trained_lora.store
    generator = TransformersModel(
        ModelConfig(backend="transformers", path=str(tiny_model_dir), device="cpu")
    )
    before = await _texts(generator)
    row = promote(store, "v1", reason="held-out loss improved")
    assert store.active_model()["version"] == "v1"
    assert await hand_off(generator, row) == "v1" and generator.adapter_version == "v1"
    assert generator.adapter_digest == adapter_digest(row["path"]) is not None
    after = await _texts(generator)
    assert after != before
    assert rollback(store) is None and store.active_model() is None
    assert await hand_off(generator, store.active_model()) is None
    assert generator.adapter_version is None
    assert await _texts(generator) == before
    promotions = store.promotions()
    assert [p["action"] for p in promotions[-2:]] == ["promote", "rollback"]
    assert promotions[-2]["reason"] == "held-out loss improved"


def test_promote_unknown_version(trained_lora: TrainedProject) -> None:
    with pytest.raises(InputError, match="v9"):
        promote(trained_lora.store, "v9")


async def test_hand_off_to_a_vllm_server(trained_lora: TrainedProject, tmp_path: Path) -> None:
    row = trained_lora.store.model_version("v1")
    with OpenAITestServer(reply=lambda body: f"served by {body['model']}") as server:
        cfg = ModelConfig(backend="openai", base_url=server.url, model="tiny", max_retries=0)
        generator = OpenAIChatModel(cfg, env={})
        assert await _texts(generator) == ["served by tiny"] * 2
        assert await hand_off(generator, row) == "v1"
        digest = adapter_digest(row["path"])
        assert digest is not None and generator.adapter_digest == digest
        served = f"v1-{digest[:12]}"  # the server's name for these very weights
        assert server.lora_adapters == {served: row["path"]}
        assert generator.adapter_version == "v1" and generator.model_id == served
        assert await _texts(generator) == [f"served by {served}"] * 2
        assert await hand_off(generator, row) == "v1"  # already listed: loaded once
        assert await hand_off(generator, None) is None
        assert generator.adapter_digest is None
        assert await _texts(generator) == ["served by tiny"] * 2
        await generator.aclose()
    full = {"version": "v2", "path": str(tmp_path)}  # no adapter_config.json: full weights
    with pytest.raises(UnsupportedError, match="full fine-tune"):
        await hand_off(generator, full)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(UnsupportedError, match="LoRA only"):
        await hand_off(generator, full)


async def test_prompt_tuning_cannot_be_hot_loaded(
    trained_lora: TrainedProject, tiny_model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    generator = TransformersModel(
        ModelConfig(backend="transformers", path=str(tiny_model_dir), device="cpu")
    )
    with pytest.raises(UnsupportedError, match="load_trained"):
        await hand_off(generator, {"version": "v3", "path": str(tmp_path)})
    assert generator.adapter_version is None


def test_versions_table(trained_lora: TrainedProject) -> None:
    [row] = versions_table(trained_lora.store)
    assert row["version"] == "v1" and row["method"] == "lora"
    assert row["train_loss"] == trained_lora.result.metrics["train_loss"]
    assert row["heldout_loss"] is not None
    assert "verifiable" in row  # the suite's prompt-level strict accuracy, once it has run
