"""Fixtures for the trainer tests: a pool with seeds and accepted examples, tiny configs.

Imported explicitly by the trainer test modules. The tiny model comes from the
shared session fixture `tiny_model_dir`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from evoinstruct.store import Store, open_store
from evoinstruct.store.records import ExampleDraft
from evoinstruct.trainer.config import TrainerConfig

EN_TOPICS = ["the sea", "the sky", "saving water", "prime numbers", "reading books", "Paris"]
ZH_TOPICS = ["春天", "天空", "节约用水", "质数", "读书", "北京"]


def pool_drafts(n_new: int, n_seed: int = 4) -> tuple[list[ExampleDraft], list[ExampleDraft]]:
    """Seeds (with outputs) and generated examples, half English, half Chinese."""
    seeds = [
        ExampleDraft(
            instruction=f"Write one sentence about {EN_TOPICS[i % 6]} (seed {i}).",
            output=f"Here is a sentence about {EN_TOPICS[i % 6]}.",
            source="seed",
        )
        for i in range(n_seed)
    ]
    new = []
    for i in range(n_new):
        if i % 2:
            new.append(
                ExampleDraft(
                    instruction=f"请写一句关于{ZH_TOPICS[i % 6]}的话（第{i}个）。",
                    output=f"{ZH_TOPICS[i % 6]}很美。" * (1 + i % 3),
                    language="zh",
                )
            )
        else:
            new.append(
                ExampleDraft(
                    instruction=f"Explain {EN_TOPICS[i % 6]} in simple words ({i}).",
                    input="Keep it short." if i % 4 == 0 else "",
                    output=f"The capital of France is Paris. {EN_TOPICS[i % 6]}. " * (1 + i % 3),
                    language="en",
                )
            )
    return seeds, new


def fill_pool(store: Store, n_new: int, n_seed: int = 4, round: int = 1) -> list[str]:
    """Add seeds (round 0) and accepted generated examples (`round`); returns the new ids."""
    seeds, new = pool_drafts(n_new, n_seed)
    store.add_candidates(seeds, 0)
    ids = store.add_candidates(new, round).ids
    store.set_status(ids, "accepted")
    return ids


def tiny_config(base: Path, **overrides: Any) -> TrainerConfig:
    """A config that trains the tiny model in a second on the CPU."""
    values: dict[str, Any] = {
        "base_model": str(base),
        "device": "cpu",
        "max_steps": 6,
        "batch_size": 4,
        "grad_accumulation": 1,
        "max_length": 96,
        "save_steps": 1000,
        "logging_steps": 1,
        "learning_rate": 5e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        **overrides,
    }
    return TrainerConfig(**values)


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine, two threads contend and run ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


class CaptureModel(TrainerCallback):
    """Keeps the trainable weights at the start and the model object at the end of training."""

    def __init__(self) -> None:
        self.model: Any = None
        self.initial: dict[str, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        self.initial = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        self.model = model


@dataclass
class TrainedProject:
    root: Path
    store: Store
    cfg: TrainerConfig
    result: Any
    model: Any  # the in-memory model at the end of training
    new_ids: list[str]


@pytest.fixture(scope="session")
def trained_lora(tiny_model_dir: Path, tmp_path_factory) -> Iterator[TrainedProject]:
    """A project whose pool trained LoRA v1 for 20 steps; shared by lora/eval/promote tests."""
    from evoinstruct.trainer.train import train

    root = tmp_path_factory.mktemp("lora_project")
    store = open_store(root / "pool.db")
    new_ids = fill_pool(store, n_new=40)
    cfg = tiny_config(tiny_model_dir, max_steps=20, heldout_fraction=0.2)
    capture = CaptureModel()
    with single_torch_thread():
        result = train(cfg, root, store=store, callbacks=[capture])
    yield TrainedProject(root, store, cfg, result, capture.model, new_ids)
    store.close()
