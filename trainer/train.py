"""One training run: pool -> mix -> transformers Trainer -> `models/v{K}/` -> registered version.

A run continues from the active (promoted) version's weights when its adapter
has the same shape (`init_from = "active"`), else starts from the base model.
With `objective = "sft+dpo"` a DPO stage on the verified preference pairs of the
same examples follows SFT (`trainer.preference`); the result is still one version.

A thin main over library calls (transformers' Trainer, not TRL's SFTTrainer:
we tokenize prompt and response ourselves to get exact label masks and pack
whole examples with position ids, so SFTTrainer's own formatting, masking and
packing would only have to be switched off again). The run is restartable:

* it works in `models/.v{K}.partial/`: `plan.json` (the example ids and the
  resolved config, fixed when the run starts), `checkpoints/` (Trainer
  checkpoints) and `out/` (the final artifacts);
* a restart finds the partial directory, rebuilds the same data from the plan
  and resumes from the last complete checkpoint;
* with a DPO stage, the finished SFT result is written to `sft/` and the stage
  keeps its checkpoints in `dpo_checkpoints/`: a restart after SFT resumes DPO;
* only when everything is written does `out/` become `models/v{K}/` (one
  rename), and only then is the version registered — a killed run never
  registers a half-written version. A version directory that exists but was
  not registered (killed between rename and register) is registered on the
  next start.

Under `accelerate launch` every process runs this; the main process plans,
renames and registers, the others follow the plan. Each process batches only its
shard of the data; `metrics["processes"]` records how many joined and what each read.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import ConfigError, EvoError, InputError, Interrupted
from evoinstruct.trainer.arguments import last_complete_checkpoint, training_arguments
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.data import (
    Collator,
    TrainingMix,
    build_dataset,
    count_new,
    pad_token_id,
    select_mix,
    starting_version,
)
from evoinstruct.trainer.generation_data import GenerationExample

PLAN = "plan.json"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
TRAIN_CONFIG = "train_config.json"  # not config.json: full fine-tuning writes the model's own there
LOCK = ".train.lock"


@dataclass
class TrainResult:
    version: str
    path: Path
    metrics: dict[str, Any]
    resumed_from: str | None


# --- files ------------------------------------------------------------------------------
def _write_json(path: Path, value: Any) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def partial_dir(models_dir: Path, version: str) -> Path:
    return models_dir / f".{version}.partial"


# --- registration -------------------------------------------------------------------------
def register_version(store: Any, version_dir: Path) -> str:
    """Record a finished version directory in the store (idempotent)."""
    manifest = _read_json(version_dir / MANIFEST)
    metrics = _read_json(version_dir / METRICS)
    config = _read_json(version_dir / TRAIN_CONFIG)
    if manifest is None or metrics is None or config is None:
        raise EvoError(f"{version_dir} is not a complete model version")
    version = manifest["version"]
    trained = manifest["new"] + manifest["seed"] + manifest["replay"]
    with store.transaction():
        store.record_training_manifest(version, trained, role="train")
        store.record_training_manifest(version, manifest["heldout"], role="heldout")
        # An older version's manifest has no generation examples.
        store.record_training_manifest(version, manifest.get("generation", []), role="generation")
        store.register_model_version(
            version,
            base=config["base_model"],
            method=config["method"],
            path=str(version_dir.resolve()),
            round=manifest.get("round"),
            metrics=metrics,
            config=config,
        )
    return version


def _register_orphans(store: Any, models_dir: Path) -> None:
    """Register version directories a killed run renamed but did not register."""
    for path in sorted(models_dir.glob("v*")):
        manifest = _read_json(path / MANIFEST)
        if manifest and store.model_version(manifest["version"]) is None:
            register_version(store, path)


# --- planning -----------------------------------------------------------------------------
def _new_plan(store: Any, cfg: TrainerConfig, models_dir: Path) -> dict[str, Any]:
    parent = starting_version(store, cfg)
    parent_version = parent["version"] if parent else None
    mix: TrainingMix = select_mix(store, cfg, random.Random(cfg.seed), parent=parent_version)
    if not mix.new:
        raise InputError(
            "no new accepted examples to train on (every accepted example is a seed, "
            f"held out, or already trained on by {parent_version or 'an earlier version'})"
        )
    version = store.next_model_version()
    number = int(version.lstrip("v"))
    while (models_dir / f"v{number}").exists():
        number += 1
    version = f"v{number}"
    manifest = mix.manifest()
    if cfg.objective == "sft+dpo":
        from evoinstruct.trainer.preference import plan_pairs

        # Fixed with the examples: a restart, and a bench training the same plan both
        # ways, see the same pairs.
        manifest["pairs"] = plan_pairs(store, mix.train, cfg.dpo)
    rounds = [e.round for e in mix.train]
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "round": max(rounds) if rounds else None,
        "parent": {"version": parent_version, "path": parent["path"]} if parent else None,
        "identity": cfg.identity(),
        "config": cfg.model_dump(mode="json"),
        "manifest": {"version": version, "round": max(rounds) if rounds else None, **manifest},
        # The texts themselves: a resumed run trains on what was planned, whatever the pool
        # decided since about the tasks they list.
        "generation": [g.to_dict() for g in mix.generation],
    }


def prepare_plan(
    store: Any, cfg: TrainerConfig, models_dir: Path, *, fresh: bool
) -> dict[str, Any]:
    """Continue the killed run's plan if there is one, else plan a new version."""
    partials = sorted(p for p in models_dir.glob(".v*.partial") if p.is_dir())
    for path in partials:
        plan = _read_json(path / PLAN)
        if fresh or plan is None:
            shutil.rmtree(path)
            continue
        if plan["identity"] != cfg.identity():
            raise ConfigError(
                f"{path} holds a killed run of {plan['version']} with a different trainer "
                "config; restore that config to resume it, or pass --fresh to discard it",
                field="trainer",
            )
        return plan
    plan = _new_plan(store, cfg, models_dir)
    work = partial_dir(models_dir, plan["version"])
    work.mkdir(parents=True)
    _write_json(work / PLAN, plan)
    return plan


