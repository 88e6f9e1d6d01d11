"""The LLM judge: templates, the score parser's garbage table, retries, thresholds, batching."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from evoinstruct.agents.scoring.judge import (
    JudgeConfig,
    distribution,
    judge_examples,
    judge_messages,
    judge_schema,
    parse_judgement,
    parse_judgement_json,
    parse_score,
)
from evoinstruct.models.base import Choice, Failure, Generation
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Score
from tests.conftest_critic import make_example, user_text
from tests.doubles import ScriptedModel

EN, ZH = PromptLibrary("en"), PromptLibrary("zh")


# --- templates ------------------------------------------------------------------------------


def test_judge_template_en_golden() -> None:
    ex = make_example("a", "Add the numbers.", "The sum is 7.", input="3 and 4")
    text = judge_messages(ex, "accuracy", EN, structured=False)[0]["content"]
    for needle in (
        "Add the numbers.",
        "3 and 4",
        "The sum is 7.",
        "accuracy",
        "from 0 to 5",
        "first line",
        "### Input",
    ):
        assert needle in text
    assert text.count("factual errors") == 1


def test_judge_template_zh_golden_and_no_input_section() -> None:
    ex = make_example("a", "把数字相加。", "和是7。")
    text = judge_messages(ex, "level_of_detail", ZH, structured=False)[0]["content"]
    for needle in ("把数字相加。", "和是7。", "详细程度", "0 到 5", "第一行只写分数"):
        assert needle in text
    assert "### 输入" not in text


def test_judge_template_unknown_dimension_still_renders() -> None:
    ex = make_example("a", "Write a haiku.", "Old pond / frog jumps in / splash")
    text = judge_messages(ex, "creativity", EN, structured=False)[0]["content"]
    assert "creativity" in text


@pytest.mark.parametrize("library", [EN, ZH])
def test_judge_json_template_golden(library: PromptLibrary) -> None:
    ex = make_example("a", "Name a prime.", "7")
    text = judge_messages(ex, "helpfulness", library, structured=True)[0]["content"]
    assert '"score"' in text and '"explanation"' in text and "JSON" in text
    assert "Name a prime." in text and "7" in text


@pytest.mark.parametrize(("library", "needle"), [(EN, "from 0 to 5"), (ZH, "0 到 5")])
def test_judge_retry_template_golden(library: PromptLibrary, needle: str) -> None:
    assert needle in library.render("judge_retry", scale_min=0.0, scale_max=5.0)


# --- the parser -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # clean
        ("4.5", 4.5),
        ("4\nThe response is correct and complete.", 4.0),
        ("Score: 4.5", 4.5),
        ("4.5/5", 4.5),
        ("**4**", 4.0),
        ("评分：4", 4.0),
        ("评分: 3.5 分\n理由：基本正确。", 3.5),
        ("4分\n回答准确。", 4.0),
        # noisy
        ("**Score:** 3\nMostly right.", 3.0),
        ("Rating: [[4]]", 4.0),
        ("Accuracy: 2.5 - several errors", 2.5),
        ("The response is fine overall. Score: 3", 3.0),
        ("I would rate it **5** because it is perfect.", 5.0),
        ("我给这个回答打4分。", 4.0),
        ("满分5分，得分：3", 3.0),
        ("10分钟就能读完。得分：2", 2.0),
        ("8/10", 4.0),
        ("Score: 9/10", 4.5),
        # out of range: not a score (METHODS 2.1), never clamped into range
        ("7", None),
        ("Score: 12", None),
        # truncated answers (finish_reason "length"): the first line still carries the score
        ("4.5\nThe response is accur", 4.5),
        ('{"score": 3.5, "explanation": "The answer mis', 3.5),
        # empty
        ("", None),
        ("   \n  ", None),
        # wrong format: no score is invented, never 0
        ("The response is good.", None),
        ("1. The answer is wrong because 12 is not prime", None),
        ("The answer 12 is correct.", None),
        ("回答很好。", None),
        ("The claimed accuracy is 95% but the data says otherwise.", None),
    ],
)
def test_parse_judgement_table(text: str, expected: float | None) -> None:
    assert parse_judgement(text).value == expected


def test_parse_judgement_explanation_follows_first_line() -> None:
    judged = parse_judgement("4\nClear and correct.")
    assert judged.explanation == "Clear and correct."


def test_parse_score_other_scale_refuses_out_of_range() -> None:
    assert parse_score("7", (1.0, 6.0)).value is None
    assert parse_score("0", (1.0, 6.0)).value is None
    assert parse_score("6", (1.0, 6.0)).value == 6.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the two replies that scored 5.0 by clamping a number out of a sentence
        ("12 multiplied by 3 is 36.", None),
        ("The speed is 180 / 2 = 90 km per hour, so the answer is correct.", None),
        # numbers that are not scores
        ("7", None),
        ("-1", None),
        ("Score: -1", None),
        ("4.5.6", None),
        ("5 apples", None),
        ("There are 3 reasons the answer is wrong.", None),
        ("Use 1/2 cup of flour.", None),
        ("Score: 6/5", None),
        ("The answer is **42**.", None),
        ("小明有5个苹果。", None),
        ("速度是 180/2 = 90 公里每小时。", None),
        ("他考了90分。", None),
        ("-1分", None),
        # clear score forms
        ("Score: 4", 4.0),
        ("4/5", 4.0),
        ("4", 4.0),
        ("**4**", 4.0),
        ('{"score": 4, "explanation": "fine"}', 4.0),
        ("4 - mostly correct, one small slip", 4.0),
        ("4 out of 5", 4.0),
        ("I'd give it 4/5 overall.", 4.0),
        ("12 multiplied by 3 is 36.\nScore: 5", 5.0),
        ("评分：4分", 4.0),
        ("4分", 4.0),
        ("评分: 4.5\n理由：回答准确。", 4.5),
        ("这个回答我打3分，因为缺少细节。", 3.0),
    ],
)
def test_parse_score_refuses_numbers_that_are_not_scores(text: str, expected: float | None) -> None:
    assert parse_score(text).value == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"score": 4.5, "explanation": "good"}', 4.5),
        ('```json\n{"score": 4, "explanation": "ok"}\n```', 4.0),
        ('Here you go: {"score": "3", "explanation": "meh"} hope it helps', 3.0),
        ('{"score": 9, "explanation": "x"}', None),
        ('{"score": 4.5, "explanation": "cut', 4.5),  # truncated: falls back to the regex
        ('{"explanation": "no score"}', None),
        ('{"score": true}', None),
        ("", None),
        ("not json", None),
    ],
)
def test_parse_judgement_json_table(text: str, expected: float | None) -> None:
    assert parse_judgement_json(text).value == expected


# --- the judge pass -------------------------------------------------------------------------


def _batch():
    return [
        make_example("good", "What is 2+2?", "2+2 equals 4."),
        make_example("weak", "中国的首都是哪里？", "上海。"),
    ]


async def test_judge_scores_in_one_batch_and_applies_threshold() -> None:
    model = ScriptedModel(["5\nCorrect.", "1\n错误，应为北京。"])
    counters: Counter[str] = Counter()
    outcome = await judge_examples(_batch(), model, EN, JudgeConfig(), counters)
    assert model.batches == [2]
    assert all(r.temperature == 0.0 for r in model.calls)
    values = {s.example_id: s.value for s in outcome.scores}
    assert values == {"good": 5.0, "weak": 1.0}
    assert [r.reason for r in outcome.rejections] == ["judge_below_threshold"]
    rejected = outcome.rejections[0]
    assert rejected.example_id == "weak" and rejected.stage == "critique"
    assert rejected.evidence == {"dimension": "accuracy", "score": 1.0, "threshold": 4.5}
    assert rejected.raw_output == "1\n错误，应为北京。"
    assert counters["calls"] == 2 and counters["tokens"] > 0


async def test_judge_threshold_is_inclusive() -> None:
    model = ScriptedModel(["4.5", "4.4"])
    outcome = await judge_examples(_batch(), model, EN, JudgeConfig(), Counter())
    assert [r.example_id for r in outcome.rejections] == ["weak"]


async def test_judge_several_dimensions_one_call_each() -> None:
    model = ScriptedModel(default="5")
    config = JudgeConfig(dimensions=["accuracy", "Helpfulness", "level of detail"])
    outcome = await judge_examples(_batch(), model, ZH, config, Counter())
    assert model.batches == [6]
    assert {s.dimension for s in outcome.scores} == {"accuracy", "helpfulness", "level_of_detail"}


async def test_unparseable_is_retried_once_then_recorded_as_missing() -> None:
    model = ScriptedModel(["I think it is good.", "5", "Still no number."])
    counters: Counter[str] = Counter()
    outcome = await judge_examples(_batch(), model, EN, JudgeConfig(), counters)
    assert model.batches == [2, 1]  # only the unreadable answer is asked again
    retry = model.calls[2]
    assert retry.messages[-2] == {"role": "assistant", "content": "I think it is good."}
    assert "could not find a score" in user_text(retry)
    by_id = {s.example_id: s for s in outcome.scores}
    assert by_id["weak"].value == 5.0
    assert by_id["good"].value is None
    assert by_id["good"].raw_output == "Still no number."
    # Missing is not low (never 0), but by default an unscored answer is not kept.
    assert [(r.example_id, r.reason) for r in outcome.rejections] == [("good", "judge_missing")]
    assert counters["judge_retries"] == 1 and counters["judge_unparseable"] == 1


async def test_missing_score_can_be_kept_when_configured() -> None:
    model = ScriptedModel(default="no idea")
    outcome = await judge_examples(
        _batch()[:1], model, EN, JudgeConfig(on_missing="keep", retries=0), Counter()
    )
    assert model.batches == [1]
    assert outcome.rejections == []
    assert outcome.scores[0].value is None


async def test_truncated_and_failed_answers() -> None:
    truncated = Generation([Choice("4.5\nThe response is accu", "length")])
    model = ScriptedModel([truncated, Failure("timeout", "no answer in 120 s", attempts=3)])
    counters: Counter[str] = Counter()
    outcome = await judge_examples(_batch(), model, EN, JudgeConfig(), counters)
    assert [(s.example_id, s.value) for s in outcome.scores] == [("good", 4.5)]
    assert [(r.example_id, r.reason) for r in outcome.rejections] == [
        ("weak", "model_failure:timeout")
    ]
    assert counters["truncated"] == 1 and counters["failure:timeout"] == 1


async def test_structured_mode_sends_the_schema() -> None:
    model = ScriptedModel(
        ['{"score": 4.5, "explanation": "ok"}', '{"score": 2, "explanation": "不对"}']
    )
    outcome = await judge_examples(_batch(), model, ZH, JudgeConfig(structured=True), Counter())
    assert all(r.json_schema == judge_schema() for r in model.calls)
    assert {s.example_id: s.explanation for s in outcome.scores} == {"good": "ok", "weak": "不对"}


def test_config_rejects_duplicate_dimensions_and_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        JudgeConfig(dimensions=["accuracy", "Accuracy"])
    with pytest.raises(ValidationError):
        JudgeConfig(treshold=4.0)
    assert JudgeConfig().threshold == 4.5 and JudgeConfig().temperature == 0.0


def test_distribution_bins_by_half_points() -> None:
    scores = [
        Score(str(i), "judge", "accuracy", v) for i, v in enumerate([4.0, 4.5, 4.5, 4.7, None])
    ]
    scores.append(Score("x", "judge", "helpfulness", 1.0))
    assert distribution(scores, "accuracy") == {"4": 1, "4.5": 3, "none": 1}


def test_a_structured_score_outside_the_scale_is_no_score() -> None:
    from evoinstruct.agents.scoring.judge import parse_judgement_json

    assert parse_judgement_json('{"score": 9, "explanation": "great"}').value is None
    assert parse_judgement_json('{"score": 4, "explanation": "fine"}').value == 4.0
