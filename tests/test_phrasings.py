"""Constraint phrasings: enough of them, each meaning what its type's checker checks, in both
languages; the split between training and the suite is disjoint, as text and as data."""

from __future__ import annotations

import re
from collections import Counter
from random import Random
from typing import Any

import pytest

from evoinstruct.agents.constraints import REGISTRY, Constraint, sample_constraint
from evoinstruct.agents.constraints.phrasing import (
    LAST,
    SUITE,
    TRAIN,
    Phrasing,
    PhrasingError,
    all_phrasings,
    canonical,
    layout,
    parse_phrasings,
    phrasings_for,
    render_prompt,
)
from evoinstruct.agents.constraints.registry import render_value
from evoinstruct.agents.constraints.split import (
    DEFAULT_HELD_OUT,
    ConstraintSplit,
    HeldOutConfig,
    default_split,
)
from evoinstruct.agents.evolver import EvolverConfig
from evoinstruct.agents.textstats import find_phrase
from evoinstruct.text.rules import normalize

TASK = {
    "en": "I keep a small vegetable garden behind the house. Write a note for my neighbour "
    "explaining how to water it while I am away.",
    "zh": "我家后面有一个小菜园。请给邻居写一张便条，说明我不在时怎样给菜园浇水。",
}
SAMPLEABLE = sorted(t.id for t in REGISTRY.values() if t.languages)


# --- enough phrasings, well formed --------------------------------------------------------
@pytest.mark.parametrize("type_id", SAMPLEABLE)
def test_every_type_has_several_phrasings_per_language(type_id: str) -> None:
    split = default_split()
    for language, least in (("en", 7), ("zh", 5)):
        found = phrasings_for(type_id, language)
        assert len(found) >= least, (type_id, language)
        splits = Counter(p.split for p in found)
        assert splits[TRAIN] >= (4 if language == "en" else 3)
        assert splits[SUITE] >= 2
        assert canonical(type_id, language) is not None
        if type_id not in split.held_out_types:
            assert split.training_phrasings(type_id, language)
            assert split.suite_phrasings(type_id, language)
        # Varied in shape, not one sentence with synonyms: at least three openings.
        openings = {normalize(p.text)[:4] for p in found}
        assert len(openings) >= 3, (type_id, language)


def test_phrasing_ids_are_unique_and_positions_vary() -> None:
    phrasings = all_phrasings()
    assert len({p.id for p in phrasings}) == len(phrasings)
    positions = Counter(a for p in phrasings for a in p.at)
    assert {"before", "after", "between"} <= set(positions)
    assert all(p.at == ("after",) for p in phrasings if p.type_id == LAST)


def test_a_bad_phrasing_file_names_the_file_and_the_entry() -> None:
    cases = {
        '["no_such:type"]\na = { text = "x" }': "not a registered constraint type",
        '["punctuation:no_comma"]\na = { text = "x", split = "dev" }': "split must be",
        '["punctuation:no_comma"]\na = { text = "x", at = ["above"] }': "at must be",
        '["punctuation:no_comma"]\na = { text = "x", tone = "dry" }': "unknown field",
        '["length_constraints:number_words"]\na = { text = "Use {num_words} words." }': "relation",
        '["length_constraints:number_words"]\na = { text = "{relation} {num_words} {x}" }': "unknown parameter",
        '["combination:repeat_prompt"]\na = { text = "Repeat it.", at = ["before"] }': "always follows",
        '["punctuation:no_comma"]\na = { text = "a {b" }': "literal braces",
    }  # fmt: skip
    for text, message in cases.items():
        with pytest.raises(PhrasingError, match=re.escape(message)) as info:
            parse_phrasings(text, "en", "prompts/phrasings/en.toml")
        assert str(info.value).startswith("prompts/phrasings/en.toml: [")


