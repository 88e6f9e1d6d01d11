"""The DPO stage of `objective = "sft+dpo"`: TRL's DPOTrainer on verified pairs, after SFT.

What the stage trains on, and how (METHODS 4; SPaR, Tülu 3):

* **Pairs** come from the responder's rejection sampling (`agents.preference` decides
  which answers may be chosen or rejected; the store keeps them). A version's plan fixes
  its pair ids: the pairs of its own training examples (new, seed, replay; a ReAlign
  rewrite stands for the example it rewrote), at most `pairs_per_prompt` each. Held-out
  examples, examples kept from the suite and rejected ones bring no pair.
* **Tokens**: prompt and answers go through the SFT stage's own encoder
  (`trainer.data.encode_example`), so the stage scores exactly the tokens SFT trained on
  (the prompt cut where generation starts, the answer ending in EOS). TRL's own
  tokenization of text rows would add a BOS with some tokenizers, and template turns
  after the EOS with others.
* **Reference = the SFT model.** The stage loads the SFT result and hands TRL a model
  holding that adapter: TRL copies it into a frozen second adapter (`ref`) and scores
  the reference with it (full fine-tuning and IA3: a second model loaded from the same
  folder).
  It is exact and costs one forward pass without gradients per step; precomputed
  reference log-probabilities would save that pass but must be recomputed on every
  restart, and with a fresh adapter TRL's default reference would be the base model,
  not SFT.
* **No drift**: beside DPO's loss the stage keeps an SFT term on the chosen answers
  (TRL's `sft` loss, weight `sft_weight`; RPO), so the verified answers SFT learned stay
  likely while the rejected ones are pushed down; and the gate judges the result like
  any version.
* **Restartable like SFT**: the SFT result is written whole to `sft/` in the run's
  partial directory (a temporary folder renamed) before the DPO stage starts; a restart
  that finds it skips SFT and resumes DPO from its last complete checkpoint
  (`dpo_checkpoints/`). Only the finished version is renamed and registered.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.records import Example
from evoinstruct.trainer.config import PreferenceConfig, TrainerConfig
from evoinstruct.trainer.data import encode_example, resolve_template

if TYPE_CHECKING:
    from datasets import Dataset

    from evoinstruct.store import Store

SFT_DIR = "sft"
SFT_METRICS = "sft_metrics.json"
DPO_CHECKPOINTS = "dpo_checkpoints"
REFERENCE_ADAPTER = "ref"  # the name TRL gives the frozen copy of a loaded adapter
# Adapter methods whose reference is a second model rather than TRL's adapter copy.
SEPARATE_REFERENCE = ("ia3",)
# The figures of TRL's log that say what the stage did: implicit rewards of chosen and
# rejected answers, their margin, and how often the chosen one wins.
REWARD_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


# --- which pairs ----------------------------------------------------------------------
def plan_pairs(store: Store, train: Sequence[Example], cfg: PreferenceConfig) -> list[str]:
    """Pair ids for a version whose training examples are `train`.

    Per example at most `pairs_per_prompt`: first those whose chosen answer is the one
    the example keeps (what SFT trains on), then those whose rejected answer fails the
    fewest constraints (the closest misses), then by id.
    """
    owners: dict[str, Example] = {}
    for example in train:
        owners.setdefault(example.id, example)
        if example.source == "rewritten" and example.parent_id:
            owners.setdefault(example.parent_id, example)
    by_example: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pair in store.preference_pairs_of(list(owners)):
        by_example[pair["example_id"]].append(pair)
    chosen: list[str] = []
    for example_id, pairs in by_example.items():
        kept = (owners[example_id].output or "").strip()
        pairs.sort(key=lambda p: (p["chosen"] != kept, len(p["rejected_failed"]), p["id"]))
        chosen.extend(p["id"] for p in pairs[: cfg.pairs_per_prompt])
    return chosen


# --- tokens ---------------------------------------------------------------------------
@dataclasses.dataclass
class PairStats:
    """What encoding did to the planned pairs; reported in the version's metrics."""

    pairs: int = 0
    prompts: int = 0
    missing: int = 0  # planned pairs (or their examples) no longer in the store
    dropped: int = 0  # prompt alone fills max_length: nothing to compare
    repaired_chosen: int = 0
    rejected_failed: dict[str, int] = dataclasses.field(default_factory=dict)


