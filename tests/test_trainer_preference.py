"""objective = "sft+dpo" on the tiny llama: DPO after SFT on the verified pairs of the version's
own training examples, reference = the SFT model; the adapter moves and the base does not; one
version, registered once, restartable after SFT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, TrainerCallback

from evoinstruct.store import Store, open_store
from evoinstruct.store.records import PreferencePair
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.preference import DPO_CHECKPOINTS, SFT_DIR
from evoinstruct.trainer.progress import StepReporter
from evoinstruct.trainer.train import MANIFEST, METRICS, partial_dir, train
from tests.conftest_trainer import CaptureModel, fill_pool, tiny_config

pytest_plugins = ["tests.conftest_trainer"]


def add_pairs(store: Store, ids: list[str]) -> None:
    """Two verified pairs per example: the kept answer against two failing ones."""
    pairs = []
    for example in store.get_many(ids):
        chosen = example.output or ""
        wrong = "，错误答案。" if example.language == "zh" else ", WRONG ANSWER, SHOUTED."
        for n in range(2):
            pairs.append(
                PreferencePair(
                    example.id,
                    chosen,
                    f"{chosen}{wrong * (n + 1)}",
                    ["punctuation:no_comma"] + (["change_case:english_lowercase"] * n),
                )
            )
    store.add_preference_pairs(pairs, 1)


def dpo_config(base: Path, **dpo: Any) -> TrainerConfig:
    return tiny_config(
        base,
        objective="sft+dpo",
        heldout_fraction=0.25,
        dpo={"max_steps": 4, "min_pairs": 4, "learning_rate": 5e-3, **dpo},
    )


@pytest.fixture
def project(tmp_path: Path):
    store = open_store(tmp_path / "pool.db")
    ids = fill_pool(store, n_new=24)
    add_pairs(store, ids)
    yield tmp_path, store, ids
    store.close()


def _lora(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


@pytest.mark.slow
def test_dpo_moves_the_adapter_from_the_sft_reference_and_registers_one_version(
    project, tiny_model_dir: Path, one_thread, capsys
) -> None:
    root, store, _ = project
    capture, reporter = CaptureModel(), StepReporter()
    result = train(dpo_config(tiny_model_dir), root, store=store, callbacks=[capture, reporter])

    # One version, registered once, with the stage's figures.
    assert [v["version"] for v in store.model_versions()] == ["v1"]
    assert not list((root / "models").glob(".v*.partial"))
    metrics = json.loads((result.path / METRICS).read_text())
    manifest = json.loads((result.path / MANIFEST).read_text())
    dpo = metrics["dpo"]
    assert metrics["objective"] == "sft+dpo" and dpo["global_step"] == 4
    assert dpo["pairs"] == len(manifest["pairs"]) and dpo["beta"] == 0.1
    assert dpo["rejected_failed"]["punctuation:no_comma"] == dpo["pairs"]
    assert set(dpo["rewards"]) >= {"rewards/margins", "rewards/accuracies", "rewards/chosen"}
    assert store.model_version("v1")["metrics"]["dpo"]["pairs"] == dpo["pairs"]

    # Pairs of the version's own training examples only: none of a held-out example's.
    trained = set(manifest["new"] + manifest["seed"] + manifest["replay"])
    assert manifest["heldout"] and trained
    owners = {p["example_id"] for p in store.preference_pairs_by_id(manifest["pairs"])}
    assert owners and owners <= trained and not owners & set(manifest["heldout"])
    assert dpo["pairs"] == 2 * len(owners)  # pairs_per_prompt = 2

    # The reference is the SFT model the stage starts from: at the first step the policy
    # equals it, so the implicit rewards are zero (the base model would not give zero).
    first = dpo["rewards"]["rewards/chosen"]["first"]
    assert first == pytest.approx(0.0, abs=1e-6)
    assert dpo["rewards"]["rewards/margins"]["first"] == pytest.approx(0.0, abs=1e-6)
    assert dpo["rewards"]["rewards/margins"]["last"] > 0  # and then it learns the pairs

    # DPO changed the adapter (capture.initial is the SFT result the stage began with)...
    final = _lora(capture.model)
    start = {k.replace(".default", ""): v for k, v in capture.initial.items() if "lora_" in k}
    moved = [k for k, v in final.items() if not torch.equal(v, start[k.replace(".default", "")])]
    assert moved
    # ...and not the base, and the saved version is that adapter alone (no reference copy).
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    for key, value in capture.model.state_dict().items():
        if "lora_" not in key:
            name = key.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(value, original[name]), key
    assert not (result.path / "ref").exists() and not any(".ref." in k for k in final)
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(result.path)
    )
    assert all(torch.equal(v, final[k]) for k, v in _lora(loaded).items())

    # The daemon sees the stage's steps as a phase of their own.
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    phases = [x["progress"]["phase"] for x in lines if "progress" in x]
    assert phases.count("sft") == 6 and phases.count("dpo") == 4


class CrashInDPO(TrainerCallback):
    """Raises once the DPO stage's second step is saved, as a killed process would stop there."""

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if type(args).__name__ == "DPOConfig" and state.global_step == 2:
            raise KeyboardInterrupt("killed during DPO")


