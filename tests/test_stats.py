"""Model-free statistics: tokens, MTLD, repetition, refusals, language, and their thresholds."""

from __future__ import annotations

import pytest

from evoinstruct.agents.scoring.stats import (
    StatsConfig,
    find_refusal,
    mtld,
    repetition_ratio,
    run_stats,
)
from evoinstruct.agents.text import tokenize
from evoinstruct.text.rules import language_of
from tests.conftest_critic import make_example

GOOD_EN = (
    "Photosynthesis lets green plants turn sunlight, water and carbon dioxide into sugar. "
    "The leaves capture light with chlorophyll, split water, release oxygen and store "
    "energy in glucose that the plant later burns for growth."
)
GOOD_ZH = "光合作用是绿色植物利用阳光、水和二氧化碳制造糖类的过程。叶片中的叶绿素吸收光能，分解水分子，释放氧气，并把能量储存在葡萄糖里，供植物生长使用。"


def test_mtld_hand_computed_values() -> None:
    # a b a b: forward the TTR drops to 2/3 at the third token -> one factor, remainder 0.
    assert mtld(["a", "b", "a", "b"]) == pytest.approx(4.0)
    assert mtld([]) == 0.0
    # "the the": the TTR hits 1/2 at every second token, so one factor per two tokens.
    assert mtld(["the"] * 50) == pytest.approx(2.0)
    assert mtld(tokenize(GOOD_EN)) > 20
    assert mtld(tokenize(GOOD_ZH)) > mtld(list("好好好好好好好好好好好好好好好好"))


def test_repetition_ratio() -> None:
    assert repetition_ratio(list("abcabcabc"), 3) == pytest.approx(1 - 3 / 7)
    assert repetition_ratio(list("abcdefg"), 3) == 0.0
    assert repetition_ratio(["x"], 3) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("As an AI language model, I do not have opinions.", "as an ai"),
        ("I can’t help with that request.", "i can't"),
        ("I cannot provide that information.", "i cannot"),
        ("作为一个人工智能，我没有个人观点。", "作为一个人工智能"),
        ("很抱歉，我无法回答这个问题。", "我无法"),
        ("The capital of France is Paris.", None),
        ("北京是中国的首都。", None),
        ("", None),
    ],
)
def test_find_refusal(text: str, expected: str | None) -> None:
    assert find_refusal(text, StatsConfig().refusal_phrases) == expected


def test_refusal_window_limits_the_search() -> None:
    text = "x " * 200 + "I cannot stress this enough."
    assert find_refusal(text, ["i cannot"], window=100) is None
    assert find_refusal(text, ["i cannot"]) == "i cannot"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_EN, "en"),
        (GOOD_ZH, "zh"),
        ("用Python写一个函数计算斐波那契数列", "zh"),
        ("请解释下面的代码：\n```python\ndef add(a, b):\n    return a + b\n```", "zh"),
        ("私は学生です。毎日日本語を勉強しています。", "other"),
        ("Привет, как дела? Это тест.", "other"),
        ("12345 67", "other"),
        ("", "other"),
    ],
)
def test_language_of(text: str, expected: str) -> None:
    assert language_of(text) == expected


def _reasons(outcome) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for r in outcome.rejections:
        found.setdefault(r.example_id, set()).add(r.reason)
    return found


def test_run_stats_clean_examples_pass_and_get_scores() -> None:
    batch = [
        make_example("en", "Explain photosynthesis.", GOOD_EN),
        make_example("zh", "解释光合作用。", GOOD_ZH),
    ]
    outcome = run_stats(batch, StatsConfig())
    assert outcome.rejections == []
    assert outcome.languages == {"en": "en", "zh": "zh"}
    dims = {(s.example_id, s.dimension) for s in outcome.scores}
    for eid in ("en", "zh"):
        assert {(eid, d) for d in ("output_words", "instruction_words", "mtld", "refusal")} <= dims
    zh_len = next(
        s for s in outcome.scores if s.example_id == "zh" and s.dimension == "output_words"
    )
    assert zh_len.value == sum(1 for c in GOOD_ZH if "\u4e00" <= c <= "\u9fff")
    assert all(s.scorer == "stats" for s in outcome.scores)


@pytest.mark.parametrize(
    ("example", "config", "reason"),
    [
        (make_example("a", "Say hi.", ""), StatsConfig(), "output_too_short"),
        (make_example("b", "", GOOD_EN), StatsConfig(), "instruction_too_short"),
        (
            make_example("c", "Explain.", GOOD_EN),
            StatsConfig(max_output_words=10),
            "output_too_long",
        ),
        (make_example("d", "解释。", GOOD_ZH), StatsConfig(max_output_words=10), "output_too_long"),
        (
            make_example("e", "Tell me.", "As an AI, I have no feelings at all."),
            StatsConfig(),
            "refusal",
        ),
        (make_example("f", "告诉我。", "作为一个人工智能，我没有感情。"), StatsConfig(), "refusal"),
        (make_example("g", "Count.", "one two three " * 10), StatsConfig(), "repetitive"),
        (make_example("h", "数数。", "一二三四" * 10), StatsConfig(), "repetitive"),
        (
            make_example("i", "Explain.", GOOD_EN),
            StatsConfig(min_mtld=1000),
            "low_lexical_diversity",
        ),
        (make_example("j", "Explain.", GOOD_EN), StatsConfig(languages=["zh"]), "language:en"),
        (make_example("k", "解释。", GOOD_ZH), StatsConfig(languages=["en"]), "language:zh"),
    ],
)
def test_run_stats_each_rule(example, config: StatsConfig, reason: str) -> None:
    outcome = run_stats([example], config)
    assert reason in _reasons(outcome)[example.id]
    rejection = next(r for r in outcome.rejections if r.reason == reason)
    assert rejection.stage == "critique"
    assert rejection.evidence is not None


def test_run_stats_thresholds_can_be_switched_off() -> None:
    config = StatsConfig(max_repetition=None, reject_refusals=False, min_output_words=0)
    batch = [
        make_example("g", "Count.", "one two three " * 10),
        make_example("e", "Tell me.", "As an AI, I have no feelings at all."),
        make_example("a", "Say hi.", ""),
    ]
    outcome = run_stats(batch, config)
    assert outcome.rejections == []
    refusal = next(s for s in outcome.scores if s.example_id == "e" and s.dimension == "refusal")
    assert refusal.value == 1.0
