"""Generator: templates, the task/instance parsers, every filter, and end-to-end runs."""

from __future__ import annotations

from pathlib import Path
from random import Random

import pytest

from evoinstruct.agents.generator import (
    GenerateOutcome,
    GeneratorConfig,
    Instance,
    check_instruction,
    filter_instances,
    generate,
    generate_instances,
    numbering,
    parse_instances,
    parse_tasks,
    parse_yes_no,
)
from evoinstruct.models.base import Choice, Failure, Generation
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, ExampleDraft
from evoinstruct.text.rules import count_words
from tests.doubles import ScriptedModel

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
TEMPLATES = [
    "generate_self_instruct",
    "generate_alpaca",
    "is_classification",
    "instances_input_first",
    "instances_output_first",
]


def example(
    instruction: str, input: str = "", output: str | None = None, id: str = "e1"
) -> Example:
    return Example(
        id=id, instruction=instruction, input=input, output=output, source="seed",
        status="accepted", language="en",
    )  # fmt: skip


def truncated(text: str) -> Generation:
    return Generation(choices=[Choice(text, "length")])


# --- templates ---------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_has_header_comment(language: str, name: str) -> None:
    text = (PROMPTS_DIR / language / f"{name}.jinja2").read_text(encoding="utf-8")
    assert text.startswith("{# variables:") and "| output:" in text.splitlines()[0]


@pytest.mark.parametrize(
    ("language", "phrases"),
    [
        ("en", ["Write 8 new tasks", "Number them 1 to 8, one task per line"]),
        ("zh", ["请写出 8 个你自己的新任务", "编号从 1 到 8，每行一个任务"]),
    ],
)
def test_render_self_instruct(language: str, phrases: list[str]) -> None:
    """The demos are a bulleted list; the new tasks are asked for as a list of their own."""
    text = PromptLibrary(language).render(
        "generate_self_instruct", demos=["Tell a joke.", "写一首诗。", "Sort 3 numbers."],
        first_index=1, last_index=8,
    )  # fmt: skip
    for phrase in phrases:
        assert phrase in text
    assert "- Tell a joke.\n- 写一首诗。\n- Sort 3 numbers." in text
    assert "{#" not in text


@pytest.mark.parametrize(
    ("language", "labels", "no_input"),
    [
        ("en", ("Instruction: ", "Input:", "Output:"), "<noinput>"),
        ("zh", ("指令：", "输入：", "输出："), "<无输入>"),
    ],
)
def test_render_alpaca(language: str, labels: tuple[str, str, str], no_input: str) -> None:
    demos = [{"instruction": "Add the numbers.", "input": "2, 3", "output": "5"}]
    text = PromptLibrary(language).render(
        "generate_alpaca", demos=demos, first_index=2, last_index=21, no_input=no_input
    )
    assert (
        f"###\n1. {labels[0]}Add the numbers.\n1. {labels[1]}\n2, 3\n1. {labels[2]}\n5\n###" in text
    )
    assert ("2 到 21" if language == "zh" else "numbered 2 to 21") in text
    assert no_input in text
    assert text.endswith(f"2. {labels[0]}".strip())


@pytest.mark.parametrize(("language", "answer"), [("en", '"Yes" or "No"'), ("zh", "“是”或“否”")])
def test_render_is_classification(language: str, answer: str) -> None:
    text = PromptLibrary(language).render("is_classification", instruction="Is this spam?")
    assert "Is this spam?" in text and answer in text


@pytest.mark.parametrize(
    ("language", "label", "none", "fields"),
    [
        ("en", "Example", "None", ("Input:", "Output:", "Class label:")),
        ("zh", "示例", "无", ("输入：", "输出：", "类别标签：")),
    ],
)
def test_render_instance_templates(
    language: str, label: str, none: str, fields: tuple[str, ...]
) -> None:
    lib = PromptLibrary(language)
    variables = {
        "instruction": "Classify the review.",
        "max_examples": 5,
        "example_label": label,
        "none_marker": none,
    }
    first = lib.render("instances_input_first", **variables)
    assert f"{label} 1\n{fields[0]}" in first and fields[1] in first and "5" in first
    assert first.endswith("Task: Classify the review.") or first.endswith(
        "任务：Classify the review."
    )
    assert f"“{none}”" in first or f'"{none}"' in first
    second = lib.render("instances_output_first", **variables)
    assert f"{label} 1\n{fields[2]}" in second and fields[0] in second and fields[1] not in second