# --- each phrasing means what the checker checks ------------------------------------------
# Words a sentence of each type must use to say what its checker tests, per language.
CUES: dict[str, dict[str, list[str]]] = {
    "length_constraints:number_words": {"en": [r"\bwords\b"], "zh": ["字"]},
    "length_constraints:number_characters": {"en": ["character", "space"], "zh": ["字符", "空格"]},
    "length_constraints:number_sentences": {"en": ["sentence"], "zh": ["句"]},
    "length_constraints:number_paragraphs": {"en": ["paragraph", r"\*\*\*"], "zh": ["段", r"\*\*\*"]},
    "length_constraints:nth_paragraph_first_word": {
        "en": ["paragraph", "blank|empty"], "zh": ["段", "空"],
    },
    "keywords:existence": {"en": ["include|use|mention|contain|keyword|work"], "zh": ["包含|用|提到|关键词"]},
    "keywords:frequency": {"en": [r"\btimes\b"], "zh": ["次"]},
    "keywords:forbidden_words": {"en": ["not|avoid|none|banned|without|don't"], "zh": ["不|避免|禁|别"]},
    "keywords:letter_frequency": {"en": ["letter", "case|capital|upper"], "zh": ["字母", "大小写"]},
    "change_case:english_lowercase": {"en": ["lower ?case|no (capital|uppercase)|without any capital"], "zh": ["小写"]},
    "change_case:english_capital": {"en": ["capital|upper ?case|ALL CAPS"], "zh": ["大写"]},
    "change_case:capital_word_frequency": {"en": ["words", "capital|CAPS|uppercase"], "zh": ["大写", "单词"]},
    "punctuation:no_comma": {"en": ["comma"], "zh": ["逗号"]},
    "detectable_format:json_format": {"en": ["JSON"], "zh": ["JSON"]},
    "detectable_format:number_bullet_lists": {"en": ["bullet", r"\* |- |\"-\""], "zh": ["要点|列表", r"\* |- "]},
    "detectable_format:numbered_list": {"en": ["number"], "zh": ["编号"]},
    "detectable_format:number_highlighted_sections": {"en": [r"\*\w"], "zh": [r"\*\w"]},
    "detectable_format:multiple_sections": {"en": ["section|part"], "zh": ["部分"]},
    "detectable_format:title": {"en": ["<<", "title"], "zh": ["<<", "标题"]},
    "detectable_content:number_placeholders": {"en": ["placeholder", r"\["], "zh": ["占位", r"\["]},
    "detectable_content:postscript": {"en": ["postscript"], "zh": ["附言"]},
    "detectable_format:constrained_response": {
        "en": [r"My answer is yes\.", r"My answer is no\.", r"My answer is maybe\."],
        "zh": [r"My answer is yes\.", r"My answer is no\.", r"My answer is maybe\."],
    },
    "combination:two_responses": {"en": [r"\*{6}", "two"], "zh": [r"\*{6}", "两"]},
    "combination:repeat_prompt": {"en": ["repeat|copy|restat|echo"], "zh": ["复述|重复|抄写"]},
    "startend:start_checker": {"en": ["start|begin|open|first"], "zh": ["开头|开始|起头"]},
    "startend:end_checker": {"en": ["end|finish|last|conclude|final|sign off|closing"], "zh": ["结尾|结束|收尾|最后"]},
    "startend:quotation": {"en": ["double quot"], "zh": ["双引号"]},
    "language:response_language": {"en": [r"language|in \{language\}"], "zh": [r"用\{language\}|语言"]},
    "style:max_sentence_words": {"en": ["sentence", r"\bwords\b"], "zh": ["句", "字"]},
    "style:question_count": {"en": ["question"], "zh": ["问"]},
    "style:varied_openings": {"en": ["sentence", "same|different", "word|open|start|begin"], "zh": ["句", "开头|起头|第一个字", "同"]},
    "style:keyword_bookends": {"en": ["first|open", "last|final|clos"], "zh": ["第一句|开头", "最后一句|结尾"]},
    "markup:paragraph_marker": {"en": ["paragraph"], "zh": ["段"]},
    "markup:bullet_periods": {"en": ["bullet", "period|full stop", "two"], "zh": ["列表|要点", "句号", "两"]},
    "markup:heading_count": {"en": ["heading", "markdown|#"], "zh": ["标题", "Markdown|#"]},
    "markup:label_line": {"en": ["line", "start|begin|open|followed"], "zh": ["一行", "开头"]},
    "markup:parentheses": {"en": ["parenthe|round brackets"], "zh": ["括号"]},
    "content:distinct_numbers": {"en": ["number|figure", "digit"], "zh": ["数", "阿拉伯数字"]},
    "content:date_format": {"en": ["date"], "zh": ["日期"]},
    "content:emoji_count": {"en": ["emoji", "time"], "zh": ["表情", "次"]},
}  # fmt: skip