# --- training -----------------------------------------------------------------------------
def _rate(tokens: int, seconds: float | None) -> float | None:
    return tokens / seconds if tokens and seconds else None


def _metrics(trainer: Any, output: Any, plan: dict[str, Any], stats: Any) -> dict[str, Any]:
    manifest = plan["manifest"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    runtime = output.metrics.get("train_runtime")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "train_loss": output.training_loss,
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_runtime_s": runtime,
        "train_tokens_per_second": _rate(trainer.state.num_input_tokens_seen, runtime),
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "trainable_params": trainable,
        "examples": {
            role: len(manifest.get(role, []))
            for role in ("new", "seed", "replay", "heldout", "generation")
        },
        "tokenization": stats.summary(),
        "log_history": trainer.state.log_history,
    }


class ShardLog:
    """One process's collator, counting the rows it batched and the example ids in them.

    Under several processes each batches only its own shard of the data; gathered after
    training, the counts show every process took part and that the shards differed.
    """

    def __init__(self, collate: Collator) -> None:
        self.collate = collate
        self.rows = 0
        self.ids: set[str] = set()

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        self.rows += len(features)
        for row in features:
            self.ids.update(row.get("example_ids") or [row["example_id"]])
        return self.collate(features)


def _processes(state: Any, log: ShardLog) -> dict[str, Any]:
    """What each process read, gathered from all of them (a collective: every rank calls it).

    The data loader reads one batch ahead, so `rows_read` may exceed the rows trained on
    by a batch per process.
    """
    from accelerate.utils import gather_object

    read = gather_object([(log.rows, sorted(log.ids))])
    return {
        "world_size": state.num_processes,
        "distributed_type": state.distributed_type.value,
        "backend": state.backend,
        "rows_read": [rows for rows, _ in read],
        "distinct_examples_read": [len(ids) for _, ids in read],
        "distinct_examples_all": len(set().union(*(ids for _, ids in read))),
    }


