"""The selector end to end: every stage's rejection, its evidence, counters and commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes, select
from evoinstruct.store.errors import ConfigError, UnsupportedError
from evoinstruct.store.records import Example, Score

POOL_ZH = "请写一首关于春天的诗，描写花开、细雨和燕子归来的景象，要求押韵并且不少于八行。"
NEAR_ZH = "请写一首关于春天的诗，描写花开、细雨和燕子归来的景象，要求押韵并且不少于十行。"
EVAL_TEXT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
)


def ex(id_: str, instruction: str, input_: str = "", output: str = "An answer.") -> Example:
    return Example(id=id_, instruction=instruction, input=input_, output=output, round=1)


def sc(id_: str, **dims: float | None) -> list[Score]:
    return [Score(id_, "judge", dim, value) for dim, value in dims.items()]


def good(
    id_: str, accuracy: float = 5.0, complexity: float = 3.0, quality: float = 4.0
) -> list[Score]:
    return sc(id_, accuracy=accuracy, complexity=complexity, quality=quality)


def keyword_embedder(texts: list[str]) -> np.ndarray:
    """Topic vectors: texts about oceans share one direction, everything else is unique."""
    rows = []
    for i, text in enumerate(texts):
        v = np.zeros(64, dtype=np.float32)
        if "ocean" in text.lower() or "sea " in text.lower() or "海" in text:
            v[0] = 1.0
        else:
            v[1 + i % 63] = 1.0
        rows.append(v)
    return np.stack(rows)


@pytest.fixture
def eval_file(tmp_path: Path) -> str:
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"question": EVAL_TEXT}) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def pool() -> list[Example]:
    return [ex("p1", "Write a poem about the sea at night."), ex("p2", POOL_ZH)]


async def test_every_stage_rejects_with_evidence(pool: list[Example], eval_file: str) -> None:
    config = SelectorConfig(
        budget=3,
        decontam={"eval_files": [eval_file]},
        min_scores={"accuracy": 4.5},
        missing_score="reject",
    )
    indexes = SelectorIndexes.build(pool, config)
    batch = [
        ex("c_exact", "write a poem about the SEA at night"),
        ex("c_near", NEAR_ZH),
        ex("c_sim", "Write a poem about the sea at dawn."),
        ex("c_contam", "Solve this problem step by step.", EVAL_TEXT),
        ex("c_low", "Give three tips for learning to play the violin."),
        ex("c_missing", "Name the largest planets of the solar system."),
        ex("c_ocean1", "Describe the colors of the ocean at noon."),
        ex("c_ocean2", "为什么海水看起来是蓝色的？"),
        ex("c_a", "Summarize the causes of the French Revolution."),
        ex("c_b", "用Python写一个函数，判断一个数是否为质数。"),
        ex("c_c", "Plan a three-day trip to Kyoto on a student budget."),
        ex("c_dup_in_batch", "Plan a three-day trip to Kyoto on a student budget!"),
    ]
    scores = {e.id: good(e.id) for e in batch}
    scores["c_low"] = good("c_low", accuracy=3.0)
    del scores["c_missing"]
    scores["c_ocean1"] = good("c_ocean1", quality=5.0)  # ranks above c_ocean2 (same embedding)
    scores["c_a"] = good("c_a", complexity=1.0)  # lowest rank: over the budget of 3
    outcome = await select(batch, scores, indexes, config, embedder=keyword_embedder)

    reasons = {r.example_id: (r.reason, r.evidence) for r in outcome.rejections}
    assert reasons["c_exact"] == ("exact_duplicate", {"duplicate_of": "p1"})
    assert reasons["c_near"][0] == "near_duplicate" and reasons["c_near"][1]["duplicate_of"] == "p2"
    assert reasons["c_near"][1]["jaccard"] >= 0.8
    assert reasons["c_sim"][0] == "too_similar"
    assert reasons["c_sim"][1] == {"most_similar": "p1", "rouge_l": 0.875}
    assert reasons["c_contam"][0] == "contaminated"
    assert (
        reasons["c_contam"][1]["eval_file"] == eval_file
        and reasons["c_contam"][1]["field"] == "input"
    )
    assert reasons["c_low"] == (
        "below_threshold:accuracy",
        {"dimension": "accuracy", "value": 3.0, "threshold": 4.5},
    )
    assert reasons["c_missing"] == ("missing_score", {"dimension": "accuracy"})
    assert reasons["c_ocean2"] == ("not_diverse", {"most_similar": "c_ocean1", "cosine": 1.0})
    assert reasons["c_dup_in_batch"] == ("exact_duplicate", {"duplicate_of": "c_c"})
    assert reasons["c_a"][0] == "over_budget"
    assert outcome.accepted == ["c_ocean1", "c_b", "c_c"]
    assert all(r.stage == "select" and r.text for r in outcome.rejections)
    assert len(outcome.rejections) + len(outcome.accepted) == len(batch)  # nothing silent
    c = outcome.counters
    assert c["candidates"] == 12 and c["accepted"] == 3 and c["exact_duplicate"] == 2
    assert c["below_threshold:accuracy"] == 1 and c["over_budget"] == 1 and c["embedded"] == 5
    # commit: accepted examples now sit in the pool indexes, rejected ones do not
    assert "c_b" in indexes.novelty and "c_b" in indexes.dedup and "c_a" not in indexes.novelty
    again = await select([batch[9]], scores, indexes, config, embedder=keyword_embedder)
    assert again.accepted == ["c_b"]  # re-running a batch: never a duplicate of itself


async def test_commit_false_leaves_indexes_alone(pool: list[Example]) -> None:
    config = SelectorConfig(steps=["exact_dedup", "near_dedup", "novelty"])
    indexes = SelectorIndexes.build(pool, config)
    batch = [ex("a", "Tell me a joke about cats."), ex("b", "Tell me a joke about cats, please.")]
    outcome = await select(batch, {}, indexes, config, commit=False)
    assert outcome.accepted == ["a"]
    assert (
        outcome.rejections[0].reason == "too_similar"
        and outcome.rejections[0].evidence["most_similar"] == "a"
    )
    assert "a" not in indexes.novelty and len(indexes.dedup) == 2


async def test_missing_score_can_pass_and_max_scores(pool: list[Example]) -> None:
    config = SelectorConfig(
        steps=["thresholds"],
        missing_score="pass",
        max_scores={"ifd": 1.0},
        min_scores={"accuracy": 4.5},
    )
    indexes = SelectorIndexes.build(pool, config)
    batch = [ex("m", "no scores at all"), ex("h", "ifd too high"), ex("u", "unparseable judge")]
    scores = {"h": sc("h", accuracy=5.0, ifd=1.3), "u": sc("u", accuracy=None)}
    outcome = await select(batch, scores, indexes, config)
    assert outcome.accepted == ["m", "u"]
    assert [(r.example_id, r.reason) for r in outcome.rejections] == [("h", "above_threshold:ifd")]
    strict = await select(
        batch,
        scores,
        indexes,
        SelectorConfig(steps=["thresholds"], min_scores={"accuracy": 4.5}, missing_score="reject"),
    )
    assert {r.example_id: r.reason for r in strict.rejections} == {
        "m": "missing_score",
        "u": "missing_score",
    }


async def test_scores_average_over_scorers(pool: list[Example]) -> None:
    config = SelectorConfig(steps=["thresholds"], min_scores={"accuracy": 4.5})
    indexes = SelectorIndexes.build(pool, config)
    batch = [ex("x", "Two judges disagree."), ex("y", "Exactly on the threshold.")]
    scores = {
        "x": [Score("x", "judge-a", "accuracy", 5.0), Score("x", "judge-b", "accuracy", 3.0)],
        "y": [Score("y", "judge-a", "accuracy", 5.0), Score("y", "judge-b", "accuracy", 4.0)],
    }
    outcome = await select(batch, scores, indexes, config)
    assert outcome.accepted == ["y"]  # mean 4.5 is kept: the bound is "at least"
    assert outcome.rejections[0].evidence == {
        "dimension": "accuracy",
        "value": 4.0,
        "threshold": 4.5,
    }
    assert (await select(batch, scores, indexes, SelectorConfig(steps=[]))).accepted == ["x", "y"]


async def test_instag_diversity_and_budget_without_diversity(pool: list[Example]) -> None:
    config = SelectorConfig(steps=["diversity"], diversity={"method": "instag"}, budget=2)
    indexes = SelectorIndexes.build(pool, config)
    batch = [ex("a", "A"), ex("b", "B"), ex("c", "C"), ex("d", "D")]
    tags = {"a": ["math"], "b": ["math", "code"], "c": ["poetry"]}
    outcome = await select(batch, {}, indexes, config, tags=tags)
    assert outcome.accepted == ["b", "c"]
    assert {r.example_id: r.reason for r in outcome.rejections} == {
        "a": "over_budget",
        "d": "not_diverse",
    }
    with pytest.raises(ConfigError):
        await select(batch, {}, indexes, config)
    ranked = SelectorConfig(steps=[], budget=1)
    scores = {"a": good("a", complexity=1.0), "c": good("c", complexity=5.0)}
    by_rank = await select(batch, scores, indexes, ranked)
    assert by_rank.accepted == ["c"] and by_rank.counters["unranked"] == 2


def ifd(id_: str, value: float | None) -> list[Score]:
    return [Score(id_, "ifd", "ifd", value)]


async def test_ifd_top_fraction_keeps_the_highest_ifd_and_says_why(pool: list[Example]) -> None:
    values = [0.15, 0.8, 0.35, 0.7, 0.25, 0.55, 0.45, 0.65]
    batch = [ex(f"e{i}", f"Task number {i}.") for i in range(len(values))]
    batch += [ex("unscored", "A task the student could not score."), ex("hi", "IFD above 1.")]
    scores = {e.id: ifd(e.id, v) for e, v in zip(batch, values, strict=False)}
    scores["hi"] = ifd("hi", 1.2)  # reaches the selector only if critic.ifd.max_ifd is raised
    # No step names the cut: `evoinstruct filter` runs its final select with steps=[] too.
    config = SelectorConfig(steps=[], ifd_top_fraction=0.25)
    outcome = await select(batch, scores, SelectorIndexes.build(pool, config), config)

    assert outcome.accepted == ["e1", "e3", "unscored"]  # 2 of 8 ranked (0.8, 0.7); none to rank
    reasons = {r.example_id: (r.reason, r.evidence) for r in outcome.rejections}
    assert reasons["e0"] == (
        "ifd_below_top_fraction",
        {"ifd": 0.15, "cutoff": 0.7, "top_fraction": 0.25, "kept": 2, "ranked": 8},
    )
    assert {i for i, (reason, _) in reasons.items() if reason == "ifd_below_top_fraction"} == {
        "e0", "e2", "e4", "e5", "e6", "e7"
    }  # fmt: skip
    assert reasons["hi"] == ("ifd_above_1", {"ifd": 1.2, "max_ifd": 1.0})
    assert outcome.counters["ifd_below_top_fraction"] == 6

    # The default keeps every candidate, IFD above 1 included: the critic's max_ifd decides that.
    default = SelectorConfig(steps=[])
    everything = await select(batch, scores, SelectorIndexes.build(pool, default), default)
    assert len(everything.accepted) == len(batch)
    # Without IFD scores there is nothing to rank by, so nothing is cut.
    unscored = await select(batch, {}, SelectorIndexes.build(pool, config), config)
    assert len(unscored.accepted) == len(batch)


async def test_ifd_top_fraction_ranks_only_what_survived_the_earlier_stages(
    pool: list[Example],
) -> None:
    config = SelectorConfig(
        steps=["exact_dedup", "thresholds"], min_scores={"accuracy": 4.5}, ifd_top_fraction=0.5
    )
    batch = [ex("copy", "Write a poem about the sea at night."), ex("low", "Low accuracy.")]
    batch += [ex("a", "First task."), ex("b", "Second task.")]
    scores = {
        e.id: good(e.id) + ifd(e.id, v) for e, v in zip(batch, [0.9, 0.8, 0.3, 0.6], strict=True)
    }
    scores["low"] = good("low", accuracy=3.0) + ifd("low", 0.8)
    outcome = await select(batch, scores, SelectorIndexes.build(pool, config), config)
    assert outcome.accepted == ["b"]
    assert {r.example_id: r.reason for r in outcome.rejections} == {
        "copy": "exact_duplicate",
        "low": "below_threshold:accuracy",
        "a": "ifd_below_top_fraction",
    }


async def test_instag_rare_tags_are_judged_against_the_pool_counts(pool: list[Example]) -> None:
    config = SelectorConfig(steps=["diversity"], diversity={"method": "instag"}, budget=2)
    batch = [ex("a", "A"), ex("b", "B"), ex("c", "C")]
    tags = {"a": ["code generat", "python"], "b": ["code gen"], "c": ["poetri"]}
    # Within this batch alone every tag is rare and none is similar enough to merge, so
    # "code gen" counts as new and b beats c.
    alone = await select(batch, {}, SelectorIndexes.build(pool, config), config, tags=tags)
    assert alone.accepted == ["a", "b"]
    asked: list[int] = []

    def pool_counts() -> dict[str, int]:
        asked.append(1)
        return {"code generat": 4, "python": 3, "poetri": 2}

    indexes = SelectorIndexes.build(pool, config, tag_counts=pool_counts)
    outcome = await select(batch, {}, indexes, config, tags=tags)
    # The pool knows "code generat": b's rare "code gen" merges into it and adds nothing new.
    assert outcome.accepted == ["a", "c"] and asked == [1]
    assert {r.example_id: r.reason for r in outcome.rejections} == {"b": "over_budget"}

    drop = SelectorConfig(
        steps=["diversity"], diversity={"method": "instag", "rare_policy": "drop"}
    )
    dropped = await select(
        batch,
        {},
        SelectorIndexes.build(pool, drop, tag_counts=lambda: {"poetri": 5}),
        drop,
        tags=tags,
    )
    assert dropped.accepted == ["c"]  # a's and b's tags are rare in pool and batch alike
    assert {r.example_id: r.evidence for r in dropped.rejections} == {
        "a": {"tags": [], "reason": "no tags"},
        "b": {"tags": [], "reason": "no tags"},
    }


async def test_async_embedder_and_fallback_when_it_cannot_embed(pool: list[Example]) -> None:
    config = SelectorConfig(steps=["diversity"])
    indexes = SelectorIndexes.build(pool, config)
    batch = [
        ex("x", "Write a haiku about autumn leaves.", output="Red leaves drift and fall"),
        ex("y", "Write a haiku about autumn leaves!", output="Red leaves drift and fall"),
        ex("z", "解释量子纠缠。", output="量子纠缠是一种关联。"),
    ]

    async def embed(texts: list[str]) -> list[list[float]]:
        return keyword_embedder(texts).tolist()

    async def cannot(texts: list[str]) -> list[list[float]]:
        raise UnsupportedError("this backend has no embeddings")

    assert (await select(batch, {}, indexes, config, embedder=embed)).accepted == ["x", "y", "z"]
    fallback = await select(batch, {}, indexes, config, embedder=cannot)
    assert fallback.counters["embedding_fallback"] == 1
    assert fallback.accepted == ["x", "z"] and fallback.rejections[0].reason == "not_diverse"
    with_reference = await select(
        batch[2:], {}, indexes, config, reference_texts=["解释量子纠缠。\n量子纠缠是一种关联。"]
    )
    assert (
        with_reference.accepted == []
        and with_reference.rejections[0].evidence["most_similar"] == "reference:0"
    )


def test_config_defaults_follow_methods_and_forbid_unknown_keys() -> None:
    c = SelectorConfig()
    # The judge's bar (accuracy >= 4.5) is critic.judge.threshold; the selector adds none of its own.
    assert c.min_scores == {} and c.missing_score == "pass"
    assert c.dedup.jaccard_threshold == 0.8 and c.novelty.threshold == 0.7
    assert c.decontam.ngram == 13 and c.diversity.max_cosine == 0.9 and c.diversity.method == "repr"
    assert c.rank_by == ["complexity", "quality"] and c.budget is None
    assert c.ifd_top_fraction == 1.0  # off: Cherry's 0.05–0.10 is a choice to make, not a default
    assert c.diversity.min_tag_count == 2 and c.diversity.rare_policy == "merge"
    with pytest.raises(ValidationError):
        SelectorConfig(ifd_top_fraction=0)
    with pytest.raises(ValidationError):
        SelectorConfig(treshold=0.7)
    with pytest.raises(ValidationError):
        SelectorConfig(steps=["judge"])


def test_unknown_field_names_are_config_errors() -> None:
    with pytest.raises(ValidationError):
        SelectorConfig(novelty_fields=["instrution"])
    with pytest.raises(ValidationError):
        SelectorConfig(decontam={"fields": ["answer"]})
