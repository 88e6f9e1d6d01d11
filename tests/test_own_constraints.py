"""The project's own constraint types (agents/constraints/style, markup, content): a table
of edge cases per checker in English and Chinese, their samplers' values, the
combinations they rule out, and the sentences they read."""

from __future__ import annotations

from random import Random
from typing import Any

import pytest

from evoinstruct.agents.constraints import (
    REGISTRY,
    Constraint,
    describe,
    find_conflicts,
    incompatible,
    sample_constraint,
    sample_constraints,
    sampleable,
)
from evoinstruct.agents.constraints.text import sentence_lines

OWN_FAMILIES = ("style:", "markup:", "content:")
OWN_TYPES = sorted(t for t in REGISTRY if t.startswith(OWN_FAMILIES))
EN_TASK = "Write a note for my neighbour explaining how to water my vegetable garden."
ZH_TASK = "给邻居写一张便条，说明怎样给我家的菜园浇水。"

MAX5 = {"max_sentence_words": 5}
MAX10 = {"max_sentence_words": 10}
Q1 = {"num_questions": 1}
Q2 = {"num_questions": 2}
GARDEN = {"keyword": "garden"}
HUAYUAN = {"keyword": "花园"}
SECTION = {"marker": "§"}
ARROW = {"marker": "=>"}
TRIANGLE = {"marker": "▶"}
H2 = {"num_headings": 2}
SUMMARY = {"label": "Summary:"}
ZONGJIE = {"label": "总结："}
P1 = {"num_parentheticals": 1}
N2 = {"num_numbers": 2}
N3 = {"num_numbers": 3}
ISO = {"date_format": "YYYY-MM-DD"}
DMY = {"date_format": "DD/MM/YYYY"}
MDY = {"date_format": "Month D, YYYY"}
ZH_DATE = {"date_format": "YYYY年M月D日"}
SPROUT2 = {"emoji": "🌱", "num_emoji": 2}