def _check_joined(state: Any) -> None:
    """Refuse to train when the launcher started more processes than accelerate joined.

    Without a GPU and with device = "auto", accelerate leaves each launched process on its
    own; every one would then act as the main process and write the same version.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > state.num_processes:
        raise ConfigError(
            f"{launched} training processes were launched but accelerate joined "
            f"{state.num_processes}; on a machine without GPUs set trainer.device = 'cpu'",
            field="trainer.device",
        )


def _load_tokenizer(base_model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base_model)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load {base_model!r}: {exc}", field="trainer.base_model") from exc


def train(
    cfg: TrainerConfig,
    project: str | Path,
    *,
    store: Any | None = None,
    fresh: bool = False,
    callbacks: list[Any] | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train the next student version from the project's pool; resume a killed run first.

    `stop`, once set, ends the run early (callbacks should include `StopOnRequest` on the
    same event, which checkpoints the last finished step): it raises Interrupted, and the
    next run resumes from that checkpoint.
    """
    from accelerate import PartialState
    from filelock import FileLock, Timeout

    from evoinstruct.store import open_store
    from evoinstruct.trainer.methods import check_supported

    if not cfg.base_model:
        raise ConfigError(
            "no base model to train: set trainer.base_model", field="trainer.base_model"
        )
    check_supported(cfg)  # fail before planning, so a bad config leaves no partial run
    tokenizer = _load_tokenizer(cfg.base_model)
    project = Path(project)
    models_dir = project / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    own_store = store is None
    store = store or open_store(project / "pool.db")
    # Accelerate's state is a process-wide singleton: the first init decides, so tell it
    # about a forced CPU here (a CPU run under torchrun then becomes MULTI_CPU, not NO).
    state = PartialState(cpu=cfg.device == "cpu")
    lock = FileLock(str(models_dir / LOCK))
    try:
        _check_joined(state)
        if state.is_main_process:
            try:
                lock.acquire(timeout=0)
            except Timeout as exc:
                raise EvoError(f"another training run is using {models_dir}") from exc
        with state.main_process_first():
            if state.is_main_process:
                _register_orphans(store, models_dir)
            plan = prepare_plan(store, cfg, models_dir, fresh=fresh and state.is_main_process)
        return _run(cfg, store, plan, models_dir, state, tokenizer, callbacks or [], stop)
    finally:
        if lock.is_locked:
            lock.release()
        if own_store:
            store.close()


def _run(
    cfg: TrainerConfig,
    store: Any,
    plan: dict[str, Any],
    models_dir: Path,
    state: Any,
    tokenizer: Any,
    callbacks: list[Any],
    stop: threading.Event | None = None,
) -> TrainResult:
    from evoinstruct.trainer.evaluate import heldout_loss
    from evoinstruct.trainer.preference import (
        DPO_CHECKPOINTS,
        finished_sft,
        save_sft,
        skipped,
        train_dpo,
    )

    version = plan["version"]
    work = partial_dir(models_dir, version)
    manifest = plan["manifest"]
    pairs = manifest.get("pairs") if cfg.objective == "sft+dpo" else None
    skip = None
    if pairs is not None and len(pairs) < cfg.dpo.min_pairs:
        skip = skipped(
            f"{len(pairs)} preference pairs, fewer than min_pairs={cfg.dpo.min_pairs}", len(pairs)
        )
    with_dpo = pairs is not None and skip is None
    # A restart whose SFT stage finished goes straight on to the DPO stage.
    metrics = finished_sft(work) if with_dpo else None
    if metrics is None:
        trainer, metrics = _train_sft(cfg, store, plan, work, state, tokenizer, callbacks, stop)
        if with_dpo:
            save_sft(trainer, work, metrics, state)
            del trainer  # the stage loads the SFT result afresh, as a restart does
    if with_dpo:
        assert pairs is not None
        trainer, metrics["dpo"] = train_dpo(cfg, store, pairs, work, tokenizer, callbacks)
        # The DPO stage stops on the same request; its checkpoint is where the next start resumes.
        _check_stop(stop, version, last_complete_checkpoint(work / DPO_CHECKPOINTS))
        if trainer.args.world_size == 1:
            metrics["dpo"]["sft_heldout_loss"] = metrics.get("heldout_loss")
            heldout = store.get_many(manifest["heldout"])
            metrics["heldout_loss"] = heldout_loss(trainer.model, tokenizer, heldout, cfg).loss
    elif skip is not None:
        metrics["dpo"] = skip
    metrics["objective"] = cfg.objective
    out = work / "out"
    if state.is_main_process and out.exists():
        shutil.rmtree(out)  # left by a run killed while writing; rewritten whole below
    state.wait_for_everyone()
    # The Trainer turned the KV cache off for training; a saved full model must serve with it.
    trainer.model.config.use_cache = True
    trainer.save_model(str(out))  # adapter (or full weights) and tokenizer; all ranks for FSDP
    final = models_dir / version
    if state.is_main_process:
        metrics["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        config = {
            **cfg.model_dump(mode="json"),
            "learning_rate": cfg.resolved_learning_rate,
            "parent_version": (plan.get("parent") or {}).get(
                "version"
            ),  # the lineage "new" examples are new to
        }
        _write_json(out / METRICS, metrics)
        _write_json(out / TRAIN_CONFIG, config)
        _write_json(out / MANIFEST, {**manifest, "tokenization": metrics["tokenization"]})
        os.replace(out, final)
        shutil.rmtree(work)
        register_version(store, final)
    state.wait_for_everyone()
    return TrainResult(version, final, metrics, metrics["resumed_from"])


