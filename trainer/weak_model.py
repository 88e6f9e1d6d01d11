"""A genuinely weaker SmolLM2 for weak-to-strong experiments offline, made once and cached.

Only SmolLM2-135M-Instruct can be fetched here (`models.smollm2`), so the weak
supervisor is made from it by a fixed recipe (`WeakRecipe`):

1. keep `layers` of its 30 decoder layers (the others are dropped, the kept ones
   renumbered), which damages it: it answers in short sentences, mostly beside the point;
2. heal it by full fine-tuning for `steps` steps on the full model's answers (served by
   CTranslate2) to the first `tasks` packaged English tasks of the *weak half*
   (`split_tasks`: every other line, from the first). `heal_on = "plain"` (the default):
   its greedy answer to each bare task, so fluency comes back but constraint following,
   what the suite measures, is not taught. `"verified"`: constraints attached by the
   evolver (`draws` draws per task), answered through the responder (rejection sampling
   with `samples` answers, repair, the shortest passing answer kept), only answers
   passing every constraint kept.

The other half of the tasks is left for the experiment's own prompts
(`bench/weak_to_strong.py`), so the weak model never saw them. The result is a plain
transformers folder beside the fetched model, in the same cache and written the same way
(a temporary directory renamed into place under a file lock), named by the recipe's hash:

    smollm2-135m-instruct-weak-l<kept>-<hash>-float32/
        config.json, model.safetensors, tokenizer files, evoinstruct_source.json (the recipe,
        the data counts, the training loss)
    smollm2-135m-instruct-weak-data-<hash>/
        pool.db (the healing data: plain or verified answers), counts.json — shared by recipes that differ
        only in how they cut and heal (`WeakRecipe.data_tag`)

`python -m evoinstruct.trainer weak-model` makes it; a second call returns the folder at
once. The healing data is the slow part (the full model drawing answers on the CPU).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from evoinstruct.store.errors import ModelError

TASKS_FILE = "real_demo_tasks_en.txt"  # prompts/seeds/: 518 English tasks (98 one-line, 420 longer)
COUNTS = "counts.json"
Say = Callable[[str], None]


@dataclass(frozen=True)
class WeakRecipe:
    """How the weak model is made; its hash names the cached folder."""

    # 18 of 30: without 4-7 and 12-19, the blocks whose removal costs least (measured on the
    # full model's verified answers: 1.8 nats per token with every layer, 4.5 without these,
    # 14.7 without 14-27; keeping only the first six and the last two, it writes no word).
    layers: tuple[int, ...] = (0, 1, 2, 3, 8, 9, 10, 11, *range(20, 30))
    tasks: int = 160  # the first tasks of the weak half (of 259) that are answered
    # What heals it: the full model's plain answers to the bare tasks ("plain": fluency back,
    # constraint following not taught), or its verified answers to constrained prompts
    # ("verified": healed on exactly the skill the suite measures, the cut model caught up
    # with the full one there: 10.0% vs 11.0% on 200 suite prompts).
    heal_on: Literal["plain", "verified"] = "plain"
    draws: int = 1  # constraint draws per task ("verified")
    samples: int = 4  # answers drawn per constrained prompt by the full model
    answer_tokens: int = 160
    max_constraints: int = 2
    # The full model answers through CTranslate2 (float32: transformers' greedy tokens,
    # ~3x faster here); sampled answers differ from torch's, so it is part of the data.
    engine: Literal["torch", "ctranslate2"] = "ctranslate2"
    steps: int = 60  # full fine-tuning steps
    learning_rate: float = 1e-4
    batch_size: int = 4
    grad_accumulation: int = 2
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # recorded, hashed, not interpreted

    def tag(self) -> str:
        return f"l{len(self.layers)}-{_digest({**asdict(self), 'data': self.data_tag()})}"

    def data_tag(self) -> str:
        """The hash of what the healing data depends on — the fields and the very tasks
        answered (an edited tasks file is new data): recipes that differ only in how they
        cut and heal share it."""
        fields = {k: getattr(self, k) for k in DATA_FIELDS}
        return _digest({**fields, "task_texts": _digest(heal_tasks(self))})


# The fields the healing data depends on (the rest say how the model is cut and trained).
DATA_FIELDS = (
    "tasks",
    "heal_on",
    "draws",
    "samples",
    "answer_tokens",
    "max_constraints",
    "engine",
    "seed",
)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def split_tasks(tasks: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the weak half, the other half): every other task, from the first, heals the weak model."""
    return list(tasks[0::2]), list(tasks[1::2])