# (constraint id, params, language of the response, response, should pass)
OWN_CASES: list[tuple[str, dict[str, Any], str, str, bool]] = [
    # --- style:max_sentence_words: a line break ends a sentence; markdown prefixes and code are left out
    ("style:max_sentence_words", MAX5, "en", "Short one. Another short one.", True),
    ("style:max_sentence_words", MAX5, "en", "This sentence has far too many words in it.", False),
    ("style:max_sentence_words", MAX5, "en", "- water the plants daily\n- check the soil every morning", True),
    ("style:max_sentence_words", MAX5, "en", "## Watering guide for the summer months\nWater daily.", False),
    ("style:max_sentence_words", MAX5, "en", "1. Water the plants well today.", True),
    ("style:max_sentence_words", MAX5, "en", "Don't over-water it.", True),  # \w+ words: don, t, over, water, it
    ("style:max_sentence_words", MAX5, "en", "Don't over-water it now.", False),
    ("style:max_sentence_words", MAX5, "en", "Dr. Smith waters the plants.", True),  # Punkt keeps "Dr." inside
    ("style:max_sentence_words", MAX5, "en", "Run this.\n```\nfor i in range(10): print(i, i, i, i)\n```", True),
    ("style:max_sentence_words", MAX5, "en", "***", False),
    ("style:max_sentence_words", MAX10, "zh", "潮水上涨了。海鸥在叫。", True),
    ("style:max_sentence_words", MAX10, "zh", "今天的潮水涨得特别高而且很快。", False),
    ("style:max_sentence_words", MAX10, "zh", "潮水上涨，海鸥在叫，风很大。", False),  # a comma ends no sentence
    ("style:max_sentence_words", MAX10, "zh", "潮水上涨，海鸥在叫。\n风很大。", True),
    # --- style:question_count: sentences ending in ? or ？, a run such as ?! included
    ("style:question_count", Q2, "en", "Why water? When? Water daily.", True),
    ("style:question_count", Q2, "en", "Why water? Water daily.", False),
    ("style:question_count", Q2, "en", "Really?! Yes. Why?", True),
    ("style:question_count", Q2, "en", "## Why water?\nBecause roots dry out. Is that all?", True),
    ("style:question_count", Q1, "en", "**Why water?**\nBecause.", True),
    ("style:question_count", Q1, "en", "See example.com/?q=1 for more.", False),
    ("style:question_count", Q1, "en", "Ask (why?) and then: does it rain?", False),  # two questions
    ("style:question_count", Q2, "zh", "为什么要浇水？什么时候浇？每天浇。", True),
    ("style:question_count", Q2, "zh", "为什么要浇水？每天浇。", False),
    ("style:question_count", Q1, "zh", "为什么要浇水?每天浇。", True),  # a half-width ? before Chinese ends one too
    ("style:question_count", Q1, "zh", "要浇水吗。每天浇。", False),  # a question needs its mark
    # --- style:varied_openings
    ("style:varied_openings", {}, "en", "The tide rose. A gull cried. The wind fell.", True),
    ("style:varied_openings", {}, "en", "The tide rose. The gull cried.", False),
    ("style:varied_openings", {}, "en", "the tide rose. The gull cried.", False),
    ("style:varied_openings", {}, "en", "- The sun.\n- The moon.", False),  # bullet marks are no word
    ("style:varied_openings", {}, "en", "1. The sun.\n2. The moon.", False),  # nor list numbers
    ("style:varied_openings", {}, "en", "Only one sentence here.", True),
    ("style:varied_openings", {}, "en", "I water. Then I weed.", True),
    ("style:varied_openings", {}, "zh", "我去浇水。我去除草。", False),
    ("style:varied_openings", {}, "zh", "我去浇水。然后除草。", True),
    ("style:varied_openings", {}, "zh", "Python很好用。Python也很快。", False),
    # --- style:keyword_bookends: IFEval's sentences (a line break ends none), keywords as keywords:existence finds them
    ("style:keyword_bookends", GARDEN, "en", "My garden is small. I water it. The garden thrives.", True),
    ("style:keyword_bookends", GARDEN, "en", "My garden is small. I water it.", False),
    ("style:keyword_bookends", GARDEN, "en", "I water it. The garden thrives.", False),
    ("style:keyword_bookends", GARDEN, "en", "Gardens need care. Water daily. Every GARDEN thrives.", True),
    ("style:keyword_bookends", GARDEN, "en", "The garden is quiet.", True),  # one sentence is first and last
    ("style:keyword_bookends", GARDEN, "en", "# Garden notes\nWater it daily. Love your garden.", True),
    ("style:keyword_bookends", GARDEN, "en", "The garden is fine.\n\nBest,\nAnna", False),
    ("style:keyword_bookends", HUAYUAN, "zh", "花园很美。我每天浇水。花园开满了花。", True),
    ("style:keyword_bookends", HUAYUAN, "zh", "花园很美。我每天浇水。", False),
    # --- markup:paragraph_marker: paragraphs between blank lines or divider lines
    ("markup:paragraph_marker", SECTION, "en", "§ One.\n\n§ Two.", True),
    ("markup:paragraph_marker", SECTION, "en", "§ One.\n\nTwo.", False),
    ("markup:paragraph_marker", SECTION, "en", "§ One.\nstill one.\n\n§ Two.", True),
    ("markup:paragraph_marker", SECTION, "en", "§ One.\n***\n§ Two.", True),
    ("markup:paragraph_marker", SECTION, "en", "§ One.\n***\nTwo.", False),
    ("markup:paragraph_marker", SECTION, "en", "  § Indented.\n\n§ Two.", True),
    ("markup:paragraph_marker", SECTION, "en", "One § in the middle.", False),
    ("markup:paragraph_marker", SECTION, "en", "***", False),
    ("markup:paragraph_marker", ARROW, "en", "=>One.\n\n=> Two.", True),
    ("markup:paragraph_marker", TRIANGLE, "zh", "▶ 第一段。\n\n▶ 第二段。", True),
    ("markup:paragraph_marker", TRIANGLE, "zh", "▶ 第一段。\n\n第二段。", False),
    # --- markup:bullet_periods: at least two "- * + •" bullets, each ending in one period
    ("markup:bullet_periods", {}, "en", "- One.\n- Two.", True),
    ("markup:bullet_periods", {}, "en", "- One.\n- Two", False),
    ("markup:bullet_periods", {}, "en", "- One.", False),
    ("markup:bullet_periods", {}, "en", "* One.\n+ Two.\n• Three.", True),
    ("markup:bullet_periods", {}, "en", "- **Bold point.**\n- Plain point.", True),
    ("markup:bullet_periods", {}, "en", "- One...\n- Two.", False),
    ("markup:bullet_periods", {}, "en", "- One (see below).\n- Two.", True),
    ("markup:bullet_periods", {}, "en", "- Why water?\n- Two.", False),
    ("markup:bullet_periods", {}, "en", "Intro\n***\n-5°C tonight\n- One.\n- Two.", True),
    ("markup:bullet_periods", {}, "zh", "- 第一点。\n- 第二点。", True),
    ("markup:bullet_periods", {}, "zh", "- 第一点。\n- 第二点", False),
    ("markup:bullet_periods", {}, "zh", "- 第一点．\n- 第二点.", True),
    # --- markup:heading_count: markdown "#" lines outside code fences
    ("markup:heading_count", H2, "en", "# A\ntext\n## B\ntext", True),
    ("markup:heading_count", H2, "en", "# A\n## B\n### C", False),
    ("markup:heading_count", H2, "en", "#hashtag\n# A\n# B", True),
    ("markup:heading_count", H2, "en", "# A\n```\n# comment\n```\n# B", True),
    ("markup:heading_count", H2, "en", "# A\n    # code\n# C", True),
    ("markup:heading_count", H2, "en", "# A\n####### seven", False),
    ("markup:heading_count", H2, "zh", "## 第一部分\n内容。\n## 第二部分\n内容。", True),
    ("markup:heading_count", H2, "zh", "## 第一部分\n内容。", False),
    # --- markup:label_line: a line opening with the label and going on
    ("markup:label_line", SUMMARY, "en", "Text.\nSummary: water daily.", True),
    ("markup:label_line", SUMMARY, "en", "Text.\nSummary:\nwater daily.", False),
    ("markup:label_line", SUMMARY, "en", "Text.\n**Summary:** water daily.", True),
    ("markup:label_line", SUMMARY, "en", "Text.\n- Summary: water daily.", True),
    ("markup:label_line", SUMMARY, "en", "Text. Summary: water daily.", False),
    ("markup:label_line", SUMMARY, "en", "SUMMARY: water daily.", True),
    ("markup:label_line", SUMMARY, "en", "Summary: !!", False),
    ("markup:label_line", ZONGJIE, "zh", "正文。\n总结：每天浇水。", True),
    ("markup:label_line", ZONGJIE, "zh", "正文。\n总结:每天浇水。", True),  # half-width colon
    ("markup:label_line", ZONGJIE, "zh", "正文。\n总结：", False),
    ("markup:label_line", ZONGJIE, "zh", "正文。总结：每天浇水。", False),
    # --- markup:parentheses: innermost pairs on a line with a letter inside
    ("markup:parentheses", P1, "en", "Water daily (in the morning).", True),
    ("markup:parentheses", P1, "en", "Water daily (morning) and weed (weekly).", False),
    ("markup:parentheses", P1, "en", "1) water (daily).", True),
    ("markup:parentheses", P1, "en", "See [the guide](http://x.org) (free).", True),
    ("markup:parentheses", P1, "en", "Values (1) and (2).", False),
    ("markup:parentheses", P1, "en", "Nested (outer (inner) text).", True),
    ("markup:parentheses", P1, "en", "Water (in the\nmorning).", False),
    ("markup:parentheses", P1, "zh", "每天浇水（早上）。", True),
    ("markup:parentheses", P1, "zh", "每天浇水(早上)。", True),
    ("markup:parentheses", P1, "zh", "每天浇水（早上）和（晚上）。", False),
    # --- content:distinct_numbers: digit runs by value; list numbering left out
    ("content:distinct_numbers", N3, "en", "Water 2 times, 3 days, 5 minutes.", True),
    ("content:distinct_numbers", N3, "en", "Water 2 times, 2 days, 3 minutes.", False),
    ("content:distinct_numbers", N3, "en", "1. Water 2 L.\n2. Wait 3 days.\n3. Check.", False),
    ("content:distinct_numbers", N2, "en", "It costs 1,200 or 1200 dollars, 2.50 or 2.5.", True),
    ("content:distinct_numbers", N3, "en", "It costs 1,200 or 1200 dollars, 2.50 or 2.5.", False),
    ("content:distinct_numbers", N3, "en", "On 2024-05-01 at 9:30.", True),
    ("content:distinct_numbers", N2, "en", "Two or three times.", False),
    ("content:distinct_numbers", N3, "zh", "浇水２次，等3天，施肥5克。", True),
    ("content:distinct_numbers", N2, "zh", "浇水三次，等五天。", False),
    ("content:distinct_numbers", N3, "zh", "分别是100，200，300。", True),
    # --- content:date_format: a real date in the format asked
    ("content:date_format", ISO, "en", "Plant on 2024-03-15.", True),
    ("content:date_format", ISO, "en", "Plant on 2024-3-15.", False),
    ("content:date_format", ISO, "en", "Plant on 2024-02-30.", False),
    ("content:date_format", ISO, "en", "Start 2024-03-15T10:00.", True),
    ("content:date_format", ISO, "en", "Code 12024-03-150.", False),
    ("content:date_format", DMY, "en", "Due 15/03/2024.", True),
    ("content:date_format", DMY, "en", "Due 03/15/2024.", False),
    ("content:date_format", DMY, "en", "Due 5/3/2024.", False),
    ("content:date_format", MDY, "en", "Since March 5, 2024.", True),
    ("content:date_format", MDY, "en", "since march 5, 2024", True),
    ("content:date_format", MDY, "en", "Since March 5 2024.", False),
    ("content:date_format", MDY, "en", "Since Feb 5, 2024.", False),
    ("content:date_format", MDY, "en", "Since February 30, 2024.", False),
    ("content:date_format", ZH_DATE, "zh", "2024年3月15日播种。", True),
    ("content:date_format", ZH_DATE, "zh", "2024 年 3 月 15 日播种。", True),
    ("content:date_format", ZH_DATE, "zh", "２０２４年３月１５日播种。", True),
    ("content:date_format", ZH_DATE, "zh", "2024年2月30日播种。", False),
    ("content:date_format", ZH_DATE, "zh", "二〇二四年三月十五日播种。", False),
    ("content:date_format", ISO, "zh", "在2024-03-15播种。", True),
    ("content:date_format", ISO, "zh", "在2024年3月15日播种。", False),
    # --- content:emoji_count: by code point, a variation selector after it or not
    ("content:emoji_count", SPROUT2, "en", "Grow 🌱 and 🌱.", True),
    ("content:emoji_count", SPROUT2, "en", "Grow 🌱.", False),
    ("content:emoji_count", SPROUT2, "en", "🌱🌱🌱", False),
    ("content:emoji_count", SPROUT2, "en", "Grow \U0001f331\ufe0f and 🌱", True),
    ("content:emoji_count", SPROUT2, "en", "🌱🌱🌿", True),
    ("content:emoji_count", SPROUT2, "zh", "种下🌱，看它长大🌱。", True),
    ("content:emoji_count", SPROUT2, "zh", "种下🌿，看它长大。", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cid", "params", "lang", "response", "expected"),
    OWN_CASES,
    ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(OWN_CASES)],
)
def test_own_checker_table(
    cid: str, params: dict[str, Any], lang: str, response: str, expected: bool
) -> None:
    result = Constraint(cid, params).check(response)
    assert result.passed is expected, result.reason
    assert result.reason and len(result.reason) < 160


