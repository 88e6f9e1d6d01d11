"""ReAlign rewriter: task types data, templates, parsers, each keep rule, the agent end to end."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from evoinstruct.agents.rewriter import (
    LABELS,
    RewriterConfig,
    answer_present,
    check_rewrite,
    final_answer,
    has_code,
    load_task_types,
    parse_rewrite,
    parse_task_type,
    rewrite_examples,
)
from evoinstruct.models.base import Choice, Failure, Generation
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.errors import ConfigError
from tests.conftest_critic import make_example, user_text
from tests.doubles import ScriptedModel

EN, ZH = PromptLibrary("en"), PromptLibrary("zh")
REQUIRED = [
    "math", "coding", "brainstorming", "open_qa", "closed_qa", "classification",
    "summarization", "rewriting", "translation", "creative_writing", "default",
]  # fmt: skip
RNG = random.Random(0)


# --- task types data ------------------------------------------------------------------------


@pytest.mark.parametrize("library", [EN, ZH])
def test_task_types_file_has_every_required_type(library: PromptLibrary) -> None:
    types = load_task_types(library)
    assert set(REQUIRED) <= set(types)
    assert types["math"].rewrite and types["coding"].rewrite and not types["default"].rewrite
    raw = library.load_data("task_types")
    for name in REQUIRED:
        assert isinstance(raw[name]["rewrite"], bool)
        assert raw[name]["criteria"]["en"].strip() and raw[name]["criteria"]["zh"].strip()


def test_project_file_extends_and_overrides_task_types(tmp_path: Path) -> None:
    (tmp_path / "task_types.toml").write_text(
        '[legal]\nrewrite = true\naliases = ["法律"]\n'
        'description.en = "legal questions"\ndescription.zh = "法律问题"\n'
        'criteria.en = "Cite the statute first."\ncriteria.zh = "先引用法条。"\n'
        "[translation]\nrewrite = true\n",
        encoding="utf-8",
    )
    types = load_task_types(PromptLibrary("zh", override_dir=tmp_path))
    assert types["legal"].criteria == "先引用法条。"
    assert types["translation"].rewrite is True
    assert types["translation"].criteria.startswith("- 直接输出译文")
    assert parse_task_type("法律", types) == "legal"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('[math]\nrewrite = "yes"\n', None),
        (
            '[odd]\nrewrite = true\ndescription.en = "x"\ndescription.zh = "x"\ncriteria.en = "c"\n',
            "criteria.zh",
        ),
    ],
)
def test_malformed_task_types_raise_config_error(tmp_path: Path, content: str, field) -> None:
    (tmp_path / "task_types.toml").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_task_types(PromptLibrary("zh", override_dir=tmp_path))
    assert info.value.field == field


# --- templates ------------------------------------------------------------------------------


@pytest.mark.parametrize(("library", "needle"), [(EN, "exactly as written"), (ZH, "英文名称")])
def test_classify_template_golden(library: PromptLibrary, needle: str) -> None:
    types = load_task_types(library)
    listing = [{"name": t.name, "description": t.description} for t in types.values()]
    text = library.render(
        "classify_task",
        instruction="Solve 2x = 6.",
        input="",
        task_types=listing,
        default_type="default",
    )
    assert needle in text and "Solve 2x = 6." in text
    for name in REQUIRED:
        assert f"- {name}" in text
    assert types["math"].description in text


@pytest.mark.parametrize("language", ["en", "zh"])
def test_realign_template_golden(language: str) -> None:
    library = PromptLibrary(language)
    reasoning, response = LABELS[language]
    common = dict(
        instruction="How many legs do 3 cats have?",
        input="",
        response="12",
        task_type="math",
        criteria="CRITERIA-TEXT",
        reasoning_label=reasoning,
        response_label=response,
    )
    text = library.render("realign_rewrite", evidence="", **common)
    for needle in ("How many legs", "12", "math", "CRITERIA-TEXT", reasoning, response):
        assert needle in text
    assert "EVIDENCE" not in text
    with_evidence = library.render("realign_rewrite", evidence="EVIDENCE-TEXT", **common)
    assert "EVIDENCE-TEXT" in with_evidence


# --- parsers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("math", "math"),
        ("Math.", "math"),
        ("**coding**", "coding"),
        ("open qa", "open_qa"),
        ("Task type: closed_qa", "closed_qa"),
        ("creative-writing\nbecause it asks for a poem", "creative_writing"),
        ("数学", "math"),
        ("这是翻译任务", "translation"),
        ("I think this is brainstorming, not coding", "brainstorming"),
        ("", "default"),
        ("something else entirely", "default"),
        ("mathematical_proof_typ", "default"),
        ("decode", "default"),
    ],
)
def test_parse_task_type_table(text: str, expected: str) -> None:
    assert parse_task_type(text, load_task_types(EN)) == expected


@pytest.mark.parametrize(
    ("text", "truncated", "response", "error"),
    [
        (
            "Reasoning: add steps.\nRevised response:\nStep 1: 3 × 4 = 12.",
            False,
            "Step 1: 3 × 4 = 12.",
            None,
        ),
        ("推理：分步写。\n修改后的回答：\n第一步：3×4=12。", False, "第一步：3×4=12。", None),
        ("**Reasoning:** tidy.\n**Revised response:**\nTidy text.", False, "Tidy text.", None),
        ("Sure! Here it is.\nReasoning: x\nRevised Response: y", False, "y", None),
        ("修改后的回答: 只有回答", False, "只有回答", None),
        ("Reasoning: x\nRevised response: cut off in the mid", True, "", "truncated"),
        ("", False, "", "unparseable"),
        ("Here is a better answer: 12", False, "", "unparseable"),
        ("Reasoning: x\nRevised response:   \n", False, "", "unparseable"),
    ],
)
def test_parse_rewrite_table(text: str, truncated: bool, response: str, error) -> None:
    parsed = parse_rewrite(text, truncated=truncated)
    assert (parsed.response, parsed.error) == (response, error)


def test_parse_rewrite_reasoning() -> None:
    assert parse_rewrite("Reasoning: add steps.\nRevised response: ok").reasoning == "add steps."


# --- keep rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```python\nprint(1)\n```", True),
        ("Run this:\n\n    print(1)\n", True),
        ("\tx = 1", True),
        ("Steps:\n\n    - first\n    - second", False),
        ("A plain answer.\n    continued line", False),
        ("没有代码的回答。", False),
    ],
)
def test_has_code(text: str, expected: bool) -> None:
    assert has_code(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Natalia sold 48 clips in April and half as many in May.\n#### 72", "72"),
        ("So the result is \\boxed{42}.", "42"),
        ("We add them up, and the answer is 1,200 apples in total.", "1,200"),
        ("一共有3只猫，每只4条腿，所以答案是12。", "12"),
        ("The answer is Paris, the capital and largest city of France.", "Paris"),
        ("答案是北京，因为中央政府设在那里，而且历史上长期是都城。", "北京"),
        ("After dividing 7 by 2 we get the final answer: 3.5.", "3.5"),
        ("The mp3 player holds 200 songs and costs 30 dollars in the shop.", "30"),
        ("Paris", "Paris"),
        ("北京。", "北京"),
        ("First we multiply 3 by 4.\nSo she has 12 legs to count.", "12"),
        ("1. Walk more.\n2. Drink water.\n3. Sleep well and rest.", None),
        ("Photosynthesis turns light into chemical energy in the leaves of green plants.", None),
    ],
)
def test_final_answer(text: str, expected: str | None) -> None:
    assert final_answer(text, short_max_words=10) == expected


def test_answer_present() -> None:
    assert answer_present("1,200", "In total there are 1200 apples.")
    assert answer_present("12", "答案是 12.0。")
    assert not answer_present("12", "There are 120 legs.")
    assert answer_present("Paris", "The capital is **paris**.")
    assert not answer_present("北京", "首都是上海。")


ORIGINAL_MATH = "Each cat has 4 legs and there are 3 cats, so 3 times 4 gives 12 legs."
ORIGINAL_MATH_ZH = "每只猫有4条腿，一共3只猫，3乘4得12，所以一共12条腿。"


@pytest.mark.parametrize(
    ("original", "rewrite", "reason"),
    [
        (ORIGINAL_MATH, "Step 1: 3 cats.\nStep 2: 4 legs each.\nThe answer is 12.", None),
        (ORIGINAL_MATH_ZH, "第一步：3只猫。\n第二步：每只4条腿。\n答案是12。", None),
        (ORIGINAL_MATH, "12.", "too_short"),
        (ORIGINAL_MATH_ZH, "答案是12。", "too_short"),
        (ORIGINAL_MATH, "Step 1: 3 cats.\nStep 2: 4 legs each.\nThe answer is 14.", "answer_lost"),
        (ORIGINAL_MATH_ZH, "第一步：3只猫。\n第二步：每只4条腿。\n答案是十二。", "answer_lost"),
        (
            "Use:\n```python\nprint(sum([1, 2]))\n```\nIt prints 3.",
            "Use the built-in sum on the list and print it; it prints 3.",
            "code_changed",
        ),
        (
            "把两个数相加然后打印出结果就可以了，结果是3。",
            "```python\nprint(1 + 2)\n```\n把两个数相加然后打印出结果就可以了，结果是3。",
            "code_changed",
        ),
    ],
)
def test_check_rewrite_rules(original: str, rewrite: str, reason: str | None) -> None:
    broken = check_rewrite(original, rewrite, RewriterConfig())
    assert (broken[0] if broken else None) == reason


def test_check_rewrite_rules_can_be_switched_off() -> None:
    config = RewriterConfig(check_answer=False, check_code=False, min_length_ratio=0.0)
    assert check_rewrite(ORIGINAL_MATH, "14", config) is None


# --- the agent end to end -------------------------------------------------------------------

GOOD_MATH = "Reasoning: numbered steps.\nRevised response:\nStep 1: 3 cats with 4 legs each.\nStep 2: 3 × 4 = 12.\nThe answer is 12."


def _scripted(types: dict[str, str], rewrites: dict[str, object]):
    """Answer the classifier by instruction keyword and the rewriter per instruction keyword."""

    def reply(request):
        text = user_text(request)
        table = rewrites if ("Revised response:" in text or "修改后的回答：" in text) else types
        return next(v for k, v in table.items() if k in text)

    return ScriptedModel(default=reply, model_id="teacher-7b")


async def test_rewrite_examples_end_to_end() -> None:
    batch = [
        make_example("m1", "How many legs do 3 cats have?", ORIGINAL_MATH, language="en"),
        make_example("m2", "三只猫一共有几条腿？", ORIGINAL_MATH_ZH, language="zh"),
        make_example(
            "c1",
            "Print the sum of 1 and 2 in Python.",
            "Use:\n```python\nprint(sum([1, 2]))\n```\nIt prints 3.",
        ),
        make_example("t1", "Translate 'cat' into French.", "chat"),
        make_example("q1", "Why is the sky blue?", "Because of Rayleigh scattering of sunlight."),
        make_example("u1", "Do the thing.", "Done, the thing is now complete and verified."),
        make_example("n1", "No answer yet.", None),
    ]
    types = {
        "3 cats": "math",
        "三只猫": "数学",
        "Python": "coding",
        "Translate": "translation",
        "sky": "open_qa",
        "Do the thing": "no idea",
    }
    rewrites = {
        "3 cats": GOOD_MATH,
        "三只猫": "推理：分步。\n修改后的回答：\n第一步：3只猫。\n第二步：每只4条腿。\n答案是十二条腿。",
        "Python": "Reasoning: prose.\nRevised response: Call sum on [1, 2] and print it; it prints 3.",
        "sky": Generation(
            [Choice("Reasoning: x\nRevised response: Sunlight scatters off", "length")]
        ),
    }
    model = _scripted(types, rewrites)
    outcome = await rewrite_examples(batch, model, EN, RewriterConfig(), RNG)

    assert model.batches == [6, 4]  # one classify batch, one rewrite batch
    assert all(r.temperature == 0.3 for r in model.calls[6:])
    assert outcome.task_types == {
        "m1": "math",
        "m2": "math",
        "c1": "coding",
        "t1": "translation",
        "q1": "open_qa",
        "u1": "default",
    }
    assert outcome.skipped == ["n1"]
    [draft] = outcome.drafts
    assert (draft.source, draft.parent_id, draft.operation) == ("rewritten", "m1", "realign:math")
    assert draft.output.endswith("The answer is 12.")
    assert draft.template == "en/realign_rewrite.jinja2" and draft.model_version == "teacher-7b"
    assert draft.instruction == batch[0].instruction and draft.language == "en"
    assert draft.meta["realign"] == {"task_type": "math", "reasoning": "numbered steps."}
    assert draft.meta["origin"] == "test"
    reasons = {r.example_id: r.reason for r in outcome.rejections}
    assert reasons == {"m2": "answer_lost", "c1": "code_changed", "q1": "truncated"}
    assert all(r.stage == "rewrite" and r.raw_output for r in outcome.rejections)
    assert outcome.rejections[0].evidence["task_type"] == "math"
    assert outcome.counters["not_rewritten"] == 2 and outcome.counters["rewritten"] == 1


async def test_zh_prompts_and_second_sample() -> None:
    batch = [make_example("m2", "三只猫一共有几条腿？", ORIGINAL_MATH_ZH)]
    two = Generation(
        [
            Choice("推理：太短。\n修改后的回答：12。", "stop"),
            Choice(
                "推理：分步。\n修改后的回答：\n第一步：3只猫，每只4条腿。\n第二步：3×4=12。\n答案是12。",
                "stop",
            ),
        ]
    )
    model = _scripted({"三只猫": "math"}, {"三只猫": two})
    outcome = await rewrite_examples(batch, model, ZH, RewriterConfig(samples=2), RNG)
    assert model.calls[1].n == 2 and "修改后的回答：" in user_text(model.calls[1])
    assert "每个事实" in user_text(model.calls[1])  # the Chinese template
    assert outcome.drafts[0].output.endswith("答案是12。")
    assert outcome.drafts[0].template == "zh/realign_rewrite.jinja2"


async def test_failures_and_unparseable_keep_the_original() -> None:
    batch = [
        make_example("a", "How many legs do 3 cats have?", ORIGINAL_MATH),
        make_example("b", "Brainstorm 3 names for a cat.", "Tom, Luna and Milo are good names."),
    ]
    model = ScriptedModel(
        [Failure("timeout", "slow"), "brainstorming", "Here are better names: Tom"]
    )
    outcome = await rewrite_examples(batch, model, EN, RewriterConfig(), RNG)
    assert outcome.drafts == []
    assert [(r.example_id, r.reason) for r in outcome.rejections] == [
        ("a", "model_failure:timeout"),
        ("b", "unparseable"),
    ]
    assert outcome.rejections[1].raw_output == "Here are better names: Tom"


async def test_evidence_hook_is_off_without_a_hook_and_used_with_one() -> None:
    batch = [
        make_example("q1", "Why is the sky blue?", "Because of Rayleigh scattering of sunlight."),
        make_example("m1", "How many legs do 3 cats have?", ORIGINAL_MATH),
    ]
    types = {"sky": "open_qa", "3 cats": "math"}
    answer = "Reasoning: x\nRevised response: Because of Rayleigh scattering of sunlight by air."
    seen: list[tuple[str, str]] = []

    async def hook(example, task_type: str) -> str:
        seen.append((example.id, task_type))
        return "EVIDENCE: short wavelengths scatter more."

    model = _scripted(types, {"sky": answer, "3 cats": GOOD_MATH})
    await rewrite_examples(batch, model, EN, RewriterConfig(), RNG)
    assert all("EVIDENCE" not in user_text(c) for c in model.calls)

    model = _scripted(types, {"sky": answer, "3 cats": GOOD_MATH})
    config = RewriterConfig()
    outcome = await rewrite_examples(batch, model, EN, config, RNG, evidence_hook=hook)
    assert seen == [("q1", "open_qa")]  # only the evidence types ask the hook
    rewrite_prompts = [user_text(c) for c in model.calls[2:]]
    assert sum("EVIDENCE: short wavelengths" in p for p in rewrite_prompts) == 1
    assert len(outcome.drafts) == 2

    def broken(example, task_type):
        raise RuntimeError("index offline")

    model = _scripted(types, {"sky": answer, "3 cats": GOOD_MATH})
    outcome = await rewrite_examples(batch, model, EN, config, RNG, evidence_hook=broken)
    assert outcome.counters["evidence_failed"] == 1 and len(outcome.drafts) == 2
