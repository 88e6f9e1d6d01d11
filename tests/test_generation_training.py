"""The student as a generator: call records, generation-task training examples and their share."""

from __future__ import annotations

import random

import pytest

from evoinstruct.agents.generator import parse_tasks, task_list
from evoinstruct.store.generation_calls import GenerationCall
from evoinstruct.store.records import ExampleDraft
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.data import is_heldout, select_mix
from evoinstruct.trainer.generation_data import SOURCE, GenerationExample

pytest_plugins = ["tests.conftest_trainer"]

PROMPT = "Come up with a series of diverse tasks ...\n1. Write a haiku about rain.\n2."


def _call(store, round: int, call: int, instructions: list[str], language: str = "en") -> list[str]:
    """A generation call that added these instructions as candidates; returns their ids."""
    drafts = [
        ExampleDraft(text, output=f"answer {i}", language=language, operation="self_instruct")
        for i, text in enumerate(instructions)
    ]
    ids = store.add_candidates(drafts, round).ids
    record = GenerationCall(
        round=round,
        call=call,
        prompt=f"{PROMPT} (call {round}:{call})",
        first_index=2,
        language=language,
        model_version="teacher",
        template=f"{language}/generate_self_instruct.jinja2",
        tasks=len(instructions) + 1,
        candidates=ids,
        drops={"too_similar": 1},
    )
    store.record_generation_calls([record])
    return ids


def test_call_records_are_kept_once(store) -> None:
    ids = _call(store, 1, 0, ["Name three rivers in Africa.", "Explain what a leap year is."])
    again = GenerationCall(1, 0, "another prompt", 9, candidates=["x"])
    store.record_generation_calls([again])  # a re-run of the step changes nothing
    (call,) = store.generation_calls()
    assert call.id == "1:0" and call.candidates == ids and call.first_index == 2
    assert call.drops == {"too_similar": 1} and call.prompt.endswith("(call 1:0)")
    assert (
        store.generation_calls(round=2) == [] and store.generation_calls(model_version="v1") == []
    )


def test_the_answer_is_the_list_the_parser_reads() -> None:
    tasks = ["Name three rivers in Africa.", "Explain what a leap year is."]
    text = task_list(tasks, 9)
    assert text == "9. Name three rivers in Africa.\n10. Explain what a leap year is."
    parsed, problems = parse_tasks(text, "stop", mode="self_instruct", first_index=9, count=8)
    assert [t.instruction for t in parsed] == tasks and problems == []


def test_generation_examples_hold_only_accepted_trainable_tasks(store) -> None:
    texts = [f"Describe the history of topic number {i} in four sentences." for i in range(12)]
    ids = _call(store, 1, 0, texts[:6]) + _call(store, 1, 1, texts[6:9])
    _call(store, 1, 2, texts[9:])  # nothing of this call is accepted: no example
    cfg = TrainerConfig(heldout_fraction=0.4, generation_share=0.3, seed_share=0.0)
    rejected = ids[4]
    accepted = [i for i in ids if i != rejected]
    store.set_status(accepted, "accepted")
    store.set_status([rejected], "rejected")
    mix = select_mix(store, cfg, random.Random(0))
    trainable = {i for i in accepted if not is_heldout(i, 0.4)}
    assert trainable and trainable != set(accepted)  # the hash holds some out
    assert sorted(g.call for g in mix.generation) == ["1:0", "1:1"]
    for g in mix.generation:
        assert set(g.targets) <= trainable  # held-out, rejected and pending tasks never teach
        listed, _ = parse_tasks(g.response, "stop", mode="self_instruct", first_index=2, count=9)
        assert [t.instruction for t in listed] == [store.get(i).instruction for i in g.targets]
        assert g.prompt.startswith(PROMPT)
    assert mix.manifest()["generation"] == [g.id for g in mix.generation]
    assert mix.available["generation"] == 2


def test_a_call_that_showed_an_untrainable_demo_teaches_nothing(store) -> None:
    """The generation example's prompt is the call's own, demos included: a call that showed
    an example of the held-out-loss share (or a held-out or suite-overlapping one) is left out."""
    cfg = TrainerConfig(heldout_fraction=0.4, generation_share=0.3, seed_share=0.0)
    demos = [f"Summarise the plot of novel number {i} in two sentences." for i in range(40)]
    demo_ids = store.add_candidates([ExampleDraft(t, output="ok") for t in demos], 1).ids
    shown = next(store.get(i) for i in demo_ids if is_heldout(i, 0.4))
    tasks = [f"List four uses of material number {i} at home." for i in range(4)]
    ids = _call(store, 1, 0, tasks[:2]) + _call(store, 1, 1, tasks[2:])
    # The second call's prompt showed the held-out example as a demo.
    store.db.execute(
        "UPDATE generation_calls SET prompt = ? WHERE call = 1",
        [f"{PROMPT}\n- {shown.instruction}\n"],
    )
    store.set_status([*ids, *demo_ids], "accepted")
    assert any(not is_heldout(i, 0.4) for i in ids[2:])  # the call would teach otherwise
    mix = select_mix(store, cfg, random.Random(0))
    assert [g.call for g in mix.generation] == ["1:0"]