def test_the_table_covers_every_own_type_both_ways_in_both_languages() -> None:
    assert 10 <= len(OWN_TYPES) <= 14
    seen: dict[tuple[str, str], set[bool]] = {}
    for cid, _, lang, _, expected in OWN_CASES:
        seen.setdefault((cid, lang), set()).add(expected)
    for cid in OWN_TYPES:
        for lang in ("en", "zh"):
            assert seen.get((cid, lang)) == {True, False}, (cid, lang)


def test_sentence_lines_end_at_line_breaks_and_drop_markup() -> None:
    text = "## Plan\n- water daily\n1. Weed. Then rest.\n***\n```\nx = 1\n```\n潮水上涨?海鸥在叫。"
    assert sentence_lines(text) == [
        "Plan", "water daily", "Weed.", "Then rest.", "潮水上涨？", "海鸥在叫。",
    ]  # fmt: skip


# --- samplers: natural values, in both languages ------------------------------------------
@pytest.mark.parametrize("language", ["en", "zh"])
def test_own_types_are_sampled_with_natural_values(language: str) -> None:
    task = EN_TASK if language == "en" else ZH_TASK
    ids = {t.id for t in sampleable(language, task)}
    assert set(OWN_TYPES) <= ids
    rng = Random(language)
    for cid in OWN_TYPES:
        drawn = [sample_constraint(cid, rng, language, task) for _ in range(40)]
        params = [c.params for c in drawn if c is not None]
        assert len(params) == 40, cid
        for p in params:
            Constraint(cid, p)  # validates
            assert describe(Constraint(cid, p), language)
        values = {k: {p[k] for p in params} for k in params[0]}
        for name, seen in values.items():
            if isinstance(next(iter(seen)), int):
                assert min(seen) >= 1 and max(seen) <= 40, (cid, name, seen)
            assert len(seen) >= 2 or name == "keyword", (cid, name, seen)
    zh_formats = {
        sample_constraint("content:date_format", Random(i), "zh").params["date_format"]
        for i in range(30)
    }
    if language == "zh":
        assert zh_formats == {"YYYY-MM-DD", "YYYY年M月D日"}


