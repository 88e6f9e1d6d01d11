"""What a Trainer run is given and resumes from: its TrainingArguments (one definition for
SFT, the DPO stage, weak-to-strong students and the demo's warm-up) and the last complete
checkpoint in a run's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evoinstruct.trainer.config import TrainerConfig


def training_arguments(cfg: TrainerConfig, output_dir: Path) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(**training_kwargs(cfg, output_dir))


def training_kwargs(cfg: TrainerConfig, output_dir: Path) -> dict[str, Any]:
    """The SFT stage's TrainingArguments; the DPO stage starts from the same ones."""
    from evoinstruct.trainer.methods import resolve_precision

    precision = resolve_precision(cfg)
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accumulation,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.resolved_learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        activation_checkpointing=cfg.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=cfg.device == "cpu",
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,  # the collator picks the columns; ids stay in the data
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint whose trainer_state.json (written last) is complete."""
    if not checkpoints.is_dir():
        return None
    found = []
    for path in checkpoints.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    for _, path in sorted(found, reverse=True):
        if _complete(path / "trainer_state.json"):
            return str(path)
    return None


def _complete(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return True