DATES = {"YYYY-MM-DD": "2024-03-15", "DD/MM/YYYY": "15/03/2024", "Month D, YYYY": "March 15, 2024", "YYYY年M月D日": "2024年3月15日"}  # fmt: skip


def _filler(language: str, n: int, unit: str = "word") -> str:
    """n words (or n sentences) of plain text in `language`."""
    if unit == "sentence":
        return (" " if language == "en" else "").join(
            ["The tide rose." if language == "en" else "潮水上涨。"] * n
        )
    return " ".join(["calm"] * n) if language == "en" else "好" * n


def _count_for(relation: str, target: int, passing: bool) -> int:
    """A count that meets (or breaks) `relation target`."""
    if relation == "less than":
        return target - 1 if passing else target
    return target if passing else target - 1


def built(c: Constraint, language: str, passing: bool) -> str:
    """A response built to meet the constraint (or to break it), in `language`."""
    p: dict[str, Any] = c.params
    body = "The garden is quiet today." if language == "en" else "今天花园很安静。"
    nl = "\n\n"
    match c.id:
        case "length_constraints:number_words":
            return _filler(language, _count_for(p["relation"], p["num_words"], passing))
        case "length_constraints:number_characters":
            n = _count_for(p["relation"], p["num_chars"], passing)
            return " ".join("ab" for _ in range(n // 2)) + (" a" if n % 2 else "")
        case "length_constraints:number_sentences":
            n = _count_for(p["relation"], p["num_sentences"], passing)
            return _filler(language, n, "sentence")
        case "length_constraints:number_paragraphs":
            n = p["num_paragraphs"] + (0 if passing else 1)
            return "\n***\n".join([body] * n)
        case "length_constraints:nth_paragraph_first_word":
            paragraphs = [body] * p["num_paragraphs"]
            first = p["first_word"] if passing else ("Zebra" if language == "en" else "斑马")
            paragraphs[p["nth_paragraph"] - 1] = f"{first} {body}"
            return nl.join(paragraphs)
        case "keywords:existence":
            return " ".join(p["keywords"]) + " ok." if passing else "Xyq."
        case "keywords:frequency":
            n = _count_for(p["relation"], p["frequency"], passing)
            return " ".join([p["keyword"]] * n) + " ok."
        case "keywords:forbidden_words":
            return "Xyq." if passing else f"{p['forbidden_words'][0]} here."
        case "keywords:letter_frequency":
            n = _count_for(p["let_relation"], p["let_frequency"], passing)
            return " ".join([p["letter"]] * n) + " 1."
        case "change_case:english_lowercase":
            # IFEval's case rules also ask for an English answer (langdetect, which needs
            # a sentence or two to tell English).
            text = "the garden is quiet today and the birds sing in the old apple trees."
            return text if passing else text.title()
        case "change_case:english_capital":
            text = "the garden is quiet today and the birds sing in the old apple trees."
            return text.upper() if passing else text
        case "change_case:capital_word_frequency":
            n = _count_for(p["capital_relation"], p["capital_frequency"], passing)
            return " ".join(["LOUD"] * n) + " and quiet."
        case "punctuation:no_comma":
            return (
                "No pause here."
                if passing
                else ("Yes, a pause." if language == "en" else "有，停顿。")
            )
        case "detectable_format:json_format":
            return '{"garden": "quiet"}' if passing else "garden: quiet"
        case "detectable_format:number_bullet_lists":
            n = p["num_bullets"] + (0 if passing else 1)
            return "\n".join(f"* point {i}" for i in range(n))
        case "detectable_format:numbered_list":
            n = p["num_items"] + (0 if passing else 1)
            return "\n".join(f"{i + 1}. point" for i in range(n))
        case "detectable_format:number_highlighted_sections":
            n = p["num_highlights"] - (0 if passing else 1)
            return " ".join(["*key*"] * n) + " " + body
        case "detectable_format:multiple_sections":
            n = p["num_sections"] - (0 if passing else 1)
            return nl.join(f"{p['section_spliter']} {i + 1}\n{body}" for i in range(n)) or body
        case "detectable_format:title":
            return f"<<Title>>\n{body}" if passing else body
        case "detectable_content:number_placeholders":
            n = p["num_placeholders"] - (0 if passing else 1)
            return body + " " + " ".join(["[name]"] * n)
        case "detectable_content:postscript":
            return f"{body}\n\n{p['postscript_marker']} more." if passing else body
        case "detectable_format:constrained_response":
            return "My answer is yes." if passing else "Yes."
        case "combination:two_responses":
            return f"{body}\n******\nAnother one." if passing else body
        case "combination:repeat_prompt":
            return f"{p['prompt_to_repeat']}\n\n{body}" if passing else body
        case "startend:start_checker":
            return f"{p['start_phrase']} {body}" if passing else f"{body} {p['start_phrase']}"
        case "startend:end_checker":
            return f"{body} {p['end_phrase']}" if passing else f"{p['end_phrase']} {body}"
        case "startend:quotation":
            return f'"{body}"' if passing else body
        case "language:response_language":
            english = "The garden is quiet today and the river runs slowly past the old mill."
            chinese = "今天花园很安静，河水慢慢流过那座老磨坊，远处的山上还有一点雪。"
            wanted = p["language"] == "en"
            return english if wanted == passing else chinese
    return _built_own(c, language, passing, body)


def _built_own(c: Constraint, language: str, passing: bool, body: str) -> str:
    """The builders of the project's own types (agents/constraints/style, markup, content)."""
    p: dict[str, Any] = c.params
    en = language == "en"
    stop = "." if en else "。"
    match c.id:
        case "style:max_sentence_words":
            return _filler(language, p["max_sentence_words"] + (0 if passing else 1)) + stop
        case "style:question_count":
            n = p["num_questions"] + (0 if passing else 1)
            return ("Why? " if en else "为什么？") * n + body
        case "style:varied_openings":
            if en:
                return "The tide rose. " + ("A gull cried." if passing else "The gull cried.")
            return "潮水上涨。" + ("海鸥在叫。" if passing else "潮水退去。")
        case "style:keyword_bookends":
            kw = p["keyword"]
            first = (f"I see {kw} here. " if en else f"{kw}很好。") if passing else ""
            return (
                first
                + ("Nothing new. " if en else "一切照旧。")
                + (f"I see {kw} again." if en else f"{kw}又来了。")
            )
        case "markup:paragraph_marker":
            second = f"{p['marker']} {body}" if passing else body
            return f"{p['marker']} {body}\n\n{second}"
        case "markup:bullet_periods":
            items = ["One point", "Two points"] if en else ["第一点", "第二点"]
            return "\n".join(
                f"- {item}{stop if passing or i == 0 else ''}" for i, item in enumerate(items)
            )
        case "markup:heading_count":
            n = p["num_headings"] + (0 if passing else 1)
            return "\n\n".join(f"## Part {i + 1}\n{body}" for i in range(n))
        case "markup:label_line":
            rest = (" all good." if en else "一切都好。") if passing else ""
            return f"{body}\n{p['label']}{rest}"
        case "markup:parentheses":
            n = p["num_parentheticals"] + (0 if passing else 1)
            return body + (" (an aside)" if en else "（补充）") * n
        case "content:distinct_numbers":
            n = p["num_numbers"] - (0 if passing else 1)
            return " ".join(str(10 + i) for i in range(n)) + " " + body
        case "content:date_format":
            return f"{body} {DATES[p['date_format']] if passing else '15.03.2024'}"
        case "content:emoji_count":
            return body + p["emoji"] * (p["num_emoji"] + (0 if passing else 1))
    raise AssertionError(f"no response builder for {c.id}")


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("type_id", SAMPLEABLE)
def test_each_phrasing_states_what_its_checker_checks(type_id: str, language: str) -> None:
    """Each sentence names its type's subject (cue words), states every parameter the
    checker reads, and a response built from those values passes while a response built
    to break them fails."""
    rng = Random(f"{type_id}:{language}")
    for phrasing in phrasings_for(type_id, language):
        for cue in CUES[type_id][language]:
            assert re.search(cue, phrasing.text, re.IGNORECASE), (phrasing.id, cue)
        for _ in range(6):
            c = sample_constraint(type_id, rng, language, TASK[language])
            assert c is not None
            sentence = phrasing.render(c.params)
            assert "{" not in sentence.replace("{{", "")
            for param in REGISTRY[type_id].params:
                if param.name == "prompt_to_repeat":
                    continue
                shown = render_value(c.params[param.name], param.kind, language)
                assert shown in sentence, (phrasing.id, param.name, sentence)
            assert c.check(built(c, language, True)).passed, (phrasing.id, c, sentence)
            assert not c.check(built(c, language, False)).passed, (phrasing.id, c, sentence)


def test_no_phrasing_trips_the_evolver_copy_rule() -> None:
    """Elimination rule 4 re-checks a child's whole instruction, sentences included."""
    phrases = [p for ps in EvolverConfig().copy_phrases.values() for p in ps]
    for phrasing in all_phrasings():
        assert find_phrase(phrasing.text, phrases) is None, phrasing.id


# --- the split is disjoint as text --------------------------------------------------------
def _renders(phrasings: list[Phrasing], rng: Random, n: int = 4) -> list[tuple[Phrasing, str]]:
    out = []
    for p in phrasings:
        for _ in range(n):
            c = sample_constraint(p.type_id, rng, p.language, TASK[p.language])
            assert c is not None
            out.append((p, p.render(c.params)))
    return out


def test_every_phrasing_is_found_in_its_own_sentences_and_no_training_sentence_is_held_out() -> (
    None
):
    split = default_split()
    rng = Random(5)
    training = [p for p in all_phrasings() if split.is_training_phrasing(p)]
    held = [p for p in all_phrasings() if not split.is_training_phrasing(p)]
    assert len(held) == len(split.forbidden)
    for p, sentence in _renders(list(all_phrasings()), rng):
        assert p.found_in(normalize(sentence)), (p.id, sentence)
        expected = None if split.is_training_phrasing(p) else "held"
        found = split.violation([f"{TASK[p.language]} {sentence}"])
        assert (found is None) == (expected is None), (p.id, sentence, found)
    # No held-out sentence is a part of a training one, nor the other way round.
    for p, sentence in _renders(training, rng, 2):
        text = normalize(sentence)
        assert not [h.id for h in held if h.language == p.language and h.found_in(text)]
    for h, sentence in _renders(held, rng, 2):
        text = normalize(sentence)
        inside = [p.id for p in training if p.language == h.language and p.found_in(text)]
        assert not inside, (h.id, inside)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_training_prompts_never_look_held_out_and_suite_prompts_always_do(language: str) -> None:
    """Whole prompts as the evolver and the suite write them: up to three sentences
    around a multi-sentence task, in every position."""
    split = default_split()
    rng = Random(language)
    from evoinstruct.agents.constraints import sample_constraints

    training = split.training_choices(language)
    suite_only = {t: s for t in training if (s := split.suite_phrasings(t, language))}
    for _ in range(300):
        picks = sample_constraints(rng, language, rng.randint(1, 3), TASK[language], only=training)
        prompt = render_prompt(TASK[language], layout(picks, language, rng, training), language)
        assert split.violation([prompt]) is None, prompt
        picks = sample_constraints(
            rng, language, rng.randint(1, 3), TASK[language], only=suite_only
        )
        prompt = render_prompt(TASK[language], layout(picks, language, rng, suite_only), language)
        assert (split.violation([prompt]) or "").startswith("suite_phrasing:"), prompt


def test_placing_reads_before_after_and_between_the_task() -> None:
    c = Constraint("punctuation:no_comma")
    rng = Random(0)
    choices = {c.id: [p for p in phrasings_for(c.id, "en") if p.key == "a"]}
    [placed] = layout([c], "en", rng, choices)
    sentence = placed.text()
    task = TASK["en"]
    first, second = task.split(". ", 1)
    cases = {
        "before": f"{sentence} {task}",
        "after": f"{task} {sentence}",
        "between": f"{first}. {sentence} {second}",
    }
    for position, expected in cases.items():
        moved = type(placed)(c, placed.phrasing, position)
        assert render_prompt(task, [moved], "en") == expected
    # One sentence: "between" has nowhere to go but after; several lines: a blank line.
    between = type(placed)(c, placed.phrasing, "between")
    assert render_prompt("Explain tides.", [between], "en") == f"Explain tides. {sentence}"
    assert render_prompt("Fix this:\nx=1", [placed], "en") == f"Fix this:\nx=1\n\n{sentence}"
    zh = Constraint("punctuation:no_comma")
    [placed_zh] = layout([zh], "zh", rng, {zh.id: phrasings_for(zh.id, "zh")[:1]})
    moved = type(placed_zh)(zh, placed_zh.phrasing, "between")
    head, tail = TASK["zh"].split("。", 1)
    assert render_prompt(TASK["zh"], [moved], "zh") == f"{head}。{placed_zh.text()}{tail}"


def test_between_never_lands_inside_a_quoted_passage_or_a_number() -> None:
    c = Constraint("punctuation:no_comma")
    [placed] = layout([c], "en", Random(0), {c.id: phrasings_for(c.id, "en")[:1]})
    between = type(placed)(c, placed.phrasing, "between")
    sentence = placed.text()
    task = (
        'Sum this up for my team: "Survey one found 68.5% want speed. Survey two found the '
        'opposite." Keep the tone neutral.'
    )
    head, tail = task.rsplit(" Keep", 1)
    assert render_prompt(task, [between], "en") == f"{head} {sentence} Keep{tail}"
    quoted_only = 'Translate: "It rains. We stay in."'
    assert render_prompt(quoted_only, [between], "en") == f"{quoted_only} {sentence}"
    zh = Constraint("punctuation:no_comma")
    [placed_zh] = layout([zh], "zh", Random(0), {zh.id: phrasings_for(zh.id, "zh")[:1]})
    between_zh = type(placed_zh)(zh, placed_zh.phrasing, "between")
    task_zh = "请续写：“灯灭了。灯又亮了。”写得紧张一些。"
    expected = f"请续写：“灯灭了。灯又亮了。”{placed_zh.text()}写得紧张一些。"
    assert render_prompt(task_zh, [between_zh], "zh") == expected


def test_repeat_prompt_keeps_the_request_first() -> None:
    rng = Random(1)
    task = TASK["en"]
    repeat = Constraint(LAST, {"prompt_to_repeat": task})
    lower = Constraint("change_case:english_lowercase")
    choices = {t: phrasings_for(t, "en") for t in (LAST, lower.id)}
    for _ in range(20):
        placed = layout([repeat, lower], "en", rng, choices)
        prompt = render_prompt(task, placed, "en")
        assert prompt.startswith(task)
        assert prompt.endswith(placed[0].text())


# --- the split's one definition ------------------------------------------------------------
def test_held_out_types_are_one_per_family_each_with_a_trained_sibling() -> None:
    split = default_split()
    assert len(split.held_out_types) >= 5
    families = Counter(t.split(":")[0] for t in split.held_out_types)
    assert max(families.values()) == 1
    for held, sibling in DEFAULT_HELD_OUT.items():
        assert held.split(":")[0] == sibling.split(":")[0]
        assert sibling not in split.held_out_types
        for language in ("en", "zh"):
            assert split.training_phrasings(held, language) == ()
            assert split.training_phrasings(sibling, language)


def test_the_split_follows_its_config() -> None:
    one = phrasings_for("punctuation:no_comma", "en")[0].id
    split = ConstraintSplit.from_config(HeldOutConfig(types=[], suite_phrasings=[one]))
    assert split.held_out_types == frozenset() and split.suite_only == {one}
    assert split.violation(["Do not use any commas in your response."]) == f"suite_phrasing:{one}"
    assert split.violation(["Note: count every \"x\" regardless of case; there should be at least 3 of them."]) is None  # fmt: skip
    with pytest.raises(ValueError, match="unknown constraint"):
        HeldOutConfig(types=["keywords:nope"])
    with pytest.raises(ValueError, match="unknown phrasing"):
        HeldOutConfig(suite_phrasings=["punctuation:no_comma/en/zz"])


def test_stored_constraints_and_layouts_count_whatever_the_text() -> None:
    split = default_split()
    capital = {"id": "change_case:english_capital", "params": {}}
    assert (
        split.violation(["Plain text."], [capital]) == "held_out_type:change_case:english_capital"
    )
    suite_id = next(iter(sorted(split.suite_only)))
    layout_meta = {"task": "x", "phrasings": [suite_id], "at": ["after"]}
    assert split.violation(["Plain text."], [], layout_meta) == f"suite_phrasing:{suite_id}"
    assert split.violation(["Plain text."], [{"id": "punctuation:no_comma", "params": {}}]) is None