def test_bookends_mostly_take_a_word_of_the_task() -> None:
    rng = Random(3)
    words = [
        sample_constraint("style:keyword_bookends", rng, "en", EN_TASK).params["keyword"]
        for _ in range(50)
    ]
    from_task = sum(w in EN_TASK.lower() for w in words)
    assert 30 <= from_task < 50


# --- what cannot go together -------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("content:date_format", MDY), ("punctuation:no_comma", {})),  # its comma
        (
            ("style:keyword_bookends", GARDEN),
            ("startend:end_checker", {"end_phrase": "That is all."}),
        ),
        (("markup:paragraph_marker", SECTION), ("startend:quotation", {})),
        (
            ("markup:paragraph_marker", SECTION),
            ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
        ),
        (("markup:bullet_periods", {}), ("detectable_format:json_format", {})),
        (
            ("markup:heading_count", H2),
            (
                "length_constraints:nth_paragraph_first_word",
                {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "first"},
            ),
        ),
        (
            ("style:question_count", Q1),
            ("combination:repeat_prompt", {"prompt_to_repeat": "Why? How? When?"}),
        ),
        (
            ("style:max_sentence_words", MAX5),
            (
                "startend:end_checker",
                {"end_phrase": "Let me know if you have additional questions."},
            ),
        ),
        (("markup:parentheses", P1), ("keywords:existence", {"keywords": ["(a) b", "(c) d"]})),
        (("content:emoji_count", SPROUT2), ("startend:end_checker", {"end_phrase": "🌱🌱🌱"})),
        (
            ("style:varied_openings", {}),
            ("combination:repeat_prompt", {"prompt_to_repeat": "I cook. I clean."}),
        ),
    ],
)
def test_incompatible_pairs_are_never_drawn_together(
    a: tuple[str, dict[str, Any]], b: tuple[str, dict[str, Any]]
) -> None:
    assert incompatible(Constraint(*a), Constraint(*b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("content:date_format", ISO), ("punctuation:no_comma", {})),
        (
            ("style:question_count", Q1),
            ("startend:end_checker", {"end_phrase": "Any other questions?"}),
        ),
        (
            ("markup:bullet_periods", {}),
            ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
        ),
        (("markup:label_line", SUMMARY), ("change_case:english_lowercase", {})),
        (("content:date_format", MDY), ("change_case:english_capital", {})),
    ],
)
def test_compatible_pairs_stay_compatible(
    a: tuple[str, dict[str, Any]], b: tuple[str, dict[str, Any]]
) -> None:
    assert not incompatible(Constraint(*a), Constraint(*b))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_sets_with_own_types_are_compatible(language: str) -> None:
    task = EN_TASK if language == "en" else ZH_TASK
    rng = Random(11)
    for _ in range(200):
        first = rng.choice(OWN_TYPES)
        one = sample_constraint(first, rng, language, task)
        assert one is not None
        picks = sample_constraints(rng, language, 2, task, existing=[one])
        assert find_conflicts([one, *picks]) == []
