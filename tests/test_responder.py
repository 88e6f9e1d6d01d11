"""Responder: the template, the system prompt bank, end-to-end runs, and programmatic repair
of constrained answers."""

from __future__ import annotations

from pathlib import Path
from random import Random

import pytest

from evoinstruct.agents.constraints import Constraint, all_passed, check_all, dump_constraints
from evoinstruct.agents.responder import (
    SAMPLING_KEY,
    ResponderConfig,
    build_messages,
    load_bank,
    pick_sample,
    pick_system_prompt,
    respond,
)
from evoinstruct.models.base import Choice, Failure, Generation
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import ConfigError
from evoinstruct.store.records import Example, ExampleDraft
from tests.doubles import ScriptedModel

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


def stored(instruction: str, output: str | None = None, id: str = "x1") -> Example:
    return Example(
        id=id, instruction=instruction, output=output, source="evolved", parent_id="p1",
        operation="deepen", round=1, language="en", model_version="teacher",
        template="en/evol_deepen.jinja2", depth=1,
    )  # fmt: skip


@pytest.mark.parametrize("language", ["en", "zh"])
def test_render_respond(language: str) -> None:
    lib = PromptLibrary(language)
    assert lib.render("respond", instruction="把句子翻译成英文。", input="我喜欢读书。") == (
        "把句子翻译成英文。\n\n我喜欢读书。"
    )
    assert lib.render("respond", instruction="Name three rivers.", input="") == "Name three rivers."
    raw = (PROMPTS_DIR / language / "respond.jinja2").read_text(encoding="utf-8")
    assert raw.startswith("{# variables: instruction, input")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_bank_has_both_languages_and_families(language: str) -> None:
    bank = load_bank(PromptLibrary(language), "orca_system_prompts")
    assert len(bank["default"]) >= 5 and len(set(bank["default"])) == len(bank["default"])
    assert {"math", "code"} <= set(bank["families"])
    has_han = any("\u4e00" <= ch <= "\u9fff" for ch in bank["default"][0])
    assert has_han is (language == "zh")


def test_project_bank_overrides_default(tmp_path: Path) -> None:
    (tmp_path / "orca_system_prompts.toml").write_text(
        '[en]\ndefault = ["Explain like a pirate."]\n'
    )
    lib = PromptLibrary("en", override_dir=tmp_path)
    bank = load_bank(lib, "orca_system_prompts")
    assert bank["default"] == ["Explain like a pirate."] and "math" in bank["families"]


def test_bank_without_default_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty_bank.toml").write_text("[en]\ndefault = []\n")
    with pytest.raises(ConfigError, match=r"en\]\.default"):
        load_bank(PromptLibrary("en", override_dir=tmp_path), "empty_bank")


def test_pick_system_prompt_prefers_family_and_is_seeded() -> None:
    bank = {"default": ["a", "b", "c"], "families": {"math": ["m"]}}
    assert pick_system_prompt(bank, "math", Random(0)) == "m"
    assert pick_system_prompt(bank, "poetry", Random(0)) in {"a", "b", "c"}
    picks = [pick_system_prompt(bank, None, Random(5)) for _ in range(3)]
    assert len(set(picks)) == 1


def test_build_messages() -> None:
    assert build_messages("", "hi") == [{"role": "user", "content": "hi"}]
    assert build_messages("sys", "hi")[0] == {"role": "system", "content": "sys"}


async def test_respond_end_to_end() -> None:
    items = [
        ExampleDraft("Name three rivers in Asia.", source="evolved"),
        ExampleDraft("Already answered.", output="Yes."),
        ExampleDraft("Explain tides.", source="evolved"),
        ExampleDraft("Write a long essay.", source="evolved"),
        ExampleDraft("Say nothing.", source="evolved"),
        stored("把句子翻译成英文：我喜欢读书。"),
    ]
    replies = [
        "  The Yangtze, the Mekong and the Ganges.  ",
        Failure("timeout", "read timed out"),
        Generation(choices=[Choice("Once upon a time", "length")]),
        "   ",
        "I like reading books.",
    ]
    model = ScriptedModel(replies, model_id="teacher")
    outcome = await respond(items, model, PromptLibrary("en"), ResponderConfig(), Random(0))
    assert model.batches == [5]
    assert [i.instruction for i in outcome.skipped] == ["Already answered."]
    answered = {i.instruction: i for i in outcome.answered}
    assert (
        answered["Name three rivers in Asia."].output == "The Yangtze, the Mekong and the Ganges."
    )
    assert answered["Name three rivers in Asia."].meta["response_model"] == "teacher"
    assert answered["Name three rivers in Asia."].meta["response_template"] == "en/respond.jinja2"
    translated = answered["把句子翻译成英文：我喜欢读书。"]
    assert (
        isinstance(translated, Example)
        and translated.id == "x1"
        and translated.output == "I like reading books."
    )
    assert translated.model_version == "teacher" and translated.parent_id == "p1"  # provenance kept
    assert sorted(outcome.reasons()) == ["empty_response", "model_failure:timeout", "truncated"]
    assert {r.stage for r in outcome.rejections} == {"respond"}
    assert outcome.calls == 5 and outcome.failures == {"timeout": 1}
    assert all(len(call.messages) == 1 for call in model.calls)  # no system prompt by default
    assert items[0].output is None  # inputs are not mutated