@pytest.mark.slow
def test_a_run_killed_during_dpo_registers_nothing_and_resumes_after_sft(
    project, tiny_model_dir: Path, one_thread, capsys
) -> None:
    root, store, _ = project
    cfg = dpo_config(tiny_model_dir, max_steps=4)
    cfg = cfg.model_copy(update={"save_steps": 1})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, root, store=store, callbacks=[CrashInDPO()])
    assert store.model_versions() == [] and not (root / "models" / "v1").exists()
    work = partial_dir(root / "models", "v1")
    assert (work / SFT_DIR / "adapter_model.safetensors").is_file()
    assert (work / DPO_CHECKPOINTS / "checkpoint-2").is_dir()

    capsys.readouterr()
    result = train(cfg, root, store=store, callbacks=[StepReporter()])
    assert [v["version"] for v in store.model_versions()] == ["v1"]
    dpo = result.metrics["dpo"]
    assert dpo["resumed_from"] == "checkpoint-2" and dpo["global_step"] == 4
    # SFT did not run again: the second start trained DPO's last two steps, nothing else.
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    steps = [(x["progress"]["phase"], x["progress"]["step"]) for x in lines if "progress" in x]
    assert steps == [("dpo", 3), ("dpo", 4)]
    assert result.metrics["global_step"] == 6 and not work.exists()


def test_too_few_pairs_keep_the_sft_model_and_say_why(
    project, tiny_model_dir: Path, one_thread
) -> None:
    root, store, _ = project
    result = train(dpo_config(tiny_model_dir, min_pairs=10_000), root, store=store)
    assert result.metrics["dpo"]["skipped"].endswith("fewer than min_pairs=10000")
    assert result.metrics["objective"] == "sft+dpo"
    assert [v["version"] for v in store.model_versions()] == ["v1"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ia3", "full"])
def test_the_reference_is_the_sft_model_for_other_methods_too(
    method: str, project, tiny_model_dir: Path, one_thread
) -> None:
    # TRL copies only LoRA-named adapter weights into its reference adapter; IA3 and full
    # fine-tuning get a second copy of the SFT model, which must equal the policy at first.
    root, store, _ = project
    cfg = tiny_config(
        tiny_model_dir,
        method=method,
        max_steps=2,
        objective="sft+dpo",
        heldout_fraction=0.25,
        dpo={"max_steps": 1, "min_pairs": 4},
    )
    rewards = train(cfg, root, store=store).metrics["dpo"]["rewards"]
    assert rewards["rewards/chosen"]["first"] == pytest.approx(0.0, abs=1e-4)
    assert rewards["rewards/rejected"]["first"] == pytest.approx(0.0, abs=1e-4)


def test_dpo_needs_a_method_with_a_reference(tiny_model_dir: Path) -> None:
    with pytest.raises(ValidationError, match="reference"):
        tiny_config(tiny_model_dir, objective="sft+dpo", method="prefix")
    assert TrainerConfig(objective="sft+dpo", method="full").dpo.beta == 0.1


def test_the_daemon_shows_the_dpo_stage_as_a_bar_of_its_own() -> None:
    from evoinstruct.graph.round.training import step_event

    sft = {"step": 3, "max_steps": 6, "loss": 2.5, "phase": "sft"}
    dpo = {"step": 1, "max_steps": 4, "loss": None, "phase": "dpo"}
    assert step_event(sft) == {"stage": "train", "done": 3, "total": 6, "loss": 2.5}
    assert step_event(dpo) == {"stage": "train dpo", "done": 1, "total": 4, "loss": None}
    del sft["phase"]  # a trainer that names no phase is training SFT
    assert step_event(sft)["stage"] == "train"


def test_one_line_on_the_stage_for_the_command_line() -> None:
    from evoinstruct.trainer.preference import describe

    assert describe(None) is None
    assert describe({"skipped": "3 preference pairs, fewer than min_pairs=8", "pairs": 3}) == (
        "DPO stage skipped: 3 preference pairs, fewer than min_pairs=8"
    )
    stage = {
        "pairs": 12,
        "prompts": 7,
        "global_step": 4,
        "rewards": {"rewards/margins": {"last": 0.25}, "rewards/accuracies": {"last": 0.75}},
    }
    assert describe(stage) == (
        "DPO stage: 12 pairs on 7 prompts, 4 steps, last reward margin 0.25, reward accuracy 0.75"
    )
