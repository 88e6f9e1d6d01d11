"""Language follows the project: demos, parents and prompts in project.language, or in each
language when the project is bilingual by choice; every generation call is on record."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.runtime import Runtime

from evoinstruct.graph.round import nodes
from evoinstruct.store.seeds import add_seed_file
from evoinstruct.text.rules import has_cjk


@pytest.fixture
def make_deps(tmp_path: Path):
    """Deps of a project seeded in both languages, with the given project settings."""
    from evoinstruct.graph.project import init_project
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.models.factory import ModelSet
    from tests.fake_teacher import scripted_teacher

    opened = []

    def make(language: str = "en", bilingual: bool = False, **loop: object):
        project = init_project(tmp_path / f"proj-{language}-{bilingual}", language=language)
        sets = [f"project.bilingual={str(bilingual).lower()}"]
        sets += [f"loop.{key}={value}" for key, value in loop.items()]
        config = project.load_config(sets)
        teacher = scripted_teacher()
        models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
        deps = deps_for_project(project, config, models=models)
        deps.extras["teacher"] = teacher
        for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
            add_seed_file(deps.store, project.root / "seeds" / name)
        opened.append(deps)
        return deps

    yield make
    for deps in opened:
        deps.store.close()


def _generation_prompts(deps) -> list[str]:
    return [
        c.messages[0]["content"]
        for c in deps.extras["teacher"].calls
        if c.messages[0]["content"].startswith(
            ("Here are some example tasks", "下面是一些只靠文字")
        )
    ]


def _demos(prompt: str) -> list[str]:
    return [line[2:] for line in prompt.splitlines() if line.startswith("- ")]


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_a_one_language_project_generates_and_evolves_in_its_language(
    make_deps, language: str
) -> None:
    deps = make_deps(language, generate_calls=3, evolve_per_round=6)
    update = await nodes.generate({"round": 1}, Runtime(context=deps))
    assert update["counts"]["generate"]["new"] > 0
    prompts = _generation_prompts(deps)
    assert len(prompts) == 3
    for prompt in prompts:
        assert prompt.startswith("下面是一些" if language == "zh" else "Here are some")
        demos = _demos(prompt)
        assert demos and all(has_cjk(d) == (language == "zh") for d in demos)
    made = list(deps.store.iter_examples(source="generated"))
    assert made and {e.language for e in made} == {language}
    plan = await nodes.plan({"round": 1}, Runtime(context=deps))
    parents = deps.store.get_many(plan["parent_ids"])
    assert parents and {p.language for p in parents} == {language}


async def test_a_bilingual_project_takes_turns_and_evolves_each_parent_in_its_language(
    make_deps,
) -> None:
    deps = make_deps("en", bilingual=True, generate_calls=4, evolve_per_round=16)
    await nodes.generate({"round": 1}, Runtime(context=deps))
    prompts = _generation_prompts(deps)
    assert [p.startswith("下面是一些") for p in prompts].count(True) == 2
    calls = deps.store.generation_calls(round=1)
    assert [c.language for c in calls] == ["en", "zh", "en", "zh"]
    for call in calls:
        assert call.template == f"{call.language}/generate_self_instruct.jinja2"
        for example in deps.store.get_many(call.candidates):
            assert example.language == call.language
            assert example.meta["generation_call"] == call.call
    plan = await nodes.plan({"round": 1}, Runtime(context=deps))
    parents = deps.store.get_many(plan["parent_ids"])
    assert {p.language for p in parents} == {"en", "zh"}
    teacher = deps.extras["teacher"]
    before = len(teacher.calls)
    await nodes.evolve({"round": 1, **plan}, Runtime(context=deps))
    asked = [c.messages[0]["content"] for c in teacher.calls[before:]]
    checked = set()
    for parent in parents:
        for prompt in (p for p in asked if parent.instruction in p):
            # The template around the parent's text is in the parent's language.
            rest = prompt.replace(parent.instruction, "")
            assert has_cjk(rest) == (parent.language == "zh"), prompt
            checked.add(parent.language)
    assert checked == {"en", "zh"}


def test_bilingual_is_a_choice_the_config_names() -> None:
    from evoinstruct.graph.config import ProjectConfig

    assert ProjectConfig().languages() == ("en",)
    assert ProjectConfig(language="zh").languages() == ("zh",)
    assert ProjectConfig(language="zh", bilingual=True).languages() == ("zh", "en")


async def test_each_call_is_recorded_with_its_candidates_and_drops(make_deps) -> None:
    deps = make_deps("en", generate_calls=2)
    update = await nodes.generate({"round": 1}, Runtime(context=deps))
    calls = deps.store.generation_calls(round=1)
    assert [c.call for c in calls] == [0, 1]
    added = [i for c in calls for i in c.candidates]
    assert len(added) == update["counts"]["generate"]["new"] == len(set(added))
    for call in calls:
        assert call.prompt.startswith("Here are some example tasks") and call.first_index == 1
        assert call.model_version == "scripted" and call.tasks >= len(call.candidates)
        # Every task the answer held is a candidate or a counted drop.
        assert call.tasks == len(call.candidates) + sum(call.drops.values())
    # A re-run of the step (a crash after the writes) keeps the first record.
    await nodes.generate({"round": 1}, Runtime(context=deps))
    assert [c.candidates for c in deps.store.generation_calls(round=1)] == [
        c.candidates for c in calls
    ]


async def test_a_language_without_demos_gets_no_call(make_deps) -> None:
    deps = make_deps("en", bilingual=True, generate_calls=4)
    zh = [e.id for e in deps.store.iter_examples(source="seed") if e.language == "zh"]
    deps.store.set_status(zh, "rejected")
    update = await nodes.generate({"round": 1}, Runtime(context=deps))
    assert [c.language for c in deps.store.generation_calls(round=1)] == ["en", "en"]
    assert update["counts"]["generate"]["calls_without_demos"] == 2