async def test_truncated_answers_can_be_kept() -> None:
    model = ScriptedModel([Generation(choices=[Choice("Once upon a time", "length")])])
    config = ResponderConfig(on_truncated="keep")
    outcome = await respond(
        [ExampleDraft("Write a story.")], model, PromptLibrary("en"), config, Random(0)
    )
    assert (
        outcome.answered[0].output == "Once upon a time" and outcome.answered[0].meta["truncated"]
    )


async def test_explanation_system_prompts_are_sampled_and_stored() -> None:
    lib = PromptLibrary("zh")
    bank = load_bank(lib, "orca_system_prompts")
    items = [ExampleDraft(f"解释第{i}个概念。") for i in range(12)]
    items.append(ExampleDraft("计算 12 乘以 7。", meta={"task_family": "math"}))
    items.append(ExampleDraft("Keep my system.", system="You are terse."))
    config = ResponderConfig(explanation_prompts=True)
    model = ScriptedModel(default="好的，下面一步一步解释。")
    outcome = await respond(items, model, lib, config, Random(11))
    systems = [item.system for item in outcome.answered]
    assert all(s in bank["default"] for s in systems[:12]) and len(set(systems[:12])) > 1
    assert systems[12] in bank["families"]["math"]
    assert systems[13] == "You are terse."
    for call, system in zip(model.calls, systems, strict=True):
        assert call.messages[0] == {"role": "system", "content": system}
    again = await respond(items, ScriptedModel(default="好的。"), lib, config, Random(11))
    assert [i.system for i in again.answered] == systems


async def test_respond_with_nothing_to_answer_makes_no_call() -> None:
    model = ScriptedModel()
    outcome = await respond(
        [ExampleDraft("Q", output="A")], model, PromptLibrary("en"), ResponderConfig(), Random(0)
    )
    assert model.calls == [] and len(outcome.skipped) == 1


# --- programmatic repair -------------------------------------------------------------------

LOWER = Constraint("change_case:english_lowercase")
NO_COMMA = Constraint("punctuation:no_comma")
QUOTED = Constraint("startend:quotation")
END = Constraint("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"})
SHORT = Constraint("length_constraints:number_words", {"relation": "less than", "num_words": 5})
REPAIR = ResponderConfig(repair=True)


def drawn(*texts: str, finish: str = "stop") -> list[Choice]:
    return [Choice(t, finish) for t in texts]


def test_a_passing_sample_is_preferred_over_repairing_an_earlier_one() -> None:
    # The first fails lowercase and could be repaired; the second passes as drawn.
    choices = drawn("Tides rise and fall.", "tides rise and fall.")
    index, record, text = pick_sample(choices, [LOWER, NO_COMMA], REPAIR)
    assert (index, text) == (1, "tides rise and fall.")
    assert record["passing"] == [1] and "repaired" not in record


def test_repair_tries_the_best_answer_first_and_keeps_the_repaired_text() -> None:
    choices = drawn("Tides, Mostly.", "Tides come from the Moon.", "Tides Rise.")
    index, record, text = pick_sample(choices, [LOWER, NO_COMMA, END], REPAIR)
    # Answers 1 and 2 pass one constraint (no comma) each; the earlier wins the tie.
    assert index == 1
    assert text == "tides come from the moon.\nis there anything else i can help with?"
    assert all_passed(check_all([LOWER, NO_COMMA, END], text))
    assert record == {
        "drawn": 3,
        "passing": [],
        "kept": 1,
        "kept_passes": 1,
        "constraints": 3,
        "repaired": [END.id, LOWER.id],
    }


def test_a_truncated_answer_is_never_repaired() -> None:
    cut = drawn("Tides come from the Moon and", finish="length")
    index, record, text = pick_sample(cut, [LOWER], REPAIR)
    assert (index, text) == (0, "Tides come from the Moon and") and "repaired" not in record
    # With a usable answer beside it, that one is repaired, not the cut one.
    choices = [*cut, Choice("Tides Follow The Moon.", "stop")]
    index, record, text = pick_sample(choices, [LOWER], REPAIR)
    assert (index, text, record["repaired"]) == (1, "tides follow the moon.", [LOWER.id])
    # Not even when truncation keeps it: an end phrase or a closing quote would hide the cut.
    keep = ResponderConfig(repair=True, on_truncated="keep")
    index, record, text = pick_sample(cut, [END, QUOTED], keep)
    assert (index, text) == (0, "Tides come from the Moon and") and "repaired" not in record


@pytest.mark.parametrize(
    ("answer", "constraints"),
    [(",", [NO_COMMA, QUOTED]), (", ,", [NO_COMMA, END]), ('"', [QUOTED]), ("，、", [NO_COMMA])],
)
def test_an_answer_without_content_is_never_repaired(answer: str, constraints: list) -> None:
    # Repairs would make the whole answer of their own text: a passing example of nothing.
    _, record, text = pick_sample(drawn(answer), constraints, REPAIR)
    assert "repaired" not in record and text == answer