def packaged_tasks() -> list[str]:
    from evoinstruct.trainer.verified_data import read_tasks

    text = (resources.files("evoinstruct.prompts") / "seeds" / TASKS_FILE).read_text("utf-8")
    return read_tasks(text)


def heal_tasks(recipe: WeakRecipe) -> list[str]:
    """The tasks the full model answers for the healing: the first of the weak half."""
    return split_tasks(packaged_tasks())[0][: recipe.tasks]


def _cache_root(cache_dir: Path | None) -> Path:
    from evoinstruct.models.smollm2 import default_cache_dir

    return (cache_dir or default_cache_dir()).expanduser().resolve()


def weak_model_dir(cache_dir: Path | None, recipe: WeakRecipe) -> Path:
    from evoinstruct.models.smollm2 import MODEL_NAME

    return _cache_root(cache_dir) / f"{MODEL_NAME}-weak-{recipe.tag()}-float32"


def heal_data_dir(cache_dir: Path | None, recipe: WeakRecipe) -> Path:
    """Where the healing data is kept (a pool.db of its examples and counts.json)."""
    from evoinstruct.models.smollm2 import MODEL_NAME

    return _cache_root(cache_dir) / f"{MODEL_NAME}-weak-data-{recipe.data_tag()}"


def truncate(source: Path, layers: Sequence[int], out: Path) -> int:
    """Save a copy of the model at `source` keeping only `layers` (renumbered); returns
    its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    blocks = model.model.layers
    if (
        not layers
        or len(set(layers)) != len(layers)
        or not all(0 <= i < len(blocks) for i in layers)
    ):
        raise ValueError(f"layers must be distinct indexes below {len(blocks)}, got {list(layers)}")
    kept = [blocks[i] for i in sorted(layers)]
    for index, block in enumerate(kept):
        block.self_attn.layer_idx = index  # the KV cache is indexed by it
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in sorted(layers)]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def make_weak_smollm2(
    recipe: WeakRecipe | None = None,
    cache_dir: Path | None = None,
    *,
    progress: Say | None = None,
) -> Path:
    """The weak model's folder for `recipe`, made if missing (see the module docstring)."""
    from filelock import FileLock

    from evoinstruct.models.smollm2 import fetch_smollm2

    recipe = recipe or WeakRecipe()
    say = progress or (lambda _message: None)
    out = weak_model_dir(cache_dir, recipe)
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if out.is_dir():
            return out
        strong = fetch_smollm2(cache_dir, dtype="float32", progress=say)
        data = _heal_data(heal_data_dir(cache_dir, recipe), strong, recipe, say)
        work = _temporary(out)
        try:
            made = _make(recipe, strong, data, work, say)
            _share(made)
            os.rename(made, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(f"ready: {out}")
    return out


def _temporary(final: Path) -> Path:
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)  # under the lock: a killed build's
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))