def test_the_share_sizes_the_generation_part(store) -> None:
    for call in range(10):
        texts = [f"Plan a {call}-day trip to city number {j} on a small budget." for j in range(3)]
        store.set_status(_call(store, 1, call, texts), "accepted")
    base = {"heldout_fraction": 0.0, "seed_share": 0.0, "replay_share": 0.0}
    assert (
        select_mix(store, TrainerConfig(**base, generation_share=0.0), random.Random(0)).generation
        == []
    )
    mix = select_mix(store, TrainerConfig(**base, generation_share=0.2), random.Random(0))
    # 30 new examples are 80% of the mix: the generation part is 20% of 37.5, rounded.
    assert len(mix.new) == 30 and len(mix.generation) == 8
    mix = select_mix(store, TrainerConfig(**base, generation_share=0.5), random.Random(0))
    assert len(mix.generation) == 10  # all there are


def test_calls_the_lineage_trained_on_come_last(store) -> None:
    for call in range(4):
        texts = [f"Write a limerick about animal number {call} and its habits."]
        store.set_status(_call(store, 1, call, texts), "accepted")
    base = {"heldout_fraction": 0.0, "seed_share": 0.0, "replay_share": 0.0}
    cfg = TrainerConfig(**base, generation_share=0.25)  # 4 new -> 1 generation example
    store.record_training_manifest("v1", ["generation:1:0", "generation:1:1"], role="generation")
    store.register_model_version(
        "v1", base="b", method="lora", path="p", round=1, metrics={}, config={}
    )
    mix = select_mix(store, cfg, random.Random(0), parent="v1")
    assert [g.id for g in mix.generation] in (["generation:1:2"], ["generation:1:3"])


def test_shares_must_leave_room_for_new_examples() -> None:
    with pytest.raises(ValueError, match="generation_share"):
        TrainerConfig(seed_share=0.3, replay_share=0.4, generation_share=0.3)


def test_a_generation_example_round_trips_through_the_plan() -> None:
    g = GenerationExample("3:1", "prompt", "4. A task.", "zh", ("a", "b"))
    assert GenerationExample.from_dict(g.to_dict()) == g
    example = g.as_example()
    assert example.id == "generation:3:1" and example.source == SOURCE
    assert (example.instruction, example.output) == ("prompt", "4. A task.")


def test_a_version_trains_on_generation_examples(
    store, tiny_model_dir, tmp_path, one_thread
) -> None:
    """The trainer's plan holds the generation examples' texts; the version's manifest and
    metrics name them; the tokenized data set holds them beside the pool's examples."""
    from evoinstruct.trainer.train import train
    from tests.conftest_trainer import tiny_config

    for call in range(6):
        texts = [f"Describe a quiet morning in town number {call}, part {j}." for j in range(2)]
        store.set_status(_call(store, 1, call, texts), "accepted")
    cfg = tiny_config(
        tiny_model_dir,
        max_steps=2,
        heldout_fraction=0.0,
        seed_share=0.0,
        replay_share=0.0,
        generation_share=0.25,
    )
    result = train(cfg, tmp_path, store=store)
    examples = result.metrics["examples"]
    assert examples["new"] == 12 and examples["generation"] == 4  # 12 are 75% of 16
    trained = store.training_manifest(result.version, role="generation")
    assert len(trained) == 4 and all(i.startswith("generation:1:") for i in trained)
    tokenized = result.metrics["tokenization"]
    assert tokenized["examples"] == examples["new"] + examples["generation"]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_prompt_asks_for_as_many_tasks_as_the_answer_lists(language: str) -> None:
    """A call asked for eight tasks and the loop kept two: the example's prompt, rendered
    again with the call's demos, asks for two (trained on 'write eight' answered with two,
    the student learnt to stop early and its yield fell)."""
    from evoinstruct.agents.generator import GeneratorConfig, call_prompt
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.store.records import Example
    from evoinstruct.trainer.generation_data import call_demos, generation_examples

    demos = {
        "en": ["Write a haiku about rain.", "List three uses of vinegar."],
        "zh": ["写一首关于雨的俳句。", "列出醋的三种用途。"],
    }[language]
    seeds = [Example(id=f"s{i}", instruction=d, output="") for i, d in enumerate(demos)]
    library = PromptLibrary(language)
    config = GeneratorConfig(self_instruct_tasks_per_call=8)
    sent, first = call_prompt(seeds, library, config)
    assert "8" in sent
    kept = {
        "en": ["Explain how tides form.", "Describe a good morning routine."],
        "zh": ["解释潮汐是如何形成的。", "描述一个好的早晨习惯。"],
    }[language]
    accepted = {
        f"g{i}": Example(id=f"g{i}", instruction=t, output="a", source="generated")
        for i, t in enumerate(kept)
    }
    call = GenerationCall(
        round=1,
        call=0,
        prompt=sent,
        first_index=first,
        language=language,
        template=f"{language}/generate_self_instruct.jinja2",
        candidates=["g0", "x", "g1"],
    )
    assert call_demos(call) == demos
    (example,) = generation_examples([call], accepted)
    asked = library.render(
        "generate_self_instruct", demos=demos, first_index=first, last_index=first + 1
    )
    assert example.prompt == asked != sent and example.response == task_list(kept, first)
    listed, _ = parse_tasks(example.response, "stop", mode="self_instruct", first_index=1, count=2)
    assert [t.instruction for t in listed] == kept
    # A prompt the packaged template did not write (a project's own) is kept as sent.
    own = GenerationCall(
        round=1,
        call=1,
        prompt="My own prompt.\n- a demo\nWrite 8 tasks.",
        first_index=first,
        language=language,
        template=call.template,
        candidates=["g0"],
    )
    (mine,) = generation_examples([own], accepted)
    assert mine.prompt == own.prompt
