"""The fine-tuning method as a config value: the peft config for each method and model loading.

LoRA, IA3, prefix and prompt tuning are peft adapters; full fine-tuning
trains every weight; QLoRA is LoRA on a 4-bit NF4 base (double quant, bf16
compute) and needs CUDA and bitsandbytes. Houlsby bottleneck adapters are not
in peft and are left out. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import ConfigError, UnsupportedError
from evoinstruct.trainer.config import TrainerConfig

# Output projections of the MLP in common architectures: IA3 scales their inputs.
_FEEDFORWARD_NAMES = ("down_proj", "fc2", "w2", "dense_4h_to_h", "c_proj")


def check_supported(cfg: TrainerConfig) -> None:
    """Raise UnsupportedError when this machine cannot run the configured method."""
    if cfg.method != "qlora":
        return
    import torch

    if not torch.cuda.is_available():
        raise UnsupportedError(
            "QLoRA needs a CUDA GPU (4-bit NF4 weights); this machine has none — "
            "use method = 'lora' instead"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UnsupportedError("QLoRA needs the bitsandbytes package: pip install bitsandbytes")


def resolve_precision(cfg: TrainerConfig) -> str:
    """fp32, bf16 or fp16 for this run; 'auto' picks bf16 on a GPU that supports it."""
    import torch

    if cfg.precision != "auto":
        return cfg.precision
    if cfg.device != "cpu" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def peft_config(cfg: TrainerConfig) -> Any | None:
    """The peft config for the method; None for full fine-tuning."""
    from peft import (
        IA3Config,
        LoraConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
    )

    if cfg.method in ("lora", "qlora"):
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            bias="none",
        )
    if cfg.method == "ia3":
        if isinstance(cfg.target_modules, str):
            # 'all-linear' is a LoRA notion; IA3 uses peft's per-architecture defaults.
            return IA3Config(task_type=TaskType.CAUSAL_LM)
        feedforward = [m for m in cfg.target_modules if m in _FEEDFORWARD_NAMES]
        return IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=list(cfg.target_modules),
            feedforward_modules=feedforward,
        )
    if cfg.method == "prefix":
        return PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens
        )
    if cfg.method == "prompt":
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
    return None


def load_base_model(cfg: TrainerConfig, path: str | None = None) -> Any:
    """The base model (or `path`'s weights) ready for the method (4-bit prepared for QLoRA)."""
    import torch
    from transformers import AutoModelForCausalLM

    if not cfg.base_model:
        raise ConfigError(
            "no base model to train: set trainer.base_model", field="trainer.base_model"
        )
    check_supported(cfg)
    precision = resolve_precision(cfg)
    kwargs: dict[str, Any] = {}
    if cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
    elif precision == "bf16" and cfg.method != "full":
        # Frozen base weights in bf16 halve memory; full fine-tuning keeps fp32 master weights.
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(path or cfg.base_model, **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"cannot load base model {path or cfg.base_model!r}: {exc}", field="trainer.base_model"
        ) from exc
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing
        )
    return model


def prepare_model(cfg: TrainerConfig, init_from: str | None = None) -> Any:
    """The model the Trainer optimises: the base wrapped in the method's adapter, or the base.

    `init_from` is a trained version directory to continue from: its adapter is
    loaded trainable (or, for full fine-tuning, its weights replace the base).
    """
    from peft import PeftModel, get_peft_model

    config = peft_config(cfg)
    if config is None:
        return load_base_model(cfg, init_from)
    model = load_base_model(cfg)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    if init_from:
        return PeftModel.from_pretrained(model, init_from, is_trainable=True)
    return get_peft_model(model, config)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_trained(base_model: str, version_dir: str | Path, *, dtype: Any = None) -> Any:
    """A trained version for inference: base + peft adapter, or the full fine-tuned weights."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    if is_adapter_dir(version_dir):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
        return PeftModel.from_pretrained(base, str(version_dir)).eval()
    return AutoModelForCausalLM.from_pretrained(str(version_dir), dtype=dtype).eval()