def _heal_data(out: Path, strong: Path, recipe: WeakRecipe, say: Say) -> Path:
    """The healing data's folder, made if missing (the slow part: the full model answers)."""
    if out.is_dir():
        return out
    work = _temporary(out)
    try:
        from evoinstruct.store import open_store

        with open_store(work / "pool.db") as store:
            counts = asyncio.run(_heal_answers(store, strong, recipe, say))
            store.checkpoint_wal()
        (work / COUNTS).write_text(json.dumps(counts) + "\n", encoding="utf-8")
        for leftover in work.glob("pool.db-*"):  # the WAL, folded in above
            leftover.unlink()
        _share(work)
        os.rename(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _share(folder: Path) -> None:
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _make(recipe: WeakRecipe, strong: Path, data: Path, work: Path, say: Say) -> Path:
    from evoinstruct.models.smollm2 import SOURCE_FILE
    from evoinstruct.store import open_store
    from evoinstruct.trainer.config import TrainerConfig
    from evoinstruct.trainer.progress import StepSay
    from evoinstruct.trainer.train import train

    truncated = work / "truncated"
    parameters = truncate(strong, recipe.layers, truncated)
    say(f"kept layers {list(recipe.layers)} of the full model: {parameters / 1e6:.1f}M parameters")
    counts = json.loads((data / COUNTS).read_text(encoding="utf-8"))
    project = work / "heal"
    project.mkdir()
    shutil.copyfile(data / "pool.db", project / "pool.db")  # the trainer writes beside it
    store = open_store(project / "pool.db")
    try:
        kept = counts.get("verified" if recipe.heal_on == "verified" else "answered")
        if not kept:
            raise ModelError(f"the full model left no {recipe.heal_on} answer: nothing to heal on")
        say(f"healing on {kept} {recipe.heal_on} answers, {recipe.steps} full fine-tuning steps")
        cfg = TrainerConfig(
            base_model=str(truncated),
            method="full",
            device="cpu",
            precision="fp32",
            max_steps=recipe.steps,
            learning_rate=recipe.learning_rate,
            batch_size=recipe.batch_size,
            grad_accumulation=recipe.grad_accumulation,
            max_length=512,
            heldout_fraction=0.0,
            seed_share=0.0,
            replay_share=0.0,
            seed=recipe.seed,
            save_steps=10**6,  # a failed build starts again; no checkpoint is worth its write
            logging_steps=10,
        )
        result = train(cfg, project, store=store, callbacks=[StepSay(say, "healing")])
    finally:
        store.close()
    source = {
        "model": "SmolLM2-135M-Instruct cut to a weak supervisor for weak-to-strong experiments",
        "parent": json.loads((strong / SOURCE_FILE).read_text(encoding="utf-8")),
        "recipe": asdict(recipe),
        "tasks": f"prompts/seeds/{TASKS_FILE}: every other line from the first, the first {recipe.tasks}",
        "parameters": parameters,
        "data": counts,
        "train_loss": result.metrics.get("train_loss"),
        "global_step": result.metrics.get("global_step"),
    }
    (result.path / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return result.path


async def _heal_answers(store: Any, strong: Path, recipe: WeakRecipe, say: Say) -> dict[str, int]:
    """The full model's answers the weak model heals on (`recipe.heal_on`), into `store`."""
    from evoinstruct.agents.responder import ResponderConfig
    from evoinstruct.models.config import ModelConfig
    from evoinstruct.models.smollm2 import served_table
    from evoinstruct.models.transformers_backend import TransformersModel
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.trainer.verified_data import add_answered, add_verified

    weak_half = heal_tasks(recipe)
    served = {**served_table(strong, dtype="float32"), "engine": recipe.engine}
    model = TransformersModel(ModelConfig.model_validate({**served, "seed": recipe.seed}))

    def progress(stage: str, done: int, total: int) -> None:
        say(f"{stage}: {done}/{total}")

    try:
        if recipe.heal_on == "plain":
            # Its greedy answer, kept when cut at the limit: fluency is what it heals.
            plain = ResponderConfig(
                temperature=0.0, max_tokens=recipe.answer_tokens, on_truncated="keep"
            )
            return await add_answered(
                store, weak_half, model, PromptLibrary("en"), plain, batch_size=16,
                progress=progress,
            )  # fmt: skip
        responder = ResponderConfig(
            verifiable_samples=recipe.samples,
            verifiable_temperature=0.8,
            max_tokens=recipe.answer_tokens,
            repair=True,
            pick="shortest",
        )
        return await add_verified(
            store, weak_half, model, PromptLibrary("en"), responder, draws=recipe.draws,
            max_constraints=recipe.max_constraints, seed=recipe.seed, progress=progress,
        )  # fmt: skip
    finally:
        await model.aclose()
