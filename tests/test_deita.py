"""Deita scores: expected value over "1".."6", the judge fallback (counted), the product."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from evoinstruct.agents.scoring.deita import (
    DeitaConfig,
    deita_messages,
    deita_scores,
    expected_score,
)
from evoinstruct.models.base import Message
from evoinstruct.prompts.library import PromptLibrary
from tests.conftest_critic import make_example, user_text
from tests.doubles import ScriptedModel

EN, ZH = PromptLibrary("en"), PromptLibrary("zh")
OPTIONS = ["1", "2", "3", "4", "5", "6"]


class LogitScorer:
    """A scorer double with logits: probabilities chosen per prompt by a function."""

    model_id = "deita-scorer"
    adapter_version = None
    adapter_digest = None

    def __init__(self, probs_for) -> None:
        self.probs_for = probs_for
        self.calls: list[tuple[int, list[str]]] = []

    async def option_probs(
        self, prompts: Sequence[Sequence[Message]], options: Sequence[str]
    ) -> list[list[float]]:
        self.calls.append((len(prompts), list(options)))
        return [self.probs_for(p[-1]["content"]) for p in prompts]


def _batch():
    return [
        make_example(
            "en", "Prove that there are infinitely many primes.", "Assume finitely many..."
        ),
        make_example("zh", "写一首关于秋天的五言绝句。", "秋风吹落叶，寒雁过长空。"),
    ]


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        ([0, 0, 0, 0, 0, 1], 6.0),
        ([1, 0, 0, 0, 0, 0], 1.0),
        ([1 / 6] * 6, 3.5),
        ([0.5, 0.5, 0, 0, 0, 0], 1.5),
        ([2, 2, 0, 0, 0, 0], 1.5),  # unnormalized: renormalized
        ([0.1, 0.2, 0.3, 0.4], None),  # wrong length
        ([0, 0, 0, 0, 0, 0], None),
        ([-1, 1, 0, 0, 0, 1], None),
    ],
)
def test_expected_score(probs: list[float], expected: float | None) -> None:
    result = expected_score(probs, OPTIONS)
    assert result == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("library", "kind", "needles"),
    [
        (EN, "complexity", ["Prove that", "from 1", "to 6", "single whole number"]),
        (EN, "quality", ["Prove that", "Assume finitely many...", "### Response", "to 6"]),
        (ZH, "complexity", ["写一首", "1 到 6", "只回答"]),
        (ZH, "quality", ["秋风吹落叶", "### 回答", "1 到 6"]),
    ],
)
def test_deita_templates_golden(library: PromptLibrary, kind: str, needles: list[str]) -> None:
    example = _batch()[0] if library is EN else _batch()[1]
    text = deita_messages(example, kind, library, DeitaConfig())[0]["content"]
    for needle in needles:
        assert needle in text
    if kind == "complexity":
        assert example.output not in text


def test_scale_follows_the_options() -> None:
    text = deita_messages(_batch()[0], "quality", EN, DeitaConfig(options=["1", "2", "3"]))[0]
    assert "to 3" in text["content"]
    with pytest.raises(ValidationError):
        DeitaConfig(options=["low", "high"])


async def test_scores_from_logits_in_one_call() -> None:
    def probs(prompt: str) -> list[float]:
        complexity = "complex" in prompt or "复杂" in prompt
        return [0, 0, 0, 0, 0, 1] if complexity else [0, 0, 0.5, 0.5, 0, 0]

    scorer = LogitScorer(probs)
    judge = ScriptedModel()  # must not be called
    counters: Counter[str] = Counter()
    outcome = await deita_scores(
        _batch(), scorer=scorer, judge=judge, prompts=EN, config=DeitaConfig(), counters=counters
    )
    assert scorer.calls == [(4, OPTIONS)]
    assert judge.calls == []
    values = {(s.example_id, s.dimension): s.value for s in outcome.scores}
    assert values[("en", "complexity")] == pytest.approx(6.0)
    assert values[("en", "quality")] == pytest.approx(3.5)
    assert values[("zh", "combined")] == pytest.approx(21.0)
    assert counters["deita_fallbacks"] == 0
    assert outcome.model_version == "deita-scorer"


async def test_unsupported_scorer_falls_back_to_the_judge_and_counts() -> None:
    scorer = ScriptedModel()  # ScriptedModel: option_probs raises UnsupportedError
    replies = {"complexity": "5", "quality": "4\nGood."}

    def answer(request) -> str:
        text = user_text(request)
        quality = "### Response" in text or "### 回答" in text
        return replies["quality"] if quality else replies["complexity"]

    judge = ScriptedModel(default=answer)
    counters: Counter[str] = Counter()
    outcome = await deita_scores(
        _batch(), scorer=scorer, judge=judge, prompts=ZH, config=DeitaConfig(), counters=counters
    )
    assert judge.batches == [4]
    assert counters["deita_scorer_unsupported"] == 1 and counters["deita_fallbacks"] == 2
    values = {(s.example_id, s.dimension): s.value for s in outcome.scores}
    assert values[("zh", "complexity")] == 5.0 and values[("zh", "quality")] == 4.0
    assert values[("en", "combined")] == 20.0


async def test_fallback_without_scorer_reads_the_scale_and_keeps_missing() -> None:
    # A number outside the judge's scale is no score; "6" and "1" are the scale's ends.
    judge = ScriptedModel(["6", "1", "no idea", "3", "still no idea"])
    counters: Counter[str] = Counter()
    outcome = await deita_scores(
        _batch(), scorer=None, judge=judge, prompts=EN, config=DeitaConfig(), counters=counters
    )
    values = {(s.example_id, s.dimension): s.value for s in outcome.scores}
    assert values[("en", "complexity")] == 6.0 and values[("en", "quality")] == 1.0
    assert values[("zh", "complexity")] is None  # unparseable twice: missing, not 0
    assert ("zh", "combined") not in values
    assert values[("en", "combined")] == 6.0
    assert counters["deita_fallbacks"] == 2


async def test_no_scorer_and_no_judge_skips() -> None:
    counters: Counter[str] = Counter()
    outcome = await deita_scores(
        _batch(), scorer=None, judge=None, prompts=EN, config=DeitaConfig(), counters=counters
    )
    assert outcome.scores == [] and counters["deita_skipped"] == 2
