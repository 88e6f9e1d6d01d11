"""Warming up a tiny local model on a handful of examples, for the offline demo.

A random-weight model never emits its end-of-sequence token, so every answer
runs to the token limit and is rejected as truncated. A few dozen full
fine-tuning steps on the seeds teach it to answer in the seeds' register and to
stop — it still does not follow instructions. This reuses the trainer's data
encoding (loss on the response only, EOS appended) and transformers' Trainer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from evoinstruct.store.records import Example
from evoinstruct.trainer.config import TrainerConfig


def warm_up(
    model_dir: str | Path,
    examples: Sequence[Example],
    *,
    steps: int = 80,
    learning_rate: float = 3e-3,
    max_length: int = 256,
) -> float:
    """Fully fine-tune the model in `model_dir` in place; returns the last training loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, Trainer

    from evoinstruct.trainer.arguments import training_arguments
    from evoinstruct.trainer.data import Collator, build_dataset, pad_token_id

    model_dir = Path(model_dir)
    cfg = TrainerConfig(
        base_model=str(model_dir),
        method="full",
        max_steps=steps,
        learning_rate=learning_rate,
        batch_size=8,
        grad_accumulation=1,
        max_length=max_length,
        device="cpu",
        logging_steps=max(1, steps // 4),
        save_steps=steps + 1,
        lr_scheduler="constant",
        warmup_ratio=0.0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dataset, _ = build_dataset(list(examples), tokenizer, cfg)
    with tempfile.TemporaryDirectory() as scratch:
        args = training_arguments(cfg, Path(scratch))
        args.save_strategy = "no"
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=Collator(pad_token_id(tokenizer)),
        )
        trainer.remove_callback(PrinterCallback)  # the demo shows its own progress
        output = trainer.train()
    model.save_pretrained(model_dir)
    return float(output.training_loss)
