"""The generator measured per model version: the run's record, and two models paired on the
same demo sets."""

from __future__ import annotations

from importlib import resources

import pytest

from evoinstruct.agents.generator import GeneratorConfig
from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes
from evoinstruct.cli.report.generator_yield import BASE, generator_rows
from evoinstruct.graph.report_config import ReportConfig
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.generation_calls import GenerationCall
from evoinstruct.store.records import ExampleDraft, Rejection
from evoinstruct.store.seeds import add_seed_file
from evoinstruct.trainer.generator_eval import compare_generators, fixed_plans, score_generator
from tests.doubles import ScriptedModel

SEEDS = resources.files("evoinstruct.prompts") / "seeds"


def _candidates(store, round: int, texts: list[str]) -> list[str]:
    drafts = [ExampleDraft(t, output="an answer", operation="self_instruct") for t in texts]
    return store.add_candidates(drafts, round).ids


def test_yield_drops_and_diversity_per_version(store) -> None:
    add_seed_file(store, SEEDS / "seed_tasks_en.jsonl")
    a, b, c = _candidates(store, 1, ["Name three rivers in Asia.", "Name three rivers in Asia!",
                                     "Explain how a bicycle gear works."])  # fmt: skip
    (d,) = _candidates(store, 1, ["Describe the smell of rain on a summer street."])
    e, f = _candidates(store, 2, ["Plan a picnic for six friends on a budget.",
                                  "Compare tea and coffee for a morning routine."])  # fmt: skip
    store.set_status([a, d, e, f], "accepted")
    store.reject([Rejection("select", "near_duplicate", example_id=b)], 1)
    # A failed call is no verdict: c stays pending.
    store.record_rejections([Rejection.failed_call("respond", "timeout", example_id=c)], 1)
    store.register_model_version(
        "v1", base="b", method="lora", path="p", round=1, metrics={}, config={}
    )
    calls = [
        GenerationCall(1, 0, "p", 1, "en", "smollm2", "en/generate_self_instruct.jinja2", 6,
                       [a, b, c], {"too_similar": 2, "echoed_demo": 1}),
        GenerationCall(1, 1, "p", 1, "en", "smollm2", "en/generate_self_instruct.jinja2", 1, [d]),
        GenerationCall(2, 0, "p", 1, "en", "v1", "en/generate_self_instruct.jinja2", 3, [e, f],
                       {"repeated": 1}),
        GenerationCall(2, 1, "p", 1, "en", "v1", "en/generate_self_instruct.jinja2", 0, []),
    ]  # fmt: skip
    store.record_generation_calls(calls)
    rows = {r.version: r for r in generator_rows(store, ReportConfig())}
    assert list(rows) == [BASE, "v1"]  # an untrained model's calls are the base model's
    base, v1 = rows[BASE], rows["v1"]
    assert (base.calls, base.tasks, base.accepted, base.pending) == (2, 7, 2, 1)
    assert base.per_call == 1.0 and base.low <= 1.0 <= base.high
    assert base.drops == {"too_similar": 2, "echoed_demo": 1, "select:near_duplicate": 1}
    assert (v1.calls, v1.accepted, v1.per_call, v1.rounds) == (2, 2, 1.0, [2])
    assert 0 <= v1.low <= 1.0 <= v1.high <= 2.0  # one call gave 2, the other 0
    assert v1.diversity["distinct2"] == 1.0 and v1.seed_diversity["distinct2"] is not None
    assert v1.sample == ["Plan a picnic for six friends on a budget.",
                         "Compare tea and coffee for a morning routine."]  # fmt: skip


def test_no_calls_no_rows(store) -> None:
    assert generator_rows(store, ReportConfig()) == []


NEW = [
    "Describe the sound of a thunderstorm at night.",
    "Plan a three-day walking trip along a river.",
    "Explain why bread goes stale faster in the fridge.",
    "List five questions to ask before adopting a dog.",
]


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_two_generators_on_the_same_demo_sets(store, language: str) -> None:
    """The base model echoes a demo; the student writes new tasks: paired per call, and the
    measurement writes nothing to the pool."""
    add_seed_file(store, SEEDS / f"seed_tasks_{language}.jsonl")
    config = GeneratorConfig(generate_instances=False, self_instruct_tasks_per_call=4)
    plans = fixed_plans(store, config, [language], 6, seed=1)
    again = fixed_plans(store, config, [language], 6, seed=1)
    assert [[d.id for d in p.demos] for p in plans] == [[d.id for d in p.demos] for p in again]
    assert all(d.language == language for p in plans for d in p.demos)
    novelty = SelectorIndexes.build(store.iter_examples(), SelectorConfig()).novelty
    new = NEW if language == "en" else [
        "描述夜晚雷雨的声音。", "规划一次沿河徒步三天的旅行。",
        "解释为什么面包放在冰箱里更容易变干。", "列出领养狗之前应该问的五个问题。",
    ]  # fmt: skip
    echo = "1. " + plans[0].demos[0].instruction
    student_reply = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(new))

    def prompts_for(lang: str) -> PromptLibrary:
        return PromptLibrary(lang)

    before = store.pool_stats()
    base = await score_generator(
        "base", plans, ScriptedModel(default=echo), prompts_for, config, novelty, seed=1
    )
    student = await score_generator(
        "v1", plans, ScriptedModel(default=student_reply), prompts_for, config, novelty, seed=1
    )
    assert base.per_call[0] == 0 and base.drops["echoed_demo"] >= 1
    # Within the step a task written twice is novel once: the later calls' copies are too similar.
    assert student.per_call == [4, 0, 0, 0, 0, 0] and student.drops["too_similar"] == 20
    paired = compare_generators(student, base, seed=1)
    assert paired["calls"] == 6 and paired["calls_better"] == 1 and paired["calls_worse"] == 0
    assert paired["diff"] == pytest.approx(4 / 6 - sum(base.per_call) / 6)
    assert store.pool_stats() == before and store.generation_calls() == []
    with pytest.raises(ValueError, match="same calls"):
        compare_generators(student, base.__class__("x", [1], 1))
