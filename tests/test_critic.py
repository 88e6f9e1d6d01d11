"""The critic end to end: cheap statistics first, the judge last, one batch per part."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from evoinstruct.agents.critic import CriticConfig, critique
from evoinstruct.prompts.library import PromptLibrary
from tests.conftest_critic import make_example, user_text
from tests.doubles import ScriptedModel

RNG = random.Random(0)
WATER = (
    "At sea level water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit. "
    "At higher altitudes the air pressure is lower, so water boils at a lower temperature."
)
WATER_ZH = "在海平面，水的沸点是摄氏一百度。海拔越高，气压越低，水的沸点也随之降低，所以高原上煮饭不容易熟。"


def _batch():
    return [
        make_example("good_en", "What is the boiling point of water?", WATER),
        make_example("good_zh", "水的沸点是多少？", WATER_ZH),
        make_example(
            "refusal", "Tell me about your feelings.", "As an AI, I cannot have feelings."
        ),
        make_example("hurts", "Explain tides briefly.", "Tides come from the pull of the moon."),
        make_example("low", "Name the largest planet.", "The largest planet is Saturn, I believe."),
        make_example("empty", "Describe a cat.", None),
    ]


def _teacher() -> ScriptedModel:
    """Tags for tag prompts, 1–6 scores for Deita prompts, 0–5 judgements for judge prompts."""

    def reply(request) -> str:
        text = user_text(request)
        if "intentions" in text or "用户意图" in text:
            return json.dumps([{"tag": "science facts", "explanation": "x"}])
        if "single whole number" in text or "只回答" in text:
            return "5"
        return "2\nWrong planet." if "largest planet" in text else "5\nCorrect."

    return ScriptedModel(default=reply, model_id="teacher")


def _student() -> ScriptedModel:
    def losses(prompt, answer: str) -> list[float]:
        if not prompt:
            return [2.0] * len(answer.split())
        factor = 1.5 if "tides" in prompt[-1]["content"] else 0.5
        return [2.0 * factor] * len(answer.split())

    model = ScriptedModel(losses=losses, model_id="student")
    model.adapter_version = "student-v3"
    return model


def _all_on() -> CriticConfig:
    return CriticConfig.model_validate({"instag": {"enabled": True}, "deita": {"enabled": True}})


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_critic_end_to_end(language: str) -> None:
    teacher = _teacher()
    outcome = await critique(
        _batch(),
        judge=teacher,
        prompts=PromptLibrary(language),
        config=_all_on(),
        rng=RNG,
        student=_student(),
    )
    reasons = {r.example_id: r.reason for r in outcome.rejections}
    assert reasons == {"refusal": "refusal", "hurts": "ifd_above_1", "low": "judge_below_threshold"}
    assert all(r.stage == "critique" for r in outcome.rejections)
    assert outcome.kept == ["good_en", "good_zh"]
    assert outcome.skipped == ["empty"]
    # Cheap first: rejected examples cost no model call; each part is one batch.
    assert teacher.batches == [3, 6, 3]  # tags, Deita (complexity + quality), judge
    prompts = [user_text(c) for c in teacher.calls]
    assert not any("feelings" in p or "tides" in p for p in prompts)
    scorers = [s.scorer for s in outcome.scores]
    assert (
        scorers.index("ifd")
        < scorers.index("instag")
        < scorers.index("deita")
        < scorers.index("judge")
    )
    assert outcome.tags["good_zh"] == ["scienc fact"]
    combined = {s.example_id: s.value for s in outcome.scores if s.dimension == "combined"}
    assert combined == {"good_en": 25.0, "good_zh": 25.0, "low": 25.0}
    assert outcome.languages["good_zh"] == "zh" and outcome.languages["good_en"] == "en"
    assert outcome.model_versions == {
        "ifd": "student-v3",
        "instag": "teacher",
        "deita": "teacher",
        "judge": "teacher",
    }
    counters = outcome.counters
    assert counters["deita_fallbacks"] == 3 and counters["no_output"] == 1
    assert counters["kept"] == 2 and counters["rejected"] == 3 and counters["calls"] == 12


async def test_critic_defaults_stats_and_judge_only() -> None:
    teacher = _teacher()
    outcome = await critique(
        _batch(), judge=teacher, prompts=PromptLibrary("en"), config=CriticConfig(), rng=RNG
    )
    assert teacher.batches == [4]
    assert outcome.counters["ifd_skipped_no_model"] == 1
    assert sorted(outcome.kept) == ["good_en", "good_zh", "hurts"]


async def test_critic_without_skipping_scores_everything() -> None:
    teacher = _teacher()
    config = CriticConfig(skip_rejected=False)
    outcome = await critique(
        _batch(), judge=teacher, prompts=PromptLibrary("en"), config=config, rng=RNG
    )
    assert teacher.batches == [5]
    assert "refusal" not in outcome.kept


async def test_critic_without_a_judge_still_applies_statistics() -> None:
    outcome = await critique(
        _batch(), judge=None, prompts=PromptLibrary("zh"), config=_all_on(), rng=RNG
    )
    assert outcome.counters["judge_skipped_no_model"] == 1
    assert outcome.counters["instag_skipped_no_model"] == 1
    assert outcome.counters["deita_skipped"] == 4
    assert [r.example_id for r in outcome.rejections] == ["refusal"]


def test_critic_config_composes_sub_configs_with_methods_defaults() -> None:
    config = CriticConfig()
    assert config.judge.threshold == 4.5 and config.judge.dimensions == ["accuracy"]
    assert config.ifd.max_ifd == 1.0 and config.deita.options == ["1", "2", "3", "4", "5", "6"]
    assert config.stats.enabled and config.judge.enabled and not config.deita.enabled
    loaded = CriticConfig.model_validate({"judge": {"dimensions": ["accuracy", "harmlessness"]}})
    assert loaded.judge.dimensions == ["accuracy", "harmlessness"]
    with pytest.raises(ValidationError):
        CriticConfig.model_validate({"judge": {"treshold": 4}})
    with pytest.raises(ValidationError):
        CriticConfig.model_validate({"rewriter": {}})


async def test_critic_on_a_real_tiny_model(tiny_model_dir) -> None:
    """The real transformers paths: Deita from next-token probabilities, IFD from losses,
    and a random model's judge answers read as missing scores — never as 0."""
    from evoinstruct.models.config import ModelConfig
    from evoinstruct.models.transformers_backend import TransformersModel

    model = TransformersModel(ModelConfig(backend="transformers", path=str(tiny_model_dir)))
    batch = [
        make_example("a", "Write a short poem about the sea.", "The sea is wide and blue."),
        make_example("b", "请写一首关于春天的短诗。", "春风吹绿了柳树，花儿开满了山坡。"),
    ]
    config = CriticConfig.model_validate({"deita": {"enabled": True}, "judge": {"max_tokens": 8}})
    outcome = await critique(
        batch,
        judge=model,
        prompts=PromptLibrary("zh"),
        config=config,
        rng=RNG,
        scorer=model,
        student=model,
    )
    values = {(s.scorer, s.dimension, s.example_id): s.value for s in outcome.scores}
    for eid in ("a", "b"):
        assert 1.0 <= values[("deita", "complexity", eid)] <= 6.0
        assert values[("ifd", "ifd", eid)] > 0
        judged = values[("judge", "accuracy", eid)]
        assert judged is None or 0.0 <= judged <= 5.0
    assert outcome.counters["deita_fallbacks"] == 0 and outcome.counters["scorer_calls"] == 4