def test_lowercase_end_phrase_and_quotes_pass_together_after_repair() -> None:
    constraints = [QUOTED, END, LOWER]
    _, record, text = pick_sample(drawn("The Moon pulls the sea."), constraints, REPAIR)
    assert text == '"the moon pulls the sea.\nis there anything else i can help with?"'
    assert all_passed(check_all(constraints, text))
    assert record["repaired"] == [END.id, LOWER.id, QUOTED.id]


def test_a_failing_constraint_without_a_repair_means_no_repair_is_kept() -> None:
    choices = drawn("The Moon Pulls The Whole Sea.", "The Sea Rises Twice Daily Here.")
    today = pick_sample(choices, [SHORT, LOWER], ResponderConfig())
    index, record, text = pick_sample(choices, [SHORT, LOWER], REPAIR)
    assert (index, record, text) == today
    assert text == "The Moon Pulls The Whole Sea." and "repaired" not in record


def test_repair_off_is_todays_rejection_sampling() -> None:
    choices = drawn("  Tides, Mostly.  ", "Tides come from the Moon.")
    index, record, text = pick_sample(choices, [LOWER, NO_COMMA], ResponderConfig())
    assert (index, text) == (1, "Tides come from the Moon.")
    assert record == {"drawn": 2, "passing": [], "kept": 1, "kept_passes": 1, "constraints": 2}
    assert ResponderConfig().repair is False


async def test_respond_stores_the_repaired_answer_and_counts_it() -> None:
    constraints = [QUOTED, LOWER]
    items = [
        ExampleDraft("Explain tides.", meta={"constraints": dump_constraints(constraints)}),
        ExampleDraft("Explain waves.", meta={"constraints": dump_constraints([SHORT])}),
    ]
    replies = [
        Generation(choices=drawn("Tides Come From The Moon.", "")),
        Generation(choices=drawn("Waves are moved by the wind over the sea.")),
    ]
    config = ResponderConfig(repair=True, verifiable_samples=2)
    outcome = await respond(items, ScriptedModel(replies), PromptLibrary("en"), config, Random(0))
    repaired, unrepairable = outcome.answered
    assert repaired.output == '"tides come from the moon."'
    assert repaired.meta[SAMPLING_KEY]["repaired"] == [LOWER.id, QUOTED.id]
    assert repaired.meta[SAMPLING_KEY]["passing"] == [] and repaired.meta[SAMPLING_KEY]["kept"] == 0
    assert unrepairable.output == "Waves are moved by the wind over the sea."
    assert "repaired" not in unrepairable.meta[SAMPLING_KEY]
    assert outcome.counters["sampling_repaired"] == 1 and outcome.counters["sampling_failed"] == 1
    assert outcome.counters["sampling_passed"] == 0 and outcome.rejections == []


@pytest.mark.parametrize(
    ("answers", "shortest"),
    [
        (
            [
                "tides rise and fall twice a day as the moon pulls the sea.",
                "Tides, Mostly.",
                "tides follow the moon.",
                ".",
            ],
            2,
        ),
        (["潮汐是月球引力造成的海面涨落现象。", "潮汐，月亮。", "潮汐随月亮涨落。", "。"], 2),
    ],
)
def test_pick_shortest_keeps_the_shortest_passing_answer_with_content(
    answers: list[str], shortest: int
) -> None:
    # The second fails no_comma; the last passes it but says nothing, and stats would drop it.
    choices = drawn(*answers)
    assert pick_sample(choices, [NO_COMMA], ResponderConfig())[0] == 0
    index, record, text = pick_sample(choices, [NO_COMMA], ResponderConfig(pick="shortest"))
    assert (index, text) == (shortest, answers[shortest])
    assert record["passing"] == [0, 2, 3] and record["kept"] == shortest
    assert record["pick"] == "shortest"


def test_pick_shortest_prefers_a_whole_answer_to_a_shorter_cut_one() -> None:
    keep_cut = ResponderConfig(pick="shortest", on_truncated="keep")
    # (English long enough for the language check: "tides" alone reads as Danish.)
    choices = [
        Choice("tides come from the moon and", "length"),
        *drawn("the moon pulls the tides."),
    ]
    assert pick_sample(choices, [LOWER], keep_cut)[0] == 1
    assert pick_sample(choices, [LOWER], ResponderConfig(on_truncated="keep"))[0] == 0


def test_pick_shortest_repairs_the_shortest_among_the_best() -> None:
    choices = drawn("Tides Come From The Moon Above Us.", "Tides, Mostly.", "The Tides Rise.")
    # All three fail lowercase; the first and third pass no comma: the third is shorter.
    index, record, text = pick_sample(
        choices, [LOWER, NO_COMMA], ResponderConfig(repair=True, pick="shortest")
    )
    assert (index, text, record["repaired"]) == (2, "the tides rise.", [LOWER.id])
    assert pick_sample(choices, [LOWER, NO_COMMA], REPAIR)[0] == 0
