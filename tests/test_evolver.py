"""Evolver: templates, parsers, each elimination rule, and end-to-end runs."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from random import Random

import pytest
from pydantic import ValidationError

from evoinstruct.agents.constraints import load_constraints
from evoinstruct.agents.constraints.phrasing import placed_from_meta, render_prompt
from evoinstruct.agents.evolver import (
    MARKERS,
    OPERATIONS,
    EvolverConfig,
    check_response,
    eliminate,
    evolve,
    parse_equality,
    parse_evolved,
    prompt_text,
)
from evoinstruct.models.base import Choice, Failure, Generation
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, ExampleDraft
from tests.doubles import ScriptedModel

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


def example(instruction: str, input: str = "", id: str = "p1", depth: int = 0) -> Example:
    return Example(
        id=id, instruction=instruction, input=input, output="An answer.", source="seed",
        status="accepted", language="en", depth=depth,
    )  # fmt: skip


# --- templates ---------------------------------------------------------------

OP_PHRASES = {
    "en": {
        "add_constraints": "one more constraint",
        "deepen": "widen and deepen",
        "concretize": "more specific ones",
        "increase_reasoning": "several explicit steps of reasoning",
        "complicate_input": "a table, JSON, code, an SQL schema",
        "in_breadth": "completely new prompt from the same field",
    },
    "zh": {
        "add_constraints": "约束或要求",
        "deepen": "扩大并加深提问",
        "concretize": "更具体的概念",
        "increase_reasoning": "多步推理",
        "complicate_input": "表格、JSON、代码、SQL",
        "in_breadth": "全新的提示",
    },
}


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("op", OPERATIONS)
def test_render_operation(language: str, op: str) -> None:
    markers = MARKERS[language]
    output_marker = markers["created" if op == "in_breadth" else "rewritten"]
    text = PromptLibrary(language).render(
        f"evol_{op}", instruction="Explain recursion.\n\n| a | b |", min_words=10, max_words=20,
        given_marker=markers["given"], output_marker=output_marker,
    )  # fmt: skip
    assert OP_PHRASES[language][op] in text
    assert f"{markers['given']}\nExplain recursion.\n\n| a | b |\n\n{output_marker}" in text
    assert text.endswith(output_marker)
    if op != "in_breadth":
        assert "10" in text and "20" in text
    raw = (PROMPTS_DIR / language / f"evol_{op}.jinja2").read_text(encoding="utf-8")
    assert raw.startswith("{# variables:")


@pytest.mark.parametrize(
    ("language", "answer"), [("en", '"Equal" or "Not Equal"'), ("zh", "“相同”或“不同”")]
)
def test_render_equality(language: str, answer: str) -> None:
    text = PromptLibrary(language).render(
        "evol_equality", first="Sort a list.", second="排序一个列表。"
    )
    assert "Sort a list." in text and "排序一个列表。" in text and answer in text
    assert text.index("Sort a list.") < text.index("排序一个列表。")


def test_operations_are_validated() -> None:
    with pytest.raises(ValidationError):
        EvolverConfig(operations=[])
    with pytest.raises(ValidationError):
        EvolverConfig(operations=["add_constraints", "summarize"])
    assert EvolverConfig(operations=["deepen", "deepen"]).operations == ["deepen"]


# --- parsers -------------------------------------------------------------------

EVOLVED_CASES = [
    ("clean", "Explain recursion using two examples.", "stop", "Explain recursion using two examples.", None),
    ("label echo", "#Rewritten Prompt#: Explain recursion in Python.", "stop", "Explain recursion in Python.", None),
    ("bold label", "**#Created Prompt#**\nDescribe tail calls.", "stop", "Describe tail calls.", None),
    ("zh label", "#改写后的提示#：用两个例子解释递归。", "stop", "用两个例子解释递归。", None),
    ("truncated", "Explain recursion using", "length", None, "truncated"),
    ("empty", "   ", "stop", None, "empty"),
    ("label only", "#Rewritten Prompt#:", "stop", None, "empty"),
    ("noisy whitespace", "\n\n  Explain recursion.  \n", "stop", "Explain recursion.", None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "finish", "expected", "reason"), EVOLVED_CASES)
def test_parse_evolved(name, text, finish, expected, reason) -> None:
    assert parse_evolved(text, finish) == (expected, reason), name


EQUALITY_CASES = [
    ("Equal", True), ("Not Equal", False), ("not equal.", False), ("EQUAL\nbecause ...", True),
    ("Judgement: Not Equal", False), ("They are not the same.", False), ("The two are equal.", True),
    ("相同", True), ("不同", False), ("不相同", False), ("两者并不完全相同。", False), ("一样", True),
    ("", None), ("I am unsure.", None), ("Unequal", False), ("Not Eq", None), ("The second adds an equality test.", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), EQUALITY_CASES)
def test_parse_equality(text: str, expected: bool | None) -> None:
    assert parse_equality(text) is expected


# --- elimination rules 2 and 3 ---------------------------------------------------

RESPONSE_CASES = [
    ("sorry short", "Sorry, I cannot help with that request.", "sorry"),
    ("sorry long passes", "Sorry for the long answer. " + "Recursion calls itself. " * 30, None),
    ("sorry inside word", "The sorrymaker band plays tonight in the old hall.", None),
    ("zh sorry", "抱歉，我无法回答这个问题。", "sorry"),
    ("zh duibuqi", "对不起，这个我做不到。", "sorry"),
    ("zh sorry long passes", "抱歉回答得比较长。" + "递归就是函数调用自身。" * 10, None),
    ("stopwords", "... the, and it is!", "stopwords_only"),
    ("only punctuation", "?!。……", "stopwords_only"),
    ("empty", "", "stopwords_only"),
    ("zh stopwords", "好的。这个吗？", "stopwords_only"),
    ("zh content", "递归是函数调用自身。", None),
    ("content", "Recursion is a function calling itself.", None),
    ("no response", None, "no_response"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "output", "reason"), RESPONSE_CASES)
def test_check_response(name: str, output: str | None, reason: str | None) -> None:
    failed = check_response(output, EvolverConfig())
    assert (failed[0] if failed else None) == reason, name


def test_sorry_threshold_is_configurable() -> None:
    text = "Sorry, " + "word " * 30
    assert check_response(text, EvolverConfig())[0] == "sorry"
    assert check_response(text, EvolverConfig(sorry_max_words=10)) is None


# --- evolve end to end -----------------------------------------------------------


async def test_evolve_end_to_end() -> None:
    parents = [
        example(f"Explain topic number {i} to a child.", id=f"p{i}", depth=i % 2) for i in range(6)
    ]
    parents[0].input = "Topic: gravity"
    before = copy.deepcopy(parents)
    replies = [
        "#Rewritten Prompt#: Explain gravity to a child using one everyday example.",
        "Rewrite the given prompt so that it is harder.",  # rule 4
        Failure("timeout", "read timed out"),
        Generation(choices=[Choice("Explain topic number 3 to a child in", "length")]),
        "Explain topic number 4 to a child.",  # identical to the parent
        "",
    ]
    model = ScriptedModel(replies, model_id="teacher")
    outcome = await evolve(parents, model, PromptLibrary("en"), EvolverConfig(), Random(7))
    assert model.batches == [6]
    assert parents == before  # parents stay unchanged
    assert len(outcome.drafts) == 1
    child = outcome.drafts[0]
    assert child.instruction == "Explain gravity to a child using one everyday example."
    assert (child.parent_id, child.depth, child.source, child.output) == ("p0", 1, "evolved", None)
    assert child.operation in OPERATIONS and child.template == f"en/evol_{child.operation}.jinja2"
    assert child.model_version == "teacher" and child.language == "en"
    assert outcome.reasons() == Counter(
        {
            "copied_prompt_words": 1,
            "model_failure:timeout": 1,
            "truncated": 1,
            "no_information_gain": 1,
            "empty": 1,
        }
    )
    assert all(r.stage == "evolve" and r.example_id for r in outcome.rejections)
    assert outcome.calls == 6 and outcome.failures == {"timeout": 1}
    assert "Topic: gravity" in model.calls[0].messages[0]["content"]
    assert (model.calls[0].temperature, model.calls[0].top_p) == (1.0, 0.95)


async def test_operations_are_drawn_uniformly_with_the_rng() -> None:
    parents = [example("Explain how a bicycle stays upright.", id=f"p{i}") for i in range(600)]
    model = ScriptedModel(default="Explain, with forces, how a moving bicycle stays upright.")
    outcome = await evolve(parents, model, PromptLibrary("en"), EvolverConfig(), Random(3))
    assert set(outcome.operations) == set(OPERATIONS)
    assert all(70 <= n <= 130 for n in outcome.operations.values())
    rng = Random(3)
    assert [d.operation for d in outcome.drafts[:20]] == [rng.choice(OPERATIONS) for _ in range(20)]
    breadth = [
        c for c, d in zip(model.calls, outcome.drafts, strict=True) if d.operation == "in_breadth"
    ]
    assert "#Created Prompt#" in breadth[0].messages[0]["content"]


async def test_evolve_in_chinese_uses_chinese_markers() -> None:
    model = ScriptedModel(default="#改写后的提示#：请用三个生活中的例子解释重力，并说明原因。")
    config = EvolverConfig(operations=["add_constraints"])
    parent = example("请解释重力。")
    outcome = await evolve([parent], model, PromptLibrary("zh"), config, Random(0))
    [child] = outcome.drafts
    # The model's rewrite, with the sentences of the registry constraints placed around it
    # in Chinese phrasings.
    rewrite = "请用三个生活中的例子解释重力，并说明原因。"
    constraints = load_constraints(child.meta["constraints"])
    placed = placed_from_meta(constraints, child.meta["constraint_layout"])
    assert child.instruction == render_prompt(rewrite, placed, "zh")
    assert child.language == "zh" and {p.phrasing.language for p in placed} == {"zh"}
    plain = EvolverConfig(operations=["add_constraints"], verifiable={"enabled": False})
    outcome = await evolve([parent], model, PromptLibrary("zh"), plain, Random(0))
    assert [(d.instruction, d.meta) for d in outcome.drafts] == [(rewrite, {})]
    assert "#给定提示#\n请解释重力。" in model.calls[0].messages[0]["content"]
    copied = ScriptedModel(default="请改写给定提示，使它更难。")
    outcome = await evolve([parent], copied, PromptLibrary("zh"), config, Random(0))
    assert outcome.drafts == [] and list(outcome.reasons()) == ["copied_prompt_words"]


# --- eliminate end to end --------------------------------------------------------


def child_of(parent: Example, instruction: str, output: str | None) -> ExampleDraft:
    return ExampleDraft(
        instruction,
        output=output,
        source="evolved",
        parent_id=parent.id,
        operation="deepen",
        depth=1,
    )


async def test_eliminate_applies_each_rule() -> None:
    parent = example("Explain recursion.")
    pairs = [
        (
            parent,
            child_of(
                parent,
                "Explain recursion with two code examples.",
                "Recursion is when a function calls itself.",
            ),
        ),
        (
            parent,
            child_of(
                parent,
                "Explain recursion in more words.",
                "Recursion means self-reference in functions.",
            ),
        ),
        (
            parent,
            child_of(parent, "Explain recursion for a 2-year-old.", "Sorry, I can't do that."),
        ),
        (parent, child_of(parent, "Explain recursion with a the and.", "the, and.")),
        (
            parent,
            child_of(
                parent, "The rewritten prompt asks for recursion.", "Recursion is self-reference."
            ),
        ),
        (parent, child_of(parent, "Explain recursion in Lisp.", None)),
        (parent, child_of(parent, "Explain recursion in Haskell.", "Functions call themselves.")),
        (parent, child_of(parent, "Explain recursion in C.", "Functions call themselves.")),
    ]
    # Only the four that pass the cheap rules reach the equality check, in order.
    model = ScriptedModel(["Not Equal", "Equal", "maybe", Failure("server", "500")])
    outcome = await eliminate(pairs, model, PromptLibrary("en"), EvolverConfig())
    assert model.batches == [4]
    assert [c.instruction for c in outcome.kept] == ["Explain recursion with two code examples."]
    assert outcome.kept[0].meta["equality"] == "not_equal"
    assert outcome.reasons() == Counter(
        {"no_information_gain": 1, "sorry": 1, "stopwords_only": 1, "copied_prompt_words": 1,
         "no_response": 1, "equality_unparseable": 1}
    )  # fmt: skip
    # A failed check call is no verdict: neither kept nor rejected, but handed back.
    assert [c.instruction for c in outcome.failed] == ["Explain recursion in C."]
    assert outcome.calls == 4 and outcome.failures == {"server": 1}
    sent = model.calls[0].messages[0]["content"]
    assert "Explain recursion." in sent and "Explain recursion with two code examples." in sent
    assert model.calls[0].temperature == 0.0


async def test_eliminate_in_chinese_and_keeps_stored_children() -> None:
    parent = example("解释递归。")
    good = Example(
        **{
            **example("用两个代码例子解释递归。", id="c1").__dict__,
            "output": "递归是函数调用自身。",
        }
    )
    sorry = Example(
        **{**example("用诗解释递归。", id="c2").__dict__, "output": "抱歉，我不会写诗。"}
    )
    model = ScriptedModel(["不同"])
    outcome = await eliminate(
        [(parent, good), (parent, sorry)], model, PromptLibrary("zh"), EvolverConfig()
    )
    assert [c.id for c in outcome.kept] == ["c1"] and isinstance(outcome.kept[0], Example)
    assert [(r.reason, r.example_id) for r in outcome.rejections] == [("sorry", "c2")]
    assert "只回答“相同”或“不同”" in model.calls[0].messages[0]["content"]


async def test_eliminate_without_equality_check_makes_no_call() -> None:
    parent = example("Explain recursion.")
    pairs = [(parent, child_of(parent, "Explain recursion twice.", "It calls itself."))]
    model = ScriptedModel()
    outcome = await eliminate(
        pairs, model, PromptLibrary("en"), EvolverConfig(equality_check=False)
    )
    assert len(outcome.kept) == 1 and model.calls == []


def test_prompt_text_appends_input() -> None:
    assert prompt_text(example("Sum it.", input="1, 2")) == "Sum it.\n\n1, 2"
    assert prompt_text(example("Sum it.")) == "Sum it."
