"""InsTag: the tag prompt, the tag parser's garbage table, normalization, rare tags, the pass."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from evoinstruct.agents.scoring.instag import (
    InsTagConfig,
    normalize_tag,
    parse_tags,
    resolve_rare,
    similarity,
    stem,
    tag_examples,
)
from evoinstruct.models.base import Choice, Failure, Generation
from evoinstruct.prompts.library import PromptLibrary
from tests.conftest_critic import make_example
from tests.doubles import ScriptedModel

EN, ZH = PromptLibrary("en"), PromptLibrary("zh")


@pytest.mark.parametrize(("library", "needle"), [(EN, "at most 4 tags"), (ZH, "最多给出 4 个标签")])
def test_instag_template_golden(library: PromptLibrary, needle: str) -> None:
    text = library.render(
        "instag",
        instruction="Sort the list.",
        input="[3, 1, 2]",
        max_tags=4,
        tag_key="tag",
        explanation_key="explanation",
    )
    for n in (needle, "Sort the list.", "[3, 1, 2]", '"tag"', '"explanation"', "JSON"):
        assert n in text


@pytest.mark.parametrize(
    ("text", "tags", "ok"),
    [
        # clean
        (
            '[{"tag": "math", "explanation": "arithmetic"}, {"tag": "reasoning", "explanation": "x"}]',
            ["math", "reasoning"],
            True,
        ),
        ('[{"tag": "数学计算", "explanation": "需要计算"}]', ["数学计算"], True),
        # noisy
        (
            'Here are the tags:\n```json\n[{"tag": "poetry", "explanation": "a poem"}]\n```\nDone.',
            ["poetry"],
            True,
        ),
        ('{"tags": ["translation", "formal tone"]}', ["translation", "formal tone"], True),
        ('["coding", "", "debugging"]', ["coding", "debugging"], True),
        (
            '[{"标签": "写作", "解释": "写诗"}, {"name": "creativity"}]',
            ["写作", "creativity"],
            True,
        ),
        # truncated (finish_reason "length"): complete objects are recovered
        ('[{"tag": "math", "explanation": "sums"}, {"tag": "logic", "expl', ["math"], True),
        # empty
        ("", [], False),
        ("[]", [], True),
        # wrong format
        ("Tags: math, logic", [], False),
        ('{"tags": "math"}', [], False),
    ],
)
def test_parse_tags_table(text: str, tags: list[str], ok: bool) -> None:
    parsed = parse_tags(text)
    assert [t.tag for t in parsed.tags] == tags
    assert parsed.ok is ok


def test_parse_tags_keeps_explanations() -> None:
    parsed = parse_tags('[{"tag": "math", "explanation": "adds numbers"}]')
    assert parsed.tags[0].explanation == "adds numbers"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("coding", "code"),
        ("codes", "code"),
        ("writing", "write"),
        ("queries", "query"),
        ("classes", "class"),
        ("generation", "generate"),
        ("generating", "generated"),
        ("running", "run"),
        ("planned", "plan"),
    ],
)
def test_stemmer_merges_word_forms(a: str, b: str) -> None:
    assert stem(a) == stem(b)


def test_stemmer_leaves_short_and_non_ascii_words() -> None:
    assert stem("math") == "math" and stem("is") == "is" and stem("数学") == "数学"
    assert stem("analysis") == "analysis"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Code-Generation!", "code generating"),
        ("  Math   Reasoning ", "math_reasoning"),
        ("「数学，计算」", "数学 计算"),
        ("数学计算。", "数学计算"),
        ("ＣＯＤＩＮＧ", "coding"),  # full-width letters fold under NFKC
    ],
)
def test_normalize_tag(a: str, b: str) -> None:
    assert normalize_tag(a) == normalize_tag(b)


def test_normalize_tag_strips_to_empty() -> None:
    assert normalize_tag("!!!") == "" and normalize_tag("。，") == ""


def test_resolve_rare_policies() -> None:
    lists = [["code generat", "python"], ["code gen"], ["python"], ["poetri"]]
    counts = Counter({"code generat": 3, "python": 2, "code gen": 1, "poetri": 1})
    rules = {"min_count": 2, "min_similarity": 0.5}
    merged = resolve_rare(lists, counts, policy="merge", **rules)
    assert merged == [["code generat", "python"], ["code generat"], ["python"], ["poetri"]]
    dropped = resolve_rare(lists, counts, policy="drop", **rules)
    assert dropped == [["code generat", "python"], [], ["python"], []]
    kept = resolve_rare(lists, counts, policy="keep", **rules)
    assert kept == lists


def test_resolve_rare_merges_chinese_tags_too() -> None:
    counts = Counter({"数学计算": 5, "数学计算题": 1})
    resolved = resolve_rare(
        [["数学计算题"]], counts, min_count=2, policy="merge", min_similarity=0.5
    )
    assert resolved == [["数学计算"]]
    assert similarity("数学计算", "数学计算题") > 0.5 > similarity("数学计算", "诗歌写作")


async def test_tag_examples_end_to_end() -> None:
    batch = [
        make_example("e1", "Write Python code that sorts a list."),
        make_example("e2", "用 Python 写代码并解释。"),
        make_example("e3", "Tell me a joke."),
        make_example("e4", "Summarize this."),
        make_example("e5", "Fix this bug."),
    ]
    replies = [
        json.dumps(
            [{"tag": "Code Generation", "explanation": "x"}, {"tag": "Python", "explanation": "y"}]
        ),
        json.dumps(
            [
                {"tag": "code-generating", "explanation": "x"},
                {"tag": "代码解释", "explanation": "说明"},
            ],
            ensure_ascii=False,
        ),
        "I cannot tag this.",
        Generation(
            [Choice('[{"tag": "summarization", "explanation": "s"}, {"tag": "bre', "length")]
        ),
        Failure("rate_limit", "429"),
    ]
    model = ScriptedModel(replies)
    counters: Counter[str] = Counter()
    config = InsTagConfig(enabled=True)
    outcome = await tag_examples(batch, model, ZH, config, counters)
    assert model.batches == [5]
    assert outcome.tags["e1"] == ["cod generat", "python"]
    assert outcome.tags["e2"] == ["cod generat", "代码解释"]
    assert outcome.tags["e4"] == ["summarizat"]
    assert "e3" not in outcome.tags
    by_id = {s.example_id: s for s in outcome.scores}
    assert by_id["e1"].value == 2.0 and json.loads(by_id["e1"].explanation) == [
        "cod generat",
        "python",
    ]
    assert by_id["e3"].value is None and by_id["e3"].raw_output == "I cannot tag this."
    assert [(r.example_id, r.reason) for r in outcome.rejections] == [
        ("e5", "model_failure:rate_limit")
    ]
    assert counters["instag_unparseable"] == 1 and counters["truncated"] == 1


async def test_tagging_keeps_tags_seen_once_in_the_batch() -> None:
    """Rarity is decided at selection, against the pool: one batch would call every tag rare."""
    model = ScriptedModel(['[{"tag": "poems", "explanation": "x"}]'])
    outcome = await tag_examples(
        [make_example("p", "Write a poem.")], model, EN, InsTagConfig(), Counter()
    )
    assert outcome.tags["p"] == ["poem"]