def _train_sft(
    cfg: TrainerConfig,
    store: Any,
    plan: dict[str, Any],
    work: Path,
    state: Any,
    tokenizer: Any,
    callbacks: list[Any],
    stop: threading.Event | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The SFT stage (resumed from its last checkpoint): the trainer and its metrics."""
    from transformers import PrinterCallback, Trainer, set_seed

    from evoinstruct.trainer.evaluate import heldout_loss
    from evoinstruct.trainer.methods import prepare_model

    version = plan["version"]
    manifest = plan["manifest"]
    examples = store.get_many(manifest["new"] + manifest["seed"] + manifest["replay"])
    examples += [GenerationExample.from_dict(g).as_example() for g in plan.get("generation", [])]
    dataset, stats = build_dataset(examples, tokenizer, cfg)
    if len(dataset) == 0:
        raise InputError(f"every example of {version} was too long for max_length {cfg.max_length}")
    set_seed(cfg.seed)  # before the adapter is created: its initial weights are random
    parent = plan.get("parent") or {}
    model = prepare_model(cfg, init_from=parent.get("path"))
    shard_log = ShardLog(Collator(pad_token_id(tokenizer)))
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, work / "checkpoints"),
        train_dataset=dataset,
        data_collator=shard_log,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # Without tqdm the Trainer prints every log dict to stdout; the CLI prints, not the library.
    trainer.remove_callback(PrinterCallback)
    output, resume = train_resumably(trainer, work / "checkpoints", stop, version)
    metrics = _metrics(trainer, output, plan, stats)
    metrics["resumed_from"] = Path(resume).name if resume else None
    metrics["parent_version"] = parent.get("version")
    metrics["processes"] = _processes(state, shard_log)
    if trainer.args.world_size == 1:
        heldout = store.get_many(manifest["heldout"])
        metrics["heldout_loss"] = heldout_loss(trainer.model, tokenizer, heldout, cfg).loss
    return trainer, metrics


def train_resumably(
    trainer: Any, checkpoints: Path, stop: threading.Event | None, label: str
) -> tuple[Any, str | None]:
    """`trainer.train()` from the last complete checkpoint in `checkpoints`; raises Interrupted
    (naming where the next start resumes) when `stop` is set before or during it. Returns the
    train output and the checkpoint it resumed from."""
    resume = last_complete_checkpoint(checkpoints)
    _check_stop(stop, label, resume)
    output = trainer.train(resume_from_checkpoint=resume)
    _check_stop(stop, label, last_complete_checkpoint(checkpoints))
    return output, resume


def _check_stop(stop: threading.Event | None, version: str, checkpoint: str | None) -> None:
    if stop is not None and stop.is_set():
        at = Path(checkpoint).name if checkpoint else "its start"
        raise Interrupted(
            f"training {version} stopped on request; the next start resumes it at {at}"
        )


def training_due(store: Any, cfg: TrainerConfig, round_number: int) -> tuple[bool, str]:
    """The graph's schedule: every `train_every` rounds, once `train_min_new` examples wait."""
    if round_number % cfg.train_every != 0:
        return False, f"round {round_number} is not a multiple of train_every={cfg.train_every}"
    waiting = count_new(store, cfg)
    if waiting < cfg.train_min_new:
        return (
            False,
            f"{waiting} new accepted examples, fewer than train_min_new={cfg.train_min_new}",
        )
    return True, f"{waiting} new accepted examples"
