"""LoRA training on the tiny llama: loss falls, only the adapter moves, save/load/merge agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM

from evoinstruct.trainer.train import MANIFEST, METRICS, TRAIN_CONFIG

# A plugin, not an import: the session fixtures are then shared by every trainer test module.
pytest_plugins = ["tests.conftest_trainer"]

if TYPE_CHECKING:
    from tests.conftest_trainer import TrainedProject


def _lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def test_training_lowers_the_loss(trained_lora: TrainedProject) -> None:
    history = [e["loss"] for e in trained_lora.result.metrics["log_history"] if "loss" in e]
    assert len(history) == 20
    first, last = sum(history[:4]) / 4, sum(history[-4:]) / 4
    assert last < first - 0.3, history


def test_base_weights_unchanged_adapter_changed(
    trained_lora: TrainedProject, tiny_model_dir: Path
) -> None:
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    trained = trained_lora.model.state_dict()
    base_keys = [k for k in trained if "lora_" not in k]
    assert base_keys
    for key in base_keys:
        name = key.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(trained[key], original[name]), key
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero


def test_save_load_identical_and_merge_same_logits(
    trained_lora: TrainedProject, tiny_model_dir: Path
) -> None:
    from peft import PeftModel

    path = trained_lora.result.path
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, str(path)).eval()
    saved, kept = _lora_state(loaded), _lora_state(trained_lora.model)
    assert saved.keys() == kept.keys() and saved
    for key in saved:
        assert torch.equal(saved[key], kept[key]), key
    ids = torch.tensor([[5, 17, 42, 99, 7, 250, 3]])
    with torch.no_grad():
        adapter_logits = loaded(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits
        merged = loaded.merge_and_unload()
        merged_logits = merged(input_ids=ids).logits
    assert not torch.allclose(adapter_logits, plain, atol=1e-4)  # the adapter matters
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-4)


def test_version_directory_and_registry(trained_lora: TrainedProject) -> None:
    store, path = trained_lora.store, trained_lora.result.path
    assert trained_lora.result.version == "v1" and path == trained_lora.root / "models" / "v1"
    assert not list((trained_lora.root / "models").glob(".v*.partial"))
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        assert (path / name).is_file(), name
    metrics = json.loads((path / METRICS).read_text())
    config = json.loads((path / TRAIN_CONFIG).read_text())
    manifest = json.loads((path / MANIFEST).read_text())
    assert config["method"] == "lora" and config["lora_r"] == 16 and config["learning_rate"] == 5e-3
    assert metrics["global_step"] == 20 and metrics["heldout_loss"] > 0
    row = store.model_version("v1")
    assert row["path"] == str(path.resolve()) and row["method"] == "lora"
    assert row["metrics"]["train_loss"] == metrics["train_loss"]
    trained = manifest["new"] + manifest["seed"] + manifest["replay"]
    assert sorted(store.training_manifest("v1", role="train")) == sorted(trained)
    assert sorted(store.training_manifest("v1", role="heldout")) == sorted(manifest["heldout"])
    assert not set(trained) & set(manifest["heldout"])
    assert len(manifest["seed"]) == 4 and manifest["replay"] == []
    assert set(manifest["new"]) | set(manifest["heldout"]) == set(trained_lora.new_ids)


def test_next_version_continues_from_the_promoted_one(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    from evoinstruct.store import open_store
    from evoinstruct.trainer.promote import promote
    from evoinstruct.trainer.train import train
    from tests.conftest_trainer import CaptureModel, fill_pool, pool_drafts, tiny_config

    store = open_store(tmp_path / "pool.db")
    fill_pool(store, n_new=16)
    cfg = tiny_config(tiny_model_dir, max_steps=2, replay_share=0.3)
    v1 = train(cfg, tmp_path, store=store)
    promote(store, "v1", "test")
    _, more = pool_drafts(40)
    ids = store.add_candidates(more[16:], 2).ids  # 24 examples of round 2
    store.set_status(ids, "accepted")
    capture = CaptureModel()
    v2 = train(cfg, tmp_path, store=store, callbacks=[capture])
    manifest = json.loads((v2.path / MANIFEST).read_text())
    assert v2.metrics["parent_version"] == "v1"
    assert store.model_version("v2")["config"]["parent_version"] == "v1"
    assert set(manifest["new"]) <= set(ids) and manifest["replay"]
    assert set(manifest["replay"]) <= set(store.training_manifest("v1", role="train"))
    # Training started from v1's adapter, not from a fresh one.
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(v1.path)
    )
    saved = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert saved and all(torch.equal(capture.initial[n], t) for n, t in saved.items())
    # Starting from the base instead: no parent, everything accepted is new again.
    base_cfg = cfg.model_copy(update={"init_from": "base"})
    v3 = train(base_cfg, tmp_path, store=store)
    assert v3.metrics["parent_version"] is None and v3.metrics["examples"]["replay"] == 0
    assert v3.metrics["examples"]["new"] > v2.metrics["examples"]["new"]
    store.close()