def encode_pairs(
    store: Store, pair_ids: Sequence[str], tokenizer: Any, cfg: TrainerConfig
) -> tuple[list[dict[str, Any]], PairStats]:
    """Rows of prompt_ids, chosen_ids and rejected_ids (TRL's tokenized preference rows)."""
    template = resolve_template(tokenizer, cfg.template)
    pairs = store.preference_pairs_by_id(list(pair_ids))
    examples = {e.id: e for e in store.get_many([p["example_id"] for p in pairs])}
    stats = PairStats(missing=len(pair_ids) - len(pairs))
    failed: dict[str, int] = defaultdict(int)
    rows: list[dict[str, Any]] = []
    prompts: set[str] = set()
    for pair in pairs:
        example = examples.get(pair["example_id"])
        if example is None:
            stats.missing += 1
            continue
        prompt_ids, chosen_ids = encode_example(
            tokenizer, template, dataclasses.replace(example, output=pair["chosen"])
        )
        _, rejected_ids = encode_example(
            tokenizer, template, dataclasses.replace(example, output=pair["rejected"])
        )
        if len(prompt_ids) >= cfg.max_length:
            stats.dropped += 1
            continue
        rows.append(
            {
                "pair_id": pair["id"],
                "prompt_ids": prompt_ids,
                "chosen_ids": chosen_ids,
                "rejected_ids": rejected_ids,
            }
        )
        prompts.add(example.id)
        stats.repaired_chosen += bool(pair["chosen_repaired"])
        for constraint in pair["rejected_failed"]:
            failed[constraint] += 1
    stats.pairs, stats.prompts = len(rows), len(prompts)
    stats.rejected_failed = dict(sorted(failed.items(), key=lambda kv: (-kv[1], kv[0])))
    return rows, stats


# --- the SFT result the stage starts from --------------------------------------------
def finished_sft(work: Path) -> dict[str, Any] | None:
    """The SFT stage's metrics when its result is complete in `work`, else None."""
    try:
        return json.loads((work / SFT_DIR / SFT_METRICS).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_sft(trainer: Any, work: Path, metrics: dict[str, Any], state: Any) -> None:
    """Write the SFT result whole: into a temporary folder, renamed to `sft/` at the end."""
    tmp = work / f"{SFT_DIR}.tmp"
    if state.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by a run killed while writing it
    state.wait_for_everyone()
    trainer.save_model(str(tmp))
    if state.is_main_process:
        (tmp / SFT_METRICS).write_text(json.dumps(metrics, default=str), encoding="utf-8")
        os.replace(tmp, work / SFT_DIR)
    state.wait_for_everyone()


def load_sft(cfg: TrainerConfig, work: Path) -> tuple[Any, Any]:
    """(the model to train, its reference or None) from the SFT result in `work`.

    None lets TRL copy the loaded LoRA adapter into its frozen reference adapter. TRL's
    copy takes the parameters named `.default.`, which IA3's (`ia3_l.default`) are not:
    IA3, like full fine-tuning, gets a second copy of the SFT model as its reference.
    """
    from peft import PeftModel

    from evoinstruct.trainer.methods import load_base_model, peft_config

    sft = str(work / SFT_DIR)
    if peft_config(cfg) is None:
        return load_base_model(cfg, sft), load_base_model(cfg, sft)
    base = load_base_model(cfg)
    if cfg.gradient_checkpointing:
        base.enable_input_require_grads()
    model = PeftModel.from_pretrained(base, sft, is_trainable=True)
    if cfg.method in SEPARATE_REFERENCE:
        # Merged: TRL patches the reference's LM head, which it finds on a plain model.
        return model, PeftModel.from_pretrained(load_base_model(cfg), sft).merge_and_unload()
    return model, None


# --- the stage ------------------------------------------------------------------------
def dpo_arguments(cfg: TrainerConfig, output_dir: Path) -> Any:
    """TRL's DPOConfig: the SFT stage's arguments, with the stage's own steps and loss."""
    from trl import DPOConfig

    from evoinstruct.trainer.arguments import training_kwargs

    dpo = cfg.dpo
    kwargs = training_kwargs(cfg, output_dir)
    kwargs.update(
        per_device_train_batch_size=dpo.batch_size or cfg.batch_size,
        gradient_accumulation_steps=dpo.grad_accumulation or cfg.grad_accumulation,
        num_train_epochs=dpo.epochs,
        max_steps=dpo.max_steps,
        learning_rate=dpo.resolved_learning_rate(cfg.resolved_learning_rate),
        # The rows keep their pair id for the record; the trainer takes its own columns.
        remove_unused_columns=True,
        include_num_input_tokens_seen="no",
    )
    # DPOConfig's own defaults differ from TrainingArguments' (checkpointing and bf16 on):
    # the SFT stage's arguments name both, so its choices hold here too.
    loss_type, weights = ["sigmoid"], [1.0]
    if dpo.sft_weight > 0:
        loss_type, weights = ["sigmoid", "sft"], [1.0, dpo.sft_weight]
    return DPOConfig(
        **kwargs,
        beta=dpo.beta,
        loss_type=loss_type,
        loss_weights=weights,
        max_length=cfg.max_length,
        truncation_mode="keep_start",
    )


def _trainer_class() -> type:
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer on rows the SFT stage's encoder tokenized (see the module doc)."""

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, name: str):
            return dataset

        def _send_telemetry(self) -> None:
            # A training run reports to no server of its own accord (the project works offline).
            return None

    return PretokenizedDPOTrainer


