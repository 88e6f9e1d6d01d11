"""IFD: the ratio of answer losses with and without the instruction, its filter and ranking."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from evoinstruct.agents.scoring.ifd import (
    IFDConfig,
    ifd_scores,
    ifd_value,
    prompt_messages,
    rank_by_ifd,
    top_ifd,
)
from evoinstruct.store.records import Score
from tests.conftest_critic import make_example
from tests.doubles import ScriptedModel


def test_ifd_value_is_the_ratio_of_means() -> None:
    assert ifd_value([1.0, 3.0], [4.0, 4.0]) == pytest.approx(0.5)
    assert ifd_value([], [1.0]) is None
    assert ifd_value([1.0], []) is None
    assert ifd_value([1.0], [0.0]) is None


def test_prompt_messages_carry_system_instruction_and_input() -> None:
    ex = make_example("a", "Translate to English.", "Hello.", input="你好。", system="Be brief.")
    assert prompt_messages(ex) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Translate to English.\n\n你好。"},
    ]


class LossLog:
    """Per-token losses: alone 2.0 per token; with the prompt, a factor chosen by instruction."""

    def __init__(self, factors: dict[str, float]) -> None:
        self.factors = factors
        self.pairs: list[tuple[list, str]] = []

    def __call__(self, prompt, answer: str) -> list[float]:
        self.pairs.append((list(prompt), answer))
        tokens = answer.split() or []
        if not prompt:
            return [2.0] * len(tokens)
        factor = next(f for key, f in self.factors.items() if key in prompt[-1]["content"])
        return [2.0 * factor] * len(tokens)


def _batch():
    return [
        make_example("helps", "Compute 17 * 3.", "17 times 3 is 51"),
        make_example("hurts", "写一首诗。", "The weather today is sunny and warm"),
        make_example("equal", "Repeat after me.", "one two three"),
    ]


async def test_ifd_scores_and_drops_above_one() -> None:
    losses = LossLog({"17": 0.5, "写": 1.25, "Repeat": 1.0})
    model = ScriptedModel(losses=losses)
    counters: Counter[str] = Counter()
    outcome = await ifd_scores(_batch(), model, IFDConfig(), counters)
    values = {s.example_id: s.value for s in outcome.scores}
    assert values == {
        "helps": pytest.approx(0.5),
        "hurts": pytest.approx(1.25),
        "equal": pytest.approx(1.0),
    }
    assert [(r.example_id, r.reason) for r in outcome.rejections] == [("hurts", "ifd_above_1")]
    evidence = outcome.rejections[0].evidence
    assert evidence["ifd"] == pytest.approx(1.25) and evidence["loss_alone"] == pytest.approx(2.0)
    # One batched call: conditioned pairs then the same answers alone.
    assert len(losses.pairs) == 6 and counters["loss_calls"] == 6
    assert [a for _, a in losses.pairs[:3]] == [a for _, a in losses.pairs[3:]]
    assert all(p == [] for p, _ in losses.pairs[3:])


async def test_ifd_threshold_is_configurable() -> None:
    model = ScriptedModel(losses=LossLog({"17": 0.5, "写": 1.25, "Repeat": 1.0}))
    outcome = await ifd_scores(_batch(), model, IFDConfig(max_ifd=0.9), Counter())
    assert sorted(r.example_id for r in outcome.rejections) == ["equal", "hurts"]


async def test_unsupported_loss_and_empty_answers() -> None:
    counters: Counter[str] = Counter()
    outcome = await ifd_scores(_batch(), ScriptedModel(), IFDConfig(), counters)
    assert outcome.scores == [] and counters["ifd_unsupported"] == 1

    empty = [make_example("blank", "Say nothing.", "   ")]
    counters = Counter()
    outcome = await ifd_scores(empty, ScriptedModel(losses=lambda p, a: []), IFDConfig(), counters)
    assert outcome.scores[0].value is None and outcome.rejections == []
    assert counters["ifd_undefined"] == 1


def test_rank_and_top_fraction() -> None:
    scores = [Score(f"e{i:02d}", "ifd", "ifd", i / 20) for i in range(25)]  # 0.0 .. 1.2
    scores += [Score("none", "ifd", "ifd", None), Score("j", "judge", "accuracy", 5.0)]
    ranked = rank_by_ifd(scores)
    assert ranked[0] == "e20" and "e21" not in ranked and "none" not in ranked and "j" not in ranked
    assert len(ranked) == 21
    assert top_ifd(scores, 0.1) == ["e20", "e19"]
    assert top_ifd(scores, 0.05) == ["e20"]
    assert top_ifd(scores, 1.0) == ranked
    assert top_ifd([], 0.1) == []
    with pytest.raises(ValueError, match="top_fraction"):
        top_ifd(scores, 0)


def test_an_example_scored_twice_is_ranked_once_by_its_higher_score() -> None:
    scores = [Score("a", "ifd", "ifd", 0.2), Score("b", "ifd", "ifd", 0.5)]
    scores.append(Score("a", "ifd", "ifd", 0.9))
    assert rank_by_ifd(scores) == ["a", "b"]


def test_config_bounds() -> None:
    assert IFDConfig().max_ifd == 1.0
    with pytest.raises(ValidationError):
        IFDConfig(max_ifd=0)
