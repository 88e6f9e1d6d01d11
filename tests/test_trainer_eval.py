"""Evaluation: held-out loss, the pairwise judge's winning score, and the promotion gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from evoinstruct.models.base import ChatRequest, Choice, Failure, Generation
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example
from evoinstruct.trainer.config import GateConfig, PairwiseConfig, TrainerConfig
from evoinstruct.trainer.data import IGNORE_INDEX, tokenize_examples
from evoinstruct.trainer.evaluate import (
    PairwiseResult,
    decide,
    evaluate_version,
    fixed_prompts,
    heldout_loss,
    pairwise_compare,
    parse_pairwise_verdict,
    winning_score,
)
from tests.doubles import ScriptedModel

pytest_plugins = ["tests.conftest_trainer"]

if TYPE_CHECKING:
    from tests.conftest_trainer import TrainedProject

PAIRWISE = PairwiseConfig(enabled=True)


# --- winning score and the judge --------------------------------------------------------
def test_winning_score_math() -> None:
    assert winning_score(3, 1, 5) == pytest.approx(1.4)
    assert winning_score(0, 4, 4) == 0.0 and winning_score(4, 0, 4) == 2.0
    assert winning_score(2, 2, 6) == 1.0
    with pytest.raises(ValueError):
        winning_score(0, 0, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer A is more accurate.\nWinner: A", "A"),
        ("Both fine.\nWinner: tie", "tie"),
        ("**Winner: B**", "B"),
        ("Winner:B\n\nThanks for reading!", "B"),
        ("回答 B 更完整。\nWinner： B", "B"),
        ("winner: a", "A"),
        ("First I thought Winner: A, but on reflection\nWinner: B", "B"),
        ("Winner: [A]", "A"),
        ("", None),
        ("I prefer the second answer.", None),
        ("Winner: C", None),
        ("Winner: Alpha", None),
    ],
)
def test_parse_pairwise_verdict(text: str, expected: str | None) -> None:
    assert parse_pairwise_verdict(text, "Winner", "tie") == expected


@pytest.mark.parametrize("language", ["en", "zh"])
def test_judge_template_renders(language: str) -> None:
    text = PromptLibrary(language).render(
        "pairwise_judge",
        instruction="请写一首关于春天的短诗。",
        answer_a="春天来了。",
        answer_b="Spring is here.",
        verdict_key="Winner",
        tie_label="tie",
    )
    for part in (
        "请写一首关于春天的短诗。",
        "春天来了。",
        "Spring is here.",
        "Winner: A",
        "Winner: B",
        "Winner: tie",
    ):
        assert part in text
    assert text.index("春天来了。") < text.index("Spring is here.")


def _answers(text: str):
    return ScriptedModel(default=text)


def _judge_preferring(word: str):
    """A judge that picks whichever answer contains `word`."""

    def reply(request: ChatRequest) -> str:
        prompt = request.messages[0]["content"]
        a = prompt.split("[Answer A]")[1].split("[End of Answer A]")[0]
        return "Reasoning.\nWinner: A" if word in a else "Reasoning.\nWinner: B"

    return ScriptedModel(default=reply)


PROMPTS = ["Write a poem.", "请写一首诗。", "Explain the sky."]


async def test_pairwise_counts_both_orders() -> None:
    lib = PromptLibrary("en")
    result = await pairwise_compare(
        _judge_preferring("NEW"),
        _answers("NEW answer"),
        _answers("OLD answer"),
        PROMPTS,
        lib,
        PAIRWISE,
    )
    assert (result.wins, result.losses, result.ties, result.n) == (6, 0, 0, 6)
    assert result.score == 2.0
    judge = _judge_preferring("OLD")
    result = await pairwise_compare(judge, _answers("NEW"), _answers("OLD"), PROMPTS, lib, PAIRWISE)
    assert result.score == 0.0 and len(judge.calls) == 6
    # A judge that always says "A" is position-biased: both orders cancel out.
    biased = ScriptedModel(default="Winner: A")
    result = await pairwise_compare(
        biased, _answers("NEW"), _answers("OLD"), PROMPTS, lib, PAIRWISE
    )
    assert (result.wins, result.losses, result.score) == (3, 3, 1.0)


async def test_pairwise_failures_are_counted_not_guessed() -> None:
    lib = PromptLibrary("zh")
    judge = ScriptedModel(
        [
            "Winner: A",
            "no verdict here",
            Failure("timeout", "judge timed out"),
            Generation([Choice("Winner: A", "length")]),
        ]
    )
    candidate = ScriptedModel(["NEW 1", "NEW 2", Failure("server", "boom")])
    result = await pairwise_compare(judge, candidate, _answers("OLD"), PROMPTS, lib, PAIRWISE)
    assert (result.wins, result.invalid, result.failed, result.n) == (1, 3, 1, 1)
    assert result.score == 2.0
    outcomes = [r["outcome"] for r in result.records]
    assert outcomes == ["win", "invalid", "judge_failure:timeout", "invalid"]


# --- the gate -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gate", "new", "old", "score", "promote", "reason"),
    [
        (GateConfig(), 1.0, 1.2, None, True, "held-out loss 1.0000 < 1.2000"),
        (GateConfig(), 1.2, 1.2, None, False, "not above"),
        (GateConfig(min_loss_improvement=0.1), 1.15, 1.2, None, False, "improvement 0.0500"),
        (GateConfig(), None, None, None, False, "no held-out examples"),
        (GateConfig(require_heldout=False), None, None, None, True, "not required"),
        (GateConfig(min_winning_score=1.1), 1.0, 1.2, None, False, "no valid judge verdicts"),
        (GateConfig(min_winning_score=1.1), 1.0, 1.2, (1, 1, 2), False, "below the required"),
        (GateConfig(min_winning_score=1.1), 1.0, 1.2, (3, 0, 3), True, "winning score 2.000"),
    ],
)
def test_gate(gate, new, old, score, promote, reason) -> None:
    pairwise = None
    if score is not None:
        wins, losses, n = score
        pairwise = PairwiseResult(wins=wins, losses=losses, ties=n - wins - losses)
    decision = decide(gate, new_loss=new, baseline_loss=old, pairwise=pairwise)
    assert decision.promote is promote and reason in decision.reason


# --- held-out loss ------------------------------------------------------------------------
def test_heldout_loss_is_token_weighted(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = TrainerConfig(eval_batch_size=3)
    cases = [
        Example(str(i), instr, input=inp, output=out, round=1, status="accepted")
        for i, (instr, inp, out) in enumerate(
            [
                ("Write a poem about the sea.", "", "The sea is wide."),
                ("请写一首关于春天的短诗。", "", "春天来了，花开了。" * 3),
                ("总结下面这段话。", "中国的首都是北京。", "北京。"),
                ("Say hi.", "", "Hi!"),
            ]
        )
    ]
    result = heldout_loss(model, tok, cases, cfg)
    rows, _ = tokenize_examples(cases, tok, "chat", cfg.max_length)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(row["labels"][1:])
            keep = labels != IGNORE_INDEX
            nll = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")
            total += float(nll)
            count += int(keep.sum())
    assert result.tokens == count and result.examples == len(cases)
    assert result.loss == pytest.approx(total / count, abs=1e-5)
    assert heldout_loss(model, tok, [], cfg).loss is None


async def test_evaluate_version_against_the_base(trained_lora: TrainedProject) -> None:
    store = trained_lora.store
    heldout = store.get_many(store.training_manifest("v1", role="heldout"))
    assert heldout
    cfg = trained_lora.cfg.model_copy(
        update={"pairwise": PairwiseConfig(enabled=True, num_prompts=2)}
    )
    evaluation = await evaluate_version(
        store,
        "v1",
        cfg,
        judge=_judge_preferring("NEW"),
        candidate=_answers("NEW"),
        incumbent=_answers("OLD"),
        library=PromptLibrary("en"),
    )
    assert evaluation.baseline_version is None  # nothing promoted yet: the base model
    assert evaluation.heldout.loss == pytest.approx(
        trained_lora.result.metrics["heldout_loss"], abs=1e-5
    )
    assert evaluation.heldout.loss < evaluation.baseline.loss
    assert evaluation.pairwise.n == 2 * min(2, len(heldout)) and evaluation.pairwise.score == 2.0
    assert evaluation.decision.promote and "base model" in evaluation.decision.reason
    recorded = store.model_version("v1")["metrics"]["evaluation"]
    assert recorded["gate"]["promote"] is True and recorded["pairwise"]["winning_score"] == 2.0
    # No held-out suite in this project and gate.metric "auto": the loss decided.
    assert recorded["gate_metric"] == "loss" and recorded["verifiable"] is None
    assert fixed_prompts(heldout, 2) == fixed_prompts(list(reversed(heldout)), 2)
