"""Every method trains a few steps, saves, and loads back the same trained tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.register_assert_rewrite("tests.conftest_trainer")

from evoinstruct.store import open_store  # noqa: E402
from evoinstruct.store.errors import UnsupportedError  # noqa: E402
from evoinstruct.trainer.config import TrainerConfig  # noqa: E402
from evoinstruct.trainer.methods import check_supported, load_trained, peft_config  # noqa: E402
from evoinstruct.trainer.promote import peft_type  # noqa: E402
from evoinstruct.trainer.train import train  # noqa: E402
from tests.conftest_trainer import CaptureModel, fill_pool, tiny_config  # noqa: E402

pytest_plugins = ["tests.conftest_trainer"]

EXPECTED_PEFT = {"prefix": "PREFIX_TUNING", "prompt": "PROMPT_TUNING", "ia3": "IA3", "full": None}


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["prefix", "prompt", "ia3", "full"])
def test_method_trains_saves_and_loads(
    method: str, tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    store = open_store(tmp_path / "pool.db")
    fill_pool(store, n_new=12)
    cfg = tiny_config(tiny_model_dir, method=method, max_steps=3, num_virtual_tokens=4)
    capture = CaptureModel()
    result = train(cfg, tmp_path, store=store, callbacks=[capture])
    store.close()
    assert result.metrics["global_step"] == 3 and math.isfinite(result.metrics["train_loss"])
    assert peft_type(result.path) == EXPECTED_PEFT[method]
    trained = _trainable(capture.model)
    if method == "full":
        assert (result.path / "config.json").is_file() and (
            result.path / "model.safetensors"
        ).is_file()
        assert result.metrics["trainable_params"] == sum(t.numel() for t in trained.values())
    else:
        assert 0 < result.metrics["trainable_params"] < 20_000  # only the adapter trains
    loaded = load_trained(str(tiny_model_dir), result.path)
    # peft keeps adapter weights under the same names whether trainable or loaded frozen.
    reloaded = dict(loaded.named_parameters())
    for name, tensor in trained.items():
        assert torch.equal(reloaded[name], tensor), name
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        assert torch.isfinite(loaded(input_ids=ids).logits).all()


def test_qlora_needs_cuda_and_bitsandbytes(tiny_model_dir: Path) -> None:
    cfg = TrainerConfig(base_model=str(tiny_model_dir), method="qlora")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UnsupportedError, match="CUDA"):
        check_supported(cfg)


def test_peft_configs_follow_the_defaults() -> None:
    lora = peft_config(TrainerConfig(method="lora"))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (16, 32, 0.05)
    assert lora.target_modules == "all-linear"
    assert peft_config(TrainerConfig(method="full")) is None
    ia3 = peft_config(TrainerConfig(method="ia3", target_modules=["k_proj", "v_proj", "down_proj"]))
    assert ia3.feedforward_modules == {"down_proj"}


def test_packing_with_prompt_learning_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="packing"):
        TrainerConfig(method="prefix", packing=True)
    with pytest.raises(ValueError, match="room"):
        TrainerConfig(seed_share=0.5, replay_share=0.5)