def build_dpo_trainer(
    cfg: TrainerConfig,
    work: Path,
    dataset: Dataset,
    tokenizer: Any,
    callbacks: Sequence[Any],
) -> Any:
    """The DPO trainer on the SFT result in `work`, its reference that same SFT model."""
    from transformers import PrinterCallback, set_seed

    set_seed(cfg.seed)
    model, reference = load_sft(cfg, work)
    trainer = _trainer_class()(
        model=model,
        ref_model=reference,
        args=dpo_arguments(cfg, work / DPO_CHECKPOINTS),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_dpo(
    cfg: TrainerConfig,
    store: Store,
    pair_ids: Sequence[str],
    work: Path,
    tokenizer: Any,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, dict[str, Any]]:
    """Run (or resume) the stage on the SFT result in `work`; returns the trainer, whose
    model is the trained version without its reference adapter, and the stage's metrics."""
    from datasets import Dataset

    from evoinstruct.trainer.arguments import last_complete_checkpoint
    from evoinstruct.trainer.progress import begin_phase

    rows, stats = encode_pairs(store, pair_ids, tokenizer, cfg)
    if not rows:
        raise InputError("none of the planned preference pairs can be trained on")
    begin_phase(callbacks, "dpo")
    trainer = build_dpo_trainer(cfg, work, Dataset.from_list(rows), tokenizer, callbacks)
    resume = last_complete_checkpoint(work / DPO_CHECKPOINTS)
    output = trainer.train(resume_from_checkpoint=resume)
    model = trainer.model
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REFERENCE_ADAPTER)  # the version is the trained adapter alone
    metrics = dpo_metrics(trainer, output, stats, cfg.dpo)
    metrics["resumed_from"] = Path(resume).name if resume else None
    return trainer, metrics


def dpo_metrics(
    trainer: Any, output: Any, stats: PairStats, cfg: PreferenceConfig
) -> dict[str, Any]:
    """The stage's figures: pairs, loss, and TRL's reward statistics (first and last logged)."""
    logged = [e for e in trainer.state.log_history if "rewards/margins" in e]
    rewards = {
        key: {"first": logged[0].get(key), "last": logged[-1].get(key)} if logged else None
        for key in REWARD_KEYS
    }
    return {
        **dataclasses.asdict(stats),
        "beta": cfg.beta,
        "sft_weight": cfg.sft_weight,
        "train_loss": output.training_loss,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "rewards": rewards,
        "log_history": trainer.state.log_history,
    }


def describe(metrics: dict[str, Any] | None) -> str | None:
    """One line on a version's DPO stage (None when it had none)."""
    if not metrics:
        return None
    if "skipped" in metrics:
        return f"DPO stage skipped: {metrics['skipped']}"
    rewards = metrics.get("rewards") or {}
    margin = (rewards.get("rewards/margins") or {}).get("last")
    accuracy = (rewards.get("rewards/accuracies") or {}).get("last")
    return (
        f"DPO stage: {metrics['pairs']} pairs on {metrics['prompts']} prompts, "
        f"{metrics['global_step']} steps, last reward margin {margin}, reward accuracy {accuracy}"
    )


def brief(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stage's metrics without its log (for one-line summaries)."""
    return None if metrics is None else {k: v for k, v in metrics.items() if k != "log_history"}


def skipped(reason: str, pairs: int) -> dict[str, Any]:
    """The metrics of a stage that did not run: the version is its SFT model."""
    return {"skipped": reason, "pairs": pairs}
