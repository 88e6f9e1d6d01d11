"""The verifiable-constraint registry: checkers in English and Chinese, loose mode,
CJK counting, serialization, sampling and IFEval-format files."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from random import Random
from typing import Any

import pytest

from evoinstruct.agents.constraints import (
    IFEVAL_IDS,
    LANGUAGES,
    REGISTRY,
    CheckResult,
    Constraint,
    IFEvalRow,
    accuracy,
    all_passed,
    check_all,
    describe,
    describe_all,
    dump_constraints,
    find_conflicts,
    from_ifeval,
    get_type,
    incompatible,
    load_constraints,
    read_ifeval,
    sample_constraint,
    sample_constraints,
    sampleable,
    score_row,
    to_ifeval,
    write_ifeval,
)
from evoinstruct.agents.constraints.text import (
    comma_count,
    count_keyword,
    loose_variants,
    split_on_double_newlines,
)
from evoinstruct.text.rules import (
    count_chars,
    count_sentences,
    count_words,
    script_shares,
    split_sentences,
)

EN_INSTRUCTION = "Write a short poem about spring rain falling on a quiet mountain village."
ZH_INSTRUCTION = "写一首关于春天的诗，描写城市里的雨水和森林。"

# (constraint id, params, language of the response, response, should pass)
CASES: list[tuple[str, dict[str, Any], str, str, bool]] = [
    # --- length_constraints:number_words
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "en", "Short and sweet.", True),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "en", "This answer has six words here.", False),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 6}, "en", "This answer has six words here.", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 7}, "en", "This answer has six words here.", False),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 10}, "zh", "春天来了。", True),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 10}, "zh", "春天来了，花儿都开了，小鸟在唱歌。", False),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 8}, "zh", "我喜欢用Python写代码", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 9}, "zh", "我喜欢用Python写代码", False),
    # --- length_constraints:number_characters
    ("length_constraints:number_characters", {"relation": "less than", "num_chars": 10}, "en", "a b c d e", True),
    ("length_constraints:number_characters", {"relation": "less than", "num_chars": 10}, "en", "abcdefghij", False),
    ("length_constraints:number_characters", {"relation": "at least", "num_chars": 5}, "zh", "春天 来了。", True),
    ("length_constraints:number_characters", {"relation": "at least", "num_chars": 6}, "zh", "春天 来了。", False),
    # --- length_constraints:number_sentences
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3}, "en", "One. Two!", True),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3}, "en", "One. Two! Three?", False),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2}, "en", "Pi is 3.14 and Mr. Lee knows it. Really!", True),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3}, "en", "Pi is 3.14 and Mr. Lee knows it. Really!", False),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3}, "zh", "春天来了。花开了！你看到了吗？", True),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 4}, "zh", "春天来了。花开了！你看到了吗？", False),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2}, "zh", "春天来了，花开了", True),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2}, "zh", "春天来了\n花开了。", True),  # a line break ends no sentence
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2}, "zh", "春天来了。\n花开了。", False),
    # --- length_constraints:number_paragraphs (*** dividers)
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "en", "First part.\n\n***\n\nSecond part.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "en", "First part.\n\nSecond part.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "en", "One.\n***\n***\nTwo.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "zh", "第一段。\n***\n第二段。\n***\n第三段。", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "zh", "第一段。\n***\n第二段。", False),
    # --- length_constraints:nth_paragraph_first_word (blank-line paragraphs)
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "en", "Rain falls.\n\nHowever, the sun returns.", True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "en", "Rain falls.\n\nThe sun returns.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"}, "en", "Rain falls.\n\nHoweverish things.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "however"}, "en", "Rain falls.\n\nHowever, the sun returns.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "首先"}, "zh", "首先，春天来了。\n\n然后花开了。", True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "首先"}, "zh", "春天来了。\n\n首先花开了。", False),
    # --- keywords:existence
    ("keywords:existence", {"keywords": ["river", "Dream"]}, "en", "I dream of the River.", True),
    ("keywords:existence", {"keywords": ["river", "dream"]}, "en", "Dreams of the rivers.", True),
    ("keywords:existence", {"keywords": ["river", "dream"]}, "en", "A daydream by the lake.", False),
    ("keywords:existence", {"keywords": ["春天", "河流"]}, "zh", "春天的河流很美。", True),
    ("keywords:existence", {"keywords": ["春天", "河流"]}, "zh", "春天的湖泊很美。", False),
    # --- keywords:frequency
    ("keywords:frequency", {"keyword": "rain", "frequency": 2, "relation": "at least"}, "en", "Rain, rain, go away.", True),
    ("keywords:frequency", {"keyword": "rain", "frequency": 3, "relation": "at least"}, "en", "Rain, rain, go away.", False),
    ("keywords:frequency", {"keyword": "rain", "frequency": 2, "relation": "less than"}, "en", "The rain stopped.", True),
    ("keywords:frequency", {"keyword": "rain", "frequency": 2, "relation": "less than"}, "en", "Rain, rain, go away.", False),
    ("keywords:frequency", {"keyword": "雨", "frequency": 3, "relation": "at least"}, "zh", "下雨了，雨很大，大雨。", True),
    ("keywords:frequency", {"keyword": "雨", "frequency": 4, "relation": "at least"}, "zh", "下雨了，雨很大，大雨。", False),
    # --- keywords:forbidden_words
    ("keywords:forbidden_words", {"forbidden_words": ["art", "very"]}, "en", "An artist paints everything.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["art", "very"]}, "en", "It is Very nice.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["非常"]}, "zh", "今天天气很好。", True),
    ("keywords:forbidden_words", {"forbidden_words": ["非常"]}, "zh", "今天天气非常好。", False),
    # --- keywords:letter_frequency
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "less than"}, "en", "A quiet evening.", True),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "less than"}, "en", "Quick quiet quiz.", False),
    ("keywords:letter_frequency", {"letter": "B", "let_frequency": 3, "let_relation": "at least"}, "en", "Big blue Bubbles.", True),
    ("keywords:letter_frequency", {"letter": "b", "let_frequency": 3, "let_relation": "at least"}, "en", "Big blue sky.", False),
    ("keywords:letter_frequency", {"letter": "x", "let_frequency": 1, "let_relation": "at least"}, "zh", "我用Linux系统。", True),
    ("keywords:letter_frequency", {"letter": "x", "let_frequency": 1, "let_relation": "at least"}, "zh", "我用苹果系统。", False),
    # --- language:response_language
    ("language:response_language", {"language": "en"}, "en", "The weather is lovely today.", True),
    ("language:response_language", {"language": "en"}, "en", "今天天气很好，我们去公园散步吧。", False),
    ("language:response_language", {"language": "zh"}, "zh", "今天天气很好，我们去公园吧。", True),
    ("language:response_language", {"language": "zh"}, "zh", "下面是代码：\n```python\ndef add(a, b):\n    return a + b\n```\n这个函数把两个数相加。", True),
    ("language:response_language", {"language": "zh"}, "zh", "The weather is lovely today, 好的.", False),
    ("language:response_language", {"language": "zh"}, "zh", "今日はいい天気ですね。", False),
    # --- detectable_content:number_placeholders
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "en", "Dear [name], see you at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "en", "Dear [name], see you soon.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 1}, "zh", "尊敬的[姓名]：您好。", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 1}, "zh", "尊敬的【姓名】：您好。", False),
    # --- detectable_content:postscript
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "en", "See you soon.\n\nP.S. Bring an umbrella.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "en", "See you soon.\n\np. s. Bring an umbrella.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "en", "See you soon. Bring an umbrella.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "en", "Bye.\nP.S. one\nP.P.S two", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "en", "Bye.\nP.S. one", False),
    ("detectable_content:postscript", {"postscript_marker": "附言"}, "zh", "祝好。\n附言：记得带伞。", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "zh", "祝好。\nP.S. 记得带伞。", True),
    ("detectable_content:postscript", {"postscript_marker": "附言"}, "zh", "祝好。记得带伞。", False),
    # --- detectable_format:number_bullet_lists
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "en", "Points:\n* one\n- two", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "en", "Points:\n* one\n* two\n* three", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "en", "**Bold** start\n* one\n***\n- two", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "zh", "要点：\n* 第一\n* 第二\n* 第三", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "zh", "要点：\n1. 第一\n2. 第二\n3. 第三", False),
    # --- detectable_format:numbered_list
    ("detectable_format:numbered_list", {"num_items": 3}, "en", "Steps:\n1. Boil\n2) Pour\n3. Drink", True),
    ("detectable_format:numbered_list", {"num_items": 3}, "en", "Steps:\n1. Boil\n2. Pour\n1.5 liters is plenty", False),
    ("detectable_format:numbered_list", {"num_items": 2}, "zh", "1、烧水\n2、泡茶", True),
    ("detectable_format:numbered_list", {"num_items": 2}, "zh", "烧水，然后泡茶", False),
    # --- detectable_format:constrained_response
    ("detectable_format:constrained_response", {}, "en", "My answer is yes.", True),
    ("detectable_format:constrained_response", {}, "en", "Having thought about it: My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "en", "my answer is yes.", False),
    ("detectable_format:constrained_response", {}, "en", "Yes.", False),
    # --- detectable_format:number_highlighted_sections
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "en", "This is *key* and **vital**.", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "en", "This is *key* and ** ** and **.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "zh", "这是*重点*，还有*要点*。", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "zh", "这是*重点*。", False),
    # --- detectable_format:multiple_sections
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2}, "en", "SECTION 1\nIntro.\nSECTION 2\nBody.", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2}, "en", "Section 1\nIntro.\nSection 2\nBody.", False),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 3}, "en", "Section 1\nIntro.\nSection 2\nBody.", False),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2}, "zh", "## SECTION 1\n引言。\n## SECTION 2\n正文。", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2}, "zh", "第一部分：引言。\n第二部分：正文。", False),
    # --- detectable_format:json_format
    ("detectable_format:json_format", {}, "en", '{"answer": "yes", "reasons": [1, 2]}', True),
    ("detectable_format:json_format", {}, "en", '```json\n{"answer": "yes"}\n```', True),
    ("detectable_format:json_format", {}, "en", "Here you go: {'answer': 'yes'}", False),
    ("detectable_format:json_format", {}, "en", '"just a string"', True),  # any JSON value, as in IFEval
    ("detectable_format:json_format", {}, "zh", '```\n{"答案": "春天"}\n```', True),
    ("detectable_format:json_format", {}, "zh", '{"答案"："春天"}', False),
    # --- detectable_format:title
    ("detectable_format:title", {}, "en", "<<Spring Rain>>\nDrops fall.", True),
    ("detectable_format:title", {}, "en", "<< >>\nDrops fall.", False),
    ("detectable_format:title", {}, "zh", "<<春雨>>\n细雨绵绵。", True),
    ("detectable_format:title", {}, "zh", "《春雨》\n细雨绵绵。", False),
    # --- combination:two_responses
    ("combination:two_responses", {}, "en", "First take.\n******\nSecond take.", True),
    ("combination:two_responses", {}, "en", "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "en", "One.\n******\nTwo.\n******\nThree.", False),
    ("combination:two_responses", {}, "zh", "第一个回答。\n******\n第二个回答。", True),
    ("combination:two_responses", {}, "zh", "第一个回答。\n***\n第二个回答。", False),
    # --- combination:repeat_prompt
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about rain."}, "en", "write a haiku about rain.\nDrops on the roof...", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about rain."}, "en", "Sure! Write a haiku about rain.", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "写一首关于雨的诗。"}, "zh", "写一首关于雨的诗。\n细雨落窗前。", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "写一首关于雨的诗。"}, "zh", "好的。写一首关于雨的诗。", False),
    # --- startend:end_checker
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "en", "That is it. Any other questions?", True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "en", '"That is it. any other questions?"', True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "en", "Any other questions? Bye.", False),
    ("startend:end_checker", {"end_phrase": "还有什么可以帮您的吗？"}, "zh", "就这些。还有什么可以帮您的吗?", True),
    ("startend:end_checker", {"end_phrase": "还有什么可以帮您的吗？"}, "zh", "还有什么可以帮您的吗？再见。", False),
    # --- startend:start_checker
    ("startend:start_checker", {"start_phrase": "Here is my answer"}, "en", "  here is my answer: rain.", True),
    ("startend:start_checker", {"start_phrase": "Here is my answer"}, "en", "Well, here is my answer.", False),
    ("startend:start_checker", {"start_phrase": "好的"}, "zh", "好的，下面是回答。", True),
    ("startend:start_checker", {"start_phrase": "好的"}, "zh", "下面是回答，好的。", False),
    # --- startend:quotation
    ("startend:quotation", {}, "en", '  "Rain falls softly."  ', True),
    ("startend:quotation", {}, "en", 'Rain "falls" softly.', False),
    ("startend:quotation", {}, "en", '"', False),
    ("startend:quotation", {}, "zh", "“细雨绵绵。”", True),
    ("startend:quotation", {}, "zh", "「细雨绵绵。」", False),
    # --- change_case:english_lowercase
    ("change_case:english_lowercase", {}, "en", "all quiet on the western front, 123!", True),
    ("change_case:english_lowercase", {}, "en", "all quiet on the Western front.", False),
    ("change_case:english_lowercase", {}, "zh", "我喜欢python。", False),  # the response must be English
    ("change_case:english_lowercase", {}, "zh", "我喜欢春天。", False),
    # --- change_case:english_capital
    ("change_case:english_capital", {}, "en", "ALL QUIET ON THE WESTERN FRONT!", True),
    ("change_case:english_capital", {}, "en", "ALL QUIET ON THE Western FRONT!", False),
    ("change_case:english_capital", {}, "zh", "我喜欢PYTHON。", False),  # the response must be English
    ("change_case:english_capital", {}, "zh", "我喜欢Python。", False),
    # --- change_case:capital_word_frequency
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "en", "This is VERY IMPORTANT.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "en", "We think a Very small thing.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"}, "en", "Only ONE shout.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"}, "en", "TWO SHOUTS.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 1, "capital_relation": "at least"}, "zh", "这是NASA的项目。", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 1, "capital_relation": "at least"}, "zh", "这是Nasa的项目。", False),
    # --- punctuation:no_comma
    ("punctuation:no_comma", {}, "en", "Rain falls. The sun sets.", True),
    ("punctuation:no_comma", {}, "en", "Rain falls, the sun sets.", False),
    ("punctuation:no_comma", {}, "zh", "春天来了。花开了。", True),
    ("punctuation:no_comma", {}, "zh", "春天来了，花开了。", False),
    ("punctuation:no_comma", {}, "zh", "桃花、杏花都开了。", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cid", "params", "lang", "response", "expected"),
    CASES,
    ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)],
)
def test_checker_table(
    cid: str, params: dict[str, Any], lang: str, response: str, expected: bool
) -> None:
    result = Constraint(cid, params).check(response)
    assert isinstance(result, CheckResult)
    assert result.passed is expected, result.reason
    assert result.reason and len(result.reason) < 160


def test_table_covers_every_type_with_pass_and_fail_in_each_sampled_language() -> None:
    # The project's own types keep their table beside their tests.
    from tests.test_own_constraints import OWN_CASES

    seen: dict[tuple[str, str], set[bool]] = {}
    for cid, _, lang, _, expected in CASES + OWN_CASES:
        seen.setdefault((cid, lang), set()).add(expected)
    for cid, ctype in REGISTRY.items():
        for lang in ctype.languages:
            assert seen.get((cid, lang)) == {True, False}, (cid, lang)


def test_registry_has_at_least_25_types_and_all_ifeval_ids() -> None:
    assert len(REGISTRY) >= 25
    assert set(REGISTRY) >= IFEVAL_IDS
    assert len(IFEVAL_IDS) == 25
    for cid, ctype in REGISTRY.items():
        assert ctype.id == cid
        assert re.fullmatch(r"[a-z_]+:[a-z_]+", cid)
        assert ctype.languages <= set(LANGUAGES) and ctype.languages
        for other in ctype.conflicts:
            assert other in REGISTRY, (cid, other)


def test_case_rules_are_sampled_for_english_only() -> None:
    zh_ids = {t.id for t in sampleable("zh", ZH_INSTRUCTION)}
    for cid in (
        "change_case:english_lowercase",
        "change_case:english_capital",
        "change_case:capital_word_frequency",
        "keywords:letter_frequency",
        "detectable_format:constrained_response",
    ):
        assert cid not in zh_ids
        assert cid in {t.id for t in sampleable("en", EN_INSTRUCTION)}
    assert "combination:repeat_prompt" not in {t.id for t in sampleable("en", "")}


# --- strict vs loose


def test_loose_forgives_a_leading_chatter_line() -> None:
    response = "Sure, here it is:\nHere is my answer: spring rain."
    start = Constraint("startend:start_checker", {"start_phrase": "Here is my answer"})
    assert not start.check(response).passed
    loose = start.check(response, loose=True)
    assert loose.passed and "first line removed" in loose.reason

    as_json = Constraint("detectable_format:json_format")
    wrapped = 'Sure, here it is:\n{"poem": "rain"}'
    assert not as_json.check(wrapped).passed
    assert as_json.check(wrapped, loose=True).passed


def test_loose_forgives_a_trailing_line_and_markdown_emphasis() -> None:
    end = Constraint("startend:end_checker", {"end_phrase": "Hope this helps."})
    response = "Rain falls. Hope this helps.\nLet me know!"
    assert not end.check(response).passed
    assert end.check(response, loose=True).passed

    start = Constraint("startend:start_checker", {"start_phrase": "好的"})
    assert not start.check("**好的**，这是回答。").passed
    assert start.check("**好的**，这是回答。", loose=True).passed

    comma = Constraint("punctuation:no_comma")
    assert not comma.check("Well, no.", loose=True).passed


def test_loose_variants_match_ifeval() -> None:
    variants = loose_variants("Sure:\n*Hi* there\nBye")
    assert variants[0] == "Sure:\n*Hi* there\nBye"
    assert "*Hi* there\nBye" in variants
    assert "Sure:\n*Hi* there" in variants
    assert "*Hi* there" in variants
    assert "Hi there" in variants
    assert len(variants) == 8
    assert loose_variants("one line") == ["one line"]


def test_empty_response_fails_everything() -> None:
    for cid in ("length_constraints:number_words", "punctuation:no_comma"):
        params = {"relation": "less than", "num_words": 5} if "words" in cid else {}
        assert not Constraint(cid, params).check("   ", loose=True).passed


# --- CJK-aware counting


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("Hello world", 2),
        ("春天来了", 4),
        ("我喜欢用Python写代码", 8),
        ("GPT-4 is 2x faster", 5),
        ("don't stop", 3),
        ("春天，  spring！", 3),
        ("ひらがな", 4),
        ("", 0),
        ("。，！", 0),
    ],
)
def test_count_words(text: str, n: int) -> None:
    assert count_words(text) == n


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("春天来了。花开了！你看到了吗？", 3),
        ("春天来了，花开了", 1),
        ("第一行\n第二行\n\n第三行", 1),  # line breaks end no sentence, as in IFEval
        ("Hello world. How are you? Fine!", 3),
        ("Pi is 3.14 exactly.", 1),
        ("Mr. Smith met Dr. Jones.", 1),
        ("Visit example.com today.", 1),
        ("1. First item\n2. Second item", 3),  # Punkt reads "1." as a sentence of its own
        ("他说：“好。”然后走了。", 2),
        ("Wow!!! Really?!", 2),
        ("用Python写代码。很简单。", 2),
        ("", 0),
    ],
)
def test_count_sentences(text: str, n: int) -> None:
    assert count_sentences(text) == n, split_sentences(text)


def test_other_counters() -> None:
    assert count_chars("春天 来了 ab\n") == 6
    assert comma_count("a,b，c、d﹐e") == 4
    assert split_on_double_newlines("a\n\n\nb\n  \nc") == ["a", "\nb\n  \nc"]
    assert count_keyword("Dreams, dreaming, daydream, DREAM", "dream") == 4
    assert count_keyword("an artist", "art", whole_word=True) == 0
    assert count_keyword("春天的春天", "春天") == 2
    # Width folds only for a phrase holding CJK (IFEval compares English as written).
    assert count_keyword("ＡＩ and ai", "AI") == 1
    assert count_keyword("ＡＩ芯片和AI芯片", "AI芯片") == 2
    shares = script_shares("我用Python写代码")
    assert shares["zh"] > 0.8 and shares["en"] < 0.2


# --- the Constraint value


def test_serialization_round_trip() -> None:
    original = [
        Constraint("keywords:existence", {"keywords": ["春天", "rain"]}),
        Constraint("length_constraints:number_words", {"relation": "at least", "num_words": 50}),
        Constraint("punctuation:no_comma"),
    ]
    data = json.loads(json.dumps(dump_constraints(original), ensure_ascii=False))
    assert load_constraints(data) == original
    for c in original:
        assert Constraint.from_json(c.to_json()) == c
        assert hash(Constraint.from_dict(c.to_dict())) == hash(c)
    assert len(set(original + original)) == 3
    assert "春天" in original[0].to_json()  # Chinese stays readable in the store
    assert pickle.loads(pickle.dumps(original)) == original  # graph checkpoints pickle state


def test_constraint_is_frozen_and_coerces_params() -> None:
    c = Constraint("length_constraints:number_words", {"relation": "less than", "num_words": 100.0})
    assert c.params["num_words"] == 100 and isinstance(c.params["num_words"], int)
    with pytest.raises(AttributeError):
        c.id = "x"  # type: ignore[misc]
    assert (
        Constraint(
            "keywords:letter_frequency",
            {"letter": "Q", "let_frequency": 2, "let_relation": "at least"},
        ).params["letter"]
        == "q"
    )
    assert (
        Constraint("language:response_language", {"language": "zh-CN"}).params["language"] == "zh"
    )


@pytest.mark.parametrize(
    ("cid", "params", "message"),
    [
        ("no:such_id", {}, "unknown constraint id"),
        ("length_constraints:number_words", {"relation": "about"}, "missing parameter"),
        ("length_constraints:number_words", {"relation": "about", "num_words": 5}, "relation"),
        ("length_constraints:number_words", {"relation": "at least", "num_words": 0}, ">= 1"),
        ("length_constraints:number_words", {"relation": "at least", "num_words": True}, "integer"),
        ("length_constraints:number_words", {"relation": "at least", "num_words": 2.5}, "integer"),
        (
            "length_constraints:number_words",
            {"relation": "at least", "num_words": 5, "x": 1},
            "unknown parameter",
        ),
        ("keywords:existence", {"keywords": "rain"}, "list of strings"),
        ("keywords:existence", {"keywords": []}, "list of strings"),
        ("keywords:existence", {"keywords": ["rain", ""]}, "non-empty string"),
        (
            "keywords:letter_frequency",
            {"letter": "ab", "let_frequency": 1, "let_relation": "at least"},
            "one character",
        ),
        ("language:response_language", {"language": "xx"}, "not a language langdetect tells apart"),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "so"},
            "exceeds",
        ),
    ],
)
def test_bad_constraints_raise_clear_errors(cid: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Constraint(cid, params)


def test_get_type_suggests_ids() -> None:
    with pytest.raises(ValueError, match="keywords:existence"):
        get_type("keywords:exist")


def test_check_all_and_describe_all() -> None:
    constraints = [
        Constraint("combination:repeat_prompt", {"prompt_to_repeat": "Name a fruit."}),
        Constraint("punctuation:no_comma"),
        Constraint("length_constraints:number_words", {"relation": "less than", "num_words": 10}),
    ]
    results = check_all(constraints, "Name a fruit. Apple.")
    assert [r.passed for r in results] == [True, True, True] and all_passed(results)
    results = check_all(constraints, "Apple, obviously.")
    assert [r.passed for r in results] == [False, False, True] and not all_passed(results)
    en = describe_all(constraints, "en")
    assert en.endswith("does not include this sentence).")  # repeat_prompt goes last
    assert "Do not use any commas" in en and "fewer than 10 words" in en
    zh = describe_all(constraints, "zh")
    assert "回答少于10个字。" in zh and " " not in zh.replace("1. ", "").replace("2. ", "")


def test_descriptions_read_naturally() -> None:
    words = Constraint(
        "length_constraints:number_words", {"relation": "less than", "num_words": 80}
    )
    assert describe(words, "en") == "Answer with fewer than 80 words."
    assert describe(words, "zh") == "回答少于80个字。"
    keys = Constraint("keywords:existence", {"keywords": ["春天", "河流"]})
    assert describe(keys, "zh") == "回答中须包含以下关键词：“春天”、“河流”。"
    lang = Constraint("language:response_language", {"language": "zh"})
    assert "Chinese" in describe(lang, "en") and "中文" in describe(lang, "zh")
    with pytest.raises(ValueError, match="language"):
        describe(words, "fr")


# --- sampling


@pytest.mark.parametrize("language", ["en", "zh"])
def test_sampling_is_deterministic_for_a_seed(language: str) -> None:
    instruction = EN_INSTRUCTION if language == "en" else ZH_INSTRUCTION
    for seed in range(20):
        first = sample_constraints(Random(seed), language, 3, instruction)
        second = sample_constraints(Random(seed), language, 3, instruction)
        assert first == second
    runs = {
        tuple(c.to_json() for c in sample_constraints(Random(s), language, 2, instruction))
        for s in range(20)
    }
    assert len(runs) > 10


@pytest.mark.parametrize("language", ["en", "zh"])
def test_sampled_sets_respect_language_and_conflicts(language: str) -> None:
    instruction = EN_INSTRUCTION if language == "en" else ZH_INSTRUCTION
    seen: set[str] = set()
    for seed in range(300):
        k = 1 + seed % 3
        picks = sample_constraints(Random(seed), language, k, instruction)
        assert len(picks) == k
        assert len({c.id for c in picks}) == k
        assert find_conflicts(picks) == []
        for c in picks:
            seen.add(c.id)
            assert language in c.type.languages
            description = describe(c, language)
            assert "{" not in description and "}" not in description
            assert describe(c, "en" if language == "zh" else "zh")
            if c.id == "combination:repeat_prompt":
                assert c.params["prompt_to_repeat"] == instruction
    # Every type sampleable for the language turns up.
    assert seen == {t.id for t in sampleable(language, instruction)}


def test_samplers_draw_keywords_from_the_instruction() -> None:
    found = set()
    for seed in range(60):
        c = sample_constraint("keywords:frequency", Random(seed), "en", EN_INSTRUCTION)
        assert c is not None
        found.add(c.params["keyword"])
    assert found & {"spring", "rain", "mountain", "village", "quiet", "falling", "poem", "short"}
    zh_found = set()
    for seed in range(60):
        c = sample_constraint("keywords:frequency", Random(seed), "zh", ZH_INSTRUCTION)
        assert c is not None
        zh_found.add(c.params["keyword"])
    assert zh_found & {"春天", "城市", "雨水", "森林", "诗歌"}


def test_sampling_never_forbids_what_another_constraint_requires() -> None:
    existing = [Constraint("keywords:existence", {"keywords": ["spring", "rain"]})]
    for seed in range(100):
        c = sample_constraint(
            "keywords:forbidden_words", Random(seed), "en", EN_INSTRUCTION, existing=existing
        )
        assert c is not None
        assert not {"spring", "rain"} & set(c.params["forbidden_words"])
    comma = [Constraint("punctuation:no_comma")]
    for seed in range(50):
        c = sample_constraint("startend:end_checker", Random(seed), "zh", "", existing=comma)
        assert c is not None and "，" not in c.params["end_phrase"]


def test_incompatible_pairs() -> None:
    lower = Constraint("change_case:english_lowercase")
    upper = Constraint("change_case:english_capital")
    assert incompatible(lower, upper)
    words = Constraint("length_constraints:number_words", {"relation": "at least", "num_words": 5})
    sentences = Constraint(
        "length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2}
    )
    assert incompatible(words, sentences)
    bullets = Constraint("detectable_format:number_bullet_lists", {"num_bullets": 5})
    assert incompatible(sentences, bullets)  # each bullet line is a sentence
    assert incompatible(lower, Constraint("combination:repeat_prompt", {"prompt_to_repeat": "Hi"}))
    forbid = Constraint("keywords:forbidden_words", {"forbidden_words": ["answer"]})
    assert incompatible(forbid, Constraint("detectable_format:constrained_response"))
    assert incompatible(forbid, Constraint("keywords:existence", {"keywords": ["Answer"]}))
    assert not incompatible(forbid, Constraint("keywords:existence", {"keywords": ["river"]}))
    comma = Constraint("punctuation:no_comma")
    assert incompatible(
        comma, Constraint("combination:repeat_prompt", {"prompt_to_repeat": "Hi, you."})
    )
    assert not incompatible(
        comma, Constraint("combination:repeat_prompt", {"prompt_to_repeat": "Hi you."})
    )
    assert incompatible(
        Constraint("detectable_format:json_format"), Constraint("startend:quotation")
    )
    short = Constraint(
        "length_constraints:number_words", {"relation": "less than", "num_words": 20}
    )
    long_prompt = (
        "Write a detailed essay on the causes and consequences of the industrial revolution."
    )
    assert incompatible(
        short, Constraint("combination:repeat_prompt", {"prompt_to_repeat": long_prompt})
    )
    assert not incompatible(short, Constraint("startend:end_checker", {"end_phrase": "Bye."}))


def test_existing_constraints_are_respected_and_not_repeated() -> None:
    existing = [Constraint("change_case:english_lowercase"), Constraint("punctuation:no_comma")]
    for seed in range(50):
        picks = sample_constraints(Random(seed), "en", 2, EN_INSTRUCTION, existing=existing)
        assert not find_conflicts(existing + picks)
        assert not {c.id for c in picks} & {c.id for c in existing}


def test_sampling_arguments() -> None:
    picks = sample_constraints(
        Random(1), "en", 2, only={"punctuation:no_comma", "detectable_format:title"}
    )
    assert {c.id for c in picks} == {"punctuation:no_comma", "detectable_format:title"}
    assert sample_constraints(Random(1), "en", 0) == []
    with pytest.raises(ValueError, match="language"):
        sample_constraints(Random(1), "fr", 1)
    with pytest.raises(ValueError, match="k must be"):
        sample_constraints(Random(1), "en", -1)
    with pytest.raises(ValueError, match="unknown constraint id"):
        sample_constraints(Random(1), "en", 1, exclude={"nope:nope"})
    with pytest.raises(ValueError, match="only 1 compatible"):
        sample_constraints(
            Random(1),
            "en",
            2,
            only={"change_case:english_lowercase", "change_case:english_capital"},
        )


# --- IFEval-format files

IFEVAL_ROWS = [
    {
        "key": 1000,
        "prompt": "Write a 300+ word summary of the wikipedia page. Do not use any commas and highlight at least 3 sections.",
        "instruction_id_list": ["punctuation:no_comma", "detectable_format:number_highlighted_sections", "length_constraints:number_words"],
        "kwargs": [{}, {"num_highlights": 3}, {"relation": "at least", "num_words": 300}],
    },
    {
        "key": 1001,
        "prompt": "I am planning a trip. Your answer should be in lowercase and end with 'Is there anything else I can help with?'",
        "instruction_id_list": ["change_case:english_lowercase", "startend:end_checker"],
        "kwargs": [
            # Some copies pad every kwargs dict with nulls for unused names.
            {"num_words": None, "relation": None},
            {"end_phrase": "Is there anything else I can help with?", "num_words": None},
        ],
    },
    {
        "key": 1002,
        "prompt": "Repeat then answer.",
        "instruction_id_list": ["combination:repeat_prompt", "language:response_language", "keywords:letter_frequency"],
        "kwargs": [
            {"prompt_to_repeat": "Write a poem."},
            {"language": "en"},
            {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
        ],
    },
]  # fmt: skip


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    return path


def test_read_ifeval_maps_ids_and_kwargs(tmp_path: Path) -> None:
    rows = read_ifeval(_write_jsonl(tmp_path / "input.jsonl", IFEVAL_ROWS))
    assert [r.key for r in rows] == [1000, 1001, 1002]
    constraints = rows[0].constraints()
    assert [c.id for c in constraints] == IFEVAL_ROWS[0]["instruction_id_list"]
    assert constraints[2].params == {"relation": "at least", "num_words": 300}
    end = rows[1].constraints()[1]
    assert end.params == {"end_phrase": "Is there anything else I can help with?"}
    assert rows[2].constraints()[0].params["prompt_to_repeat"] == "Write a poem."

    out = tmp_path / "out.jsonl"
    write_ifeval(out, rows)
    assert read_ifeval(out) == rows
    assert json.loads(out.read_text().splitlines()[0]) == IFEVAL_ROWS[0]


def test_read_ifeval_unknown_id_is_a_clear_error(tmp_path: Path) -> None:
    bad = dict(
        IFEVAL_ROWS[0], key=7, instruction_id_list=["detectable_format:made_up"], kwargs=[{}]
    )
    path = _write_jsonl(tmp_path / "bad.jsonl", [IFEVAL_ROWS[1], bad])
    with pytest.raises(
        ValueError,
        match=r"bad\.jsonl:2: row 7: unknown IFEval instruction id 'detectable_format:made_up'",
    ):
        read_ifeval(path)
    rows = read_ifeval(path, validate=False)  # a caller may skip rows it cannot check
    with pytest.raises(ValueError, match="unknown IFEval instruction id"):
        rows[1].constraints()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "JSON object"),
        ('{"key": 1, "prompt": "p"}', "missing field"),
        (
            '{"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []}',
            "1 instruction ids but 0 kwargs",
        ),
        (
            '{"key": 1, "prompt": "p", "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 5}]}',
            "missing parameter",
        ),
        (
            '{"key": 1, "prompt": "p", "instruction_id_list": ["language:response_language"], "kwargs": [{"language": "klingon"}]}',
            "not a language langdetect tells apart",
        ),
    ],
)
def test_read_ifeval_bad_rows(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_ifeval(path)


def test_from_ifeval_and_back() -> None:
    c = from_ifeval(
        "keywords:frequency", {"keyword": "rain", "frequency": 2, "relation": "at least"}
    )
    assert to_ifeval(c) == (
        "keywords:frequency",
        {"keyword": "rain", "frequency": 2, "relation": "at least"},
    )
    assert from_ifeval("punctuation:no_comma", None) == Constraint("punctuation:no_comma")
    with pytest.raises(ValueError, match="unknown IFEval instruction id"):
        from_ifeval("punctuation:no_semicolon", {})
    with pytest.raises(ValueError, match=r"keywords:frequency.*relation"):
        from_ifeval(
            "keywords:frequency", {"keyword": "rain", "frequency": 2, "relation": "more than"}
        )
    row = IFEvalRow.from_constraints(5, "p", [c])
    assert row.to_dict()["instruction_id_list"] == ["keywords:frequency"]


def test_score_rows_and_accuracy(tmp_path: Path) -> None:
    rows = read_ifeval(_write_jsonl(tmp_path / "input.jsonl", IFEVAL_ROWS[1:]))
    good = score_row(
        rows[0], "sure thing.\nvisit the coast. is there anything else i can help with?"
    )
    assert good.prompt_strict and good.prompt_loose
    chatty = score_row(
        rows[0], "Sure thing!\nvisit the coast. is there anything else i can help with?"
    )
    assert not chatty.prompt_strict and chatty.prompt_loose
    assert [r.passed for r in chatty.strict] == [False, True]
    scores = accuracy([good, chatty])
    assert scores["prompt_strict"] == 0.5 and scores["instruction_strict"] == 0.75
    assert scores["prompt_loose"] == 1.0 and scores["instruction_loose"] == 1.0
    assert accuracy([]) == {
        "prompt_strict": 0.0,
        "instruction_strict": 0.0,
        "prompt_loose": 0.0,
        "instruction_loose": 0.0,
    }