def test_count_and_stop_marker_come_from_one_value() -> None:
    config = GeneratorConfig(mode="alpaca", tasks_per_call=7)
    first, last, stops = numbering(3, config.call_size())
    assert (first, last) == (4, 10) and "\n11." in stops
    text = PromptLibrary("en").render(
        "generate_alpaca", demos=[], first_index=first, last_index=last, no_input="<noinput>"
    )
    assert "numbered 4 to 10" in text


# --- parse_tasks ---------------------------------------------------------------

SELF_INSTRUCT_CASES = [
    # (name, text, finish_reason, expected instructions, expected rejection reasons)
    ("clean", "9. Name three rivers in Asia.\n10. Explain how tides work.", "stop",
     ["Name three rivers in Asia.", "Explain how tides work."], []),
    ("continues after cue", "Name three rivers in Asia.\n10. Explain how tides work.", "stop",
     ["Name three rivers in Asia.", "Explain how tides work."], []),
    ("preamble", "Sure! Here are more tasks:\n9. Name three rivers.\n10) Explain tides.", "stop",
     ["Name three rivers.", "Explain tides."], ["preamble"]),
    ("chinese numbering", "9、列出三条亚洲的河流。\n任务10：解释潮汐是怎么形成的。", "stop",
     ["列出三条亚洲的河流。", "解释潮汐是怎么形成的。"], []),
    ("decimal is not numbering", "9. Is 3.5 greater than\n3.14 or not?", "stop",
     ["Is 3.5 greater than 3.14 or not?"], []),
    ("truncated", "9. Name three rivers.\n10. Explain how ti", "length", ["Name three rivers."], ["truncated"]),
    ("over count", "9. A a a a.\n10. B b b b.\n11. C c c c.", "stop", ["A a a a.", "B b b b."], ["over_count"]),
    ("empty", "", "stop", [], []),
    ("empty truncated", "", "length", [], []),
    ("empty item", "9.\n10. Explain tides.", "stop", ["Explain tides."], ["malformed"]),
    ("wrong format prose", "I cannot think of\nmore tasks", "stop", ["I cannot think of more tasks"], []),
    ("markdown bold", "**9.** Name three rivers.", "stop", ["Name three rivers."], []),
    # A chat model's closing remark after a blank line is no part of the last task, and a
    # cut inside it leaves that task whole.
    ("aside", "9. Name three rivers.\n\nI hope these help!", "stop", ["Name three rivers."], ["aside"]),
    ("cut in the aside", "9. Name three rivers.\n10. Explain tides.\n\nThese tasks are", "length",
     ["Name three rivers.", "Explain tides."], ["aside"]),
    # Bullets under a task are content for it, not its next line; markers stacked after the
    # item's number are no part of it.
    ("bullets under a task", "9. How to care for a houseplant\n- To create a new task: water it.\n- Here is",
     "stop", ["How to care for a houseplant"], ["aside"]),
    ("stacked markers", "9. 9. 9. - A snail climbs 3 feet a day. How many days to climb 5?\n10. 10. Explain tides.",
     "stop", ["A snail climbs 3 feet a day. How many days to climb 5?", "Explain tides."], []),
    ("second preamble", "9. A a a a.\n\nHere are more:\n10. B b b b.", "stop", ["A a a a.", "B b b b."], ["aside"]),
    # Copies of a demo and repeats take no place among the tasks kept.
    ("echoed demo", "1. Write a haiku about rain.\n2. Name three rivers.\n3. Explain tides.\n4. C c c c.", "stop",
     ["Name three rivers.", "Explain tides."], ["echoed_demo", "over_count"]),
    ("repeated", "9. Name three rivers.\n10. name three  rivers.\n11. Explain tides.", "stop",
     ["Name three rivers.", "Explain tides."], ["repeated"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "finish", "tasks", "reasons"), SELF_INSTRUCT_CASES)
def test_parse_self_instruct(name, text, finish, tasks, reasons) -> None:
    parsed, rejections = parse_tasks(
        text,
        finish,
        mode="self_instruct",
        first_index=9,
        count=2,
        demos=["Write a haiku about rain."],
    )
    assert [t.instruction for t in parsed] == tasks, name
    assert [r.reason for r in rejections] == reasons, name
    assert all(t.output is None for t in parsed)


ALPACA_EN = """###
4. Instruction: Add the two numbers.
4. Input:
2 and 3
4. Output:
5
###
5. Instruction: Write a haiku about rain.
5. Input:
<noinput>
5. Output:
Soft rain on the roof
"""
ALPACA_ZH = "4. 指令：把下面的句子翻译成英文。\n4. 输入：\n我喜欢读书。\n4. 输出：\nI like reading books.\n###\n5. 指令：写一句关于春天的话。\n5. 输入：\n<无输入>\n5. 输出：\n春天来了。"
ALPACA_CASES = [
    ("clean en", ALPACA_EN, "stop", [("Add the two numbers.", "2 and 3", "5"),
     ("Write a haiku about rain.", "", "Soft rain on the roof")], []),
    ("clean zh", ALPACA_ZH, "stop", [("把下面的句子翻译成英文。", "我喜欢读书。", "I like reading books."),
     ("写一句关于春天的话。", "", "春天来了。")], []),
    ("continues after cue", " Add the numbers.\n4. Input:\n1, 2\n4. Output:\n3", "stop",
     [("Add the numbers.", "1, 2", "3")], []),
    ("truncated", ALPACA_EN[:-8], "length", [("Add the two numbers.", "2 and 3", "5")], ["truncated"]),
    ("missing output", "4. Instruction: Add numbers.\n4. Input:\n1, 2\n", "stop", [], ["malformed"]),
    ("empty", "", "stop", [], []),
    ("wrong format", "Here you go: nothing useful", "stop", [], ["malformed"]),
    ("preamble only", "Here are the new tasks:", "stop", [], ["preamble"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "finish", "tasks", "reasons"), ALPACA_CASES)
def test_parse_alpaca(name, text, finish, tasks, reasons) -> None:
    parsed, rejections = parse_tasks(text, finish, mode="alpaca", first_index=4, count=20)
    assert [(t.instruction, t.input, t.output) for t in parsed] == tasks, name
    assert [r.reason for r in rejections] == reasons, name


# --- parse_instances and parse_yes_no -------------------------------------------

INSTANCE_CASES = [
    ("input-first clean", "Example 1\nInput: I loved it.\nOutput: positive\n\nExample 2\nInput: Awful.\nOutput: negative",
     "stop", False, [("I loved it.", "positive"), ("Awful.", "negative")], []),
    ("no input marker", "Example 1\nInput: None\nOutput: Paris is the capital.", "stop", False,
     [("", "Paris is the capital.")], []),
    ("without header", "Input: 2+2\nOutput: 4", "stop", False, [("2+2", "4")], []),
    ("output-first zh", "示例 1\n类别标签：正面\n输入：这部电影太好看了。\n\n示例 2\n类别标签：负面\n输入：浪费时间。",
     "stop", True, [("这部电影太好看了。", "正面"), ("浪费时间。", "负面")], []),
    ("truncated", "Example 1\nInput: a b\nOutput: c\nExample 2\nInput: d e", "length", False, [("a b", "c")], ["truncated"]),
    ("missing output", "Example 1\nInput: just an input", "stop", False, [], ["malformed_instance"]),
    ("empty", "", "stop", False, [], []),
    ("wrong format", "I am not sure what you mean.", "stop", False, [], ["malformed_instance"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "finish", "output_first", "pairs", "reasons"), INSTANCE_CASES
)
def test_parse_instances(name, text, finish, output_first, pairs, reasons) -> None:
    instances, dropped = parse_instances(text, finish, output_first=output_first)
    assert [(i.input, i.output) for i in instances] == pairs, name
    assert [reason for reason, _ in dropped] == reasons, name


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes", True), ("No.", False), ("yes, it is", True), ("  NO", False), ("是", True), ("否", False),
     ("不是分类任务", False), ("是的，这是分类任务。", True), ("", None), ("Maybe?", None), ("It is not.", False), ("Ye", None)],
)  # fmt: skip
def test_parse_yes_no(text: str, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected


# --- filters ---------------------------------------------------------------------

FILTER_CASES = [
    ("en", "Tell a joke.", "too_short"),
    ("en", "Write a poem about the sea.", None),
    ("en", " ".join(["word"] * 151), "too_long"),
    ("en", " ".join(["word"] * 150), None),
    ("zh", "写诗。", "too_short"),
    ("zh", "写一首诗。", None),
    ("zh", "写" * 151, "too_long"),
    ("en", "Describe the Images in this slide deck.", "blacklist:images"),
    ("en", "Draw a cat using ASCII characters.", "blacklist:draw"),
    ("en", "Tell me how to go   to the station by bus.", "blacklist:go to"),
    ("en", "Update the user profile description to be friendlier.", None),
    ("en", "Explain why graphite conducts electricity.", None),
    ("zh", "根据这张地图找出最近的医院。", "blacklist:地图"),
    ("zh", "画一只猫并描述它的样子。", "blacklist:画"),
    ("zh", "Summarize this image caption in one line please.", None),  # English words, Chinese list
    ("en", "- List three fruits that are red.", "bad_prefix"),
    ("en", "(Optional) list three fruits that are red.", "bad_prefix"),
    ("en", "Write a program that sorts a list of numbers.", "bad_prefix"),
    ("en", "write a Program to reverse a string in Python.", "bad_prefix"),
    ("en", "Write a poem that sorts feelings into colors.", None),
    ("zh", "，列出三种红色的水果。", "bad_prefix"),
    ("zh", "编写一个程序，对一组数字进行排序。", "bad_prefix"),
    ("zh", "写一个程序，反转一个字符串。", "bad_prefix"),
    ("zh", "《红楼梦》的作者是谁？请简单介绍他。", None),  # non-ASCII opener is fine
    ("zh", "用一句话总结下面这段文字的主要意思。", None),  # no ASCII-only rule
    ("en", "Übersetze den Satz ins Englische, bitte.", None),
    # A weak model's numbering with nothing in it is no task; numbers inside a task are words.
    ("en", "1. 2. 3. 4. 5. 6.", "no_words"),
    ("zh", "1、 2、 3、 4、 5、", "no_words"),
    ("en", "Add 12 and 30, then halve it.", None),
]


@pytest.mark.parametrize(("language", "text", "reason"), FILTER_CASES)
def test_check_instruction(language: str, text: str, reason: str | None) -> None:
    failed = check_instruction(text, language=language, config=GeneratorConfig())
    assert (failed[0] if failed else None) == reason


def test_word_count_treats_cjk_characters_as_words() -> None:
    assert count_words("Write a poem, please !") == 4
    assert count_words("请写一首诗。") == 5
    assert count_words("用 Python 写一个排序") == 7


def test_blacklist_is_configurable_per_language() -> None:
    config = GeneratorConfig(blacklist={"en": ["spreadsheet"], "zh": []})
    assert check_instruction("Sum the spreadsheet column values.", language="en", config=config)
    assert (
        check_instruction("Describe the image in words please.", language="en", config=config)
        is None
    )


INSTANCE_FILTER_CASES = [
    ("input equals output", [Instance("hello world", "Hello  world")], [], ["input_equals_output"], False),
    ("empty output", [Instance("x y", "  ")], [], ["empty_output"], False),
    ("incomplete", [Instance("Translate:", "bonjour")], [], ["incomplete_instance"], False),
    ("duplicate", [Instance("a", "b"), Instance("a", "b")], [("a", "b")], ["duplicate_instance"], False),
    ("ambiguous", [Instance("我很开心", "正面"), Instance("我很开心", "负面")], [("我很开心", "正面"), ("我很开心", "负面")], [], True),
    ("no input many outputs", [Instance("", "poem one"), Instance("", "poem two")], [("", "poem one"), ("", "poem two")], [], False),
    ("clean", [Instance("2+2", "4"), Instance("3+3", "6")], [("2+2", "4"), ("3+3", "6")], [], False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "instances", "kept", "reasons", "ambiguous"), INSTANCE_FILTER_CASES
)
def test_filter_instances(name, instances, kept, reasons, ambiguous) -> None:
    got, dropped, is_ambiguous = filter_instances(instances)
    assert [(i.input, i.output) for i in got] == kept, name
    assert [r for r, _ in dropped] == reasons, name
    assert is_ambiguous is ambiguous, name


# --- end to end with the scripted model -----------------------------------------

HUMAN = [example(f"Human seed task number {i}.", id=f"h{i}") for i in range(6)]
MACHINE = [example(f"Machine task number {i}.", id=f"m{i}") for i in range(2)]


async def test_generate_self_instruct_end_to_end() -> None:
    reply = (
        "1. Name three rivers in Asia.\n"
        "2. Describe the picture on the wall.\n"
        "3. Tell a joke.\n"
        "4. Write a program that prints primes.\n"
        "5. Explain how tides work in detail."
    )
    model = ScriptedModel([reply, Failure("timeout", "read timed out")], model_id="teacher")
    config = GeneratorConfig()
    outcome = await generate(
        [HUMAN + MACHINE, HUMAN + MACHINE], model, PromptLibrary("en"), config, Random(0)
    )
    assert isinstance(outcome, GenerateOutcome)
    assert model.batches == [2]
    assert [d.instruction for d in outcome.drafts] == [
        "Name three rivers in Asia.",
        "Explain how tides work in detail.",
    ]
    assert sorted(outcome.reasons()) == [
        "bad_prefix",
        "blacklist:picture",
        "model_failure:timeout",
        "too_short",
    ]
    assert outcome.calls == 2 and outcome.tokens > 0 and outcome.failures == {"timeout": 1}
    draft = outcome.drafts[0]
    assert (
        draft.output is None and draft.source == "generated" and draft.operation == "self_instruct"
    )
    assert draft.model_version == "teacher" and draft.template == "en/generate_self_instruct.jinja2"
    assert draft.language == "en" and sorted(draft.meta["demo_ids"]) == sorted(
        e.id for e in HUMAN + MACHINE
    )
    request = model.calls[0]
    assert (request.temperature, request.top_p, request.presence_penalty) == (0.7, 0.5, 2.0)
    assert "\n9." in request.stop  # the new tasks are a list of their own: 1 to 8
    prompt = request.messages[0]["content"]
    assert all(e.instruction in prompt for e in HUMAN + MACHINE)
    expected = HUMAN + MACHINE
    Random(0).shuffle(expected)  # the agent shuffles each demo set with the injected rng
    listed = [line[2:] for line in prompt.splitlines() if line.startswith("- ")]
    assert listed == [e.instruction for e in expected] != [e.instruction for e in HUMAN + MACHINE]


async def test_generate_shuffle_is_seeded() -> None:
    prompts = []
    for _ in range(2):
        model = ScriptedModel(default="9. Explain how tides work in detail.")
        await generate([HUMAN + MACHINE], model, PromptLibrary("en"), GeneratorConfig(), Random(42))
        prompts.append(model.calls[0].messages[0]["content"])
    assert prompts[0] == prompts[1]


async def test_generate_alpaca_chinese_end_to_end() -> None:
    reply = (
        ALPACA_ZH
        + "\n###\n6. 指令：根据这张地图规划路线。\n6. 输入：\n<无输入>\n6. 输出：\n向北走。\n###\n7. 指令：重复这句话。\n7. 输入：\n你好世界\n7. 输出：\n你好世界\n###\n8. 指令：写一个"
    )
    model = ScriptedModel([truncated(reply)], model_id="teacher")
    config = GeneratorConfig(mode="alpaca")
    seeds = [example("Add the numbers.", "2, 3", "5", id=f"s{i}") for i in range(3)]
    outcome = await generate([seeds], model, PromptLibrary("zh"), config, Random(1))
    assert [(d.instruction, d.input, d.output) for d in outcome.drafts] == [
        ("把下面的句子翻译成英文。", "我喜欢读书。", "I like reading books."),
        ("写一句关于春天的话。", "", "春天来了。"),
    ]
    assert sorted(outcome.reasons()) == ["blacklist:地图", "input_equals_output", "truncated"]
    request = model.calls[0]
    assert (request.temperature, request.top_p, request.presence_penalty) == (1.0, 1.0, None)
    assert "\n24." in request.stop and "4 到 23" in request.messages[0]["content"]
    assert (
        outcome.drafts[0].template == "zh/generate_alpaca.jinja2"
        and outcome.drafts[0].language == "zh"
    )


async def test_generate_with_no_demo_sets_makes_no_call() -> None:
    model = ScriptedModel()
    outcome = await generate([], model, PromptLibrary("en"), GeneratorConfig(), Random(0))
    assert outcome.drafts == [] and model.calls == []


async def test_generate_records_a_call_that_yields_nothing() -> None:
    model = ScriptedModel([""])
    outcome = await generate([HUMAN], model, PromptLibrary("en"), GeneratorConfig(), Random(0))
    assert outcome.drafts == [] and list(outcome.reasons()) == ["no_tasks"]


def _instance_reply(request) -> str:
    prompt = request.messages[-1]["content"]
    task = prompt.split("Task: ")[1]
    if "classification task, one whose" in prompt:
        return "Yes" if "sentiment" in task else "No"
    if "sentiment" in task:
        return "Example 1\nClass label: positive\nInput: Great film!\n\nExample 2\nClass label: negative\nInput: Dull plot."
    if "capital" in task:
        return "Example 1\nInput: France\nOutput: Paris\n\nExample 2\nInput: France\nOutput: Lyon"
    return "Example 1\nInput: None\nOutput: Roses are red."


async def test_generate_instances_end_to_end() -> None:
    drafts = [
        ExampleDraft("Classify the sentiment of the review."),
        ExampleDraft("Give the capital of the country."),
        ExampleDraft("Write a two-line poem about flowers."),
    ]
    model = ScriptedModel(default=_instance_reply)
    outcome = await generate_instances(
        drafts, model, PromptLibrary("en"), GeneratorConfig(), Random(0)
    )
    assert model.batches == [3, 3]
    by_instruction = {d.instruction: d for d in outcome.drafts}
    sentiment = by_instruction["Classify the sentiment of the review."]
    assert sentiment.meta["is_classification"] is True
    assert sentiment.meta["instance_template"] == "en/instances_output_first.jinja2"
    assert (sentiment.input, sentiment.output) in {
        ("Great film!", "positive"),
        ("Dull plot.", "negative"),
    }
    assert len(sentiment.meta["instances"]) == 2
    poem = by_instruction["Write a two-line poem about flowers."]
    assert (poem.input, poem.output, poem.meta["is_classification"]) == (
        "",
        "Roses are red.",
        False,
    )
    assert "Give the capital of the country." not in by_instruction
    assert list(outcome.reasons()) == ["ambiguous_input"]
    assert outcome.calls == 6
    stops = model.calls[3].stop
    assert "Example 6" in stops


async def test_generate_instances_keeps_several_and_uses_meta_flag() -> None:
    drafts = [
        ExampleDraft("Label the review as positive or negative.", meta={"is_classification": True})
    ]
    reply = "示例 1\n类别标签：正面\n输入：很好看\n示例 2\n类别标签：负面\n输入：很无聊"
    model = ScriptedModel([reply])
    config = GeneratorConfig(instances_kept=2, classification_check=False)
    outcome = await generate_instances(drafts, model, PromptLibrary("zh"), config, Random(0))
    assert len(model.calls) == 1 and "类别标签" in model.calls[0].messages[0]["content"]
    assert sorted((d.input, d.output) for d in outcome.drafts) == [
        ("很好看", "正面"),
        ("很无聊", "负面"),
    ]
    assert "示例 6" in model.calls[0].stop


async def test_generate_instances_failures_are_rejections() -> None:
    drafts = [
        ExampleDraft("Sort these words alphabetically."),
        ExampleDraft("Explain photosynthesis briefly."),
    ]
    model = ScriptedModel(
        [
            Failure("rate_limit", "429"),
            "maybe",
            truncated("Example 1\nInput: None\nOutput: Plants make"),
        ]
    )
    outcome = await generate_instances(
        drafts, model, PromptLibrary("en"), GeneratorConfig(), Random(0)
    )
    assert outcome.drafts == []
    assert sorted(outcome.reasons()) == [
        "model_failure:rate_limit",
        "no_valid_instances",
        "truncated",
    ]
    # An unreadable yes/no is routing, not a failed call: counted, but not as a failure.
    assert outcome.failures == {"rate_limit": 1}
    assert outcome.counters["unparsed_classification"] == 1
    assert "Example 1\nInput:" in model.calls[2].messages[0]["content"]  # unparsed → input-first


@pytest.mark.parametrize(
    ("language", "reply", "kept", "dropped"),
    [
        # An English project's generator writes English: a Chinese task is dropped, whatever
        # it says; an English one quoting Chinese is English.
        (
            "en",
            "请解释为什么秋天的树叶会变成红色和黄色。\nTranslate 你好 into English and French.",
            ["Translate 你好 into English and French."],
            ["wrong_language"],
        ),
        # A Chinese project's: an English task is dropped; a Chinese one quoting English is
        # Chinese, and the Chinese blacklist applies to it.
        (
            "zh",
            "Explain why autumn leaves turn red and yellow.\n"
            "请绘制一张显示中国主要城市的地图和流程图。\n"
            "把这句话翻译成中文：The early bird catches the worm.",
            ["把这句话翻译成中文：The early bird catches the worm."],
            ["wrong_language", "blacklist:绘制"],
        ),
    ],
)
async def test_the_generator_keeps_the_prompt_language(
    language: str, reply: str, kept: list[str], dropped: list[str]
) -> None:
    config = GeneratorConfig(
        mode="self_instruct", self_instruct_tasks_per_call=3, generate_instances=False
    )
    first, _last, _ = numbering(0, 3)
    lines = [f"{first + i}. {line}" for i, line in enumerate(reply.split("\n"))]
    outcome = await generate(
        [[]], ScriptedModel(["\n".join(lines)]), PromptLibrary(language), config, Random(0)
    )
    assert [d.instruction for d in outcome.drafts] == kept
    assert all(d.language == language for d in outcome.drafts)
    assert [r.reason for r in outcome.rejections] == dropped
    (record,) = outcome.call_records
    assert record.language == language and record.tasks == len(lines)
    assert dict(record.drops) == {reason: 1 for reason in dropped}


async def test_a_task_that_copies_the_request_is_dropped() -> None:
    """A weak model hands back the prompt's own words as a task; a task that merely shares a
    few words with it (or copies a demo's, which the novelty filter judges) stays."""
    config = GeneratorConfig(self_instruct_tasks_per_call=3, generate_instances=False)
    demos = [example("Write a haiku about autumn leaves falling in the park.")]
    first, _last, _ = numbering(1, 3)
    reply = (
        f"{first}. Write 3 new tasks of your own, each about a different topic.\n"
        f"{first + 1}. Write a haiku about autumn leaves falling in the park.\n"
        f"{first + 2}. Describe a series of diverse birds you might see in a city park."
    )
    outcome = await generate(
        [demos], ScriptedModel([reply]), PromptLibrary("en"), config, Random(0)
    )
    assert sorted(r.reason for r in outcome.rejections) == ["copied_prompt", "echoed_demo"]
    assert [d.instruction for d in outcome.drafts] == [
        "Describe a series of diverse birds you might see in a city park."
    ]
    (record,) = outcome.call_records
    assert record.tasks == 3 and dict(record.drops) == {"copied_prompt": 1, "echoed_demo": 1}
