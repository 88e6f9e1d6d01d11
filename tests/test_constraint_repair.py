"""Programmatic repair: each format type's deterministic rewrite makes its own checker pass,
in English and Chinese, leaves a passing response alone, and `repair_all` orders the
repairs so that combinations pass."""

from __future__ import annotations

import pytest

from evoinstruct.agents.constraints import (
    REGISTRY,
    REPAIR_ORDER,
    Constraint,
    ConstraintType,
    all_passed,
    check_all,
    repair_all,
)
from evoinstruct.agents.constraints.registry import register

LOWER = Constraint("change_case:english_lowercase")
UPPER = Constraint("change_case:english_capital")
QUOTED = Constraint("startend:quotation")
NO_COMMA = Constraint("punctuation:no_comma")
END_EN = Constraint(
    "startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}
)
END_ZH = Constraint("startend:end_checker", {"end_phrase": "还有什么可以帮您的吗？"})
PS_EN = Constraint("detectable_content:postscript", {"postscript_marker": "P.S."})
PS_ZH = Constraint("detectable_content:postscript", {"postscript_marker": "附言"})
REPEAT_EN = Constraint("combination:repeat_prompt", {"prompt_to_repeat": "Explain tides simply."})
REPEAT_ZH = Constraint("combination:repeat_prompt", {"prompt_to_repeat": "请简单解释潮汐。"})

MARKER_EN = Constraint("markup:paragraph_marker", {"marker": "§"})
MARKER_ZH = Constraint("markup:paragraph_marker", {"marker": "▶"})
PERIODS = Constraint("markup:bullet_periods")

REPAIRABLE = {
    "markup:paragraph_marker",
    "markup:bullet_periods",
    "change_case:english_lowercase",
    "change_case:english_capital",
    "startend:quotation",
    "startend:end_checker",
    "detectable_content:postscript",
    "punctuation:no_comma",
    "combination:repeat_prompt",
}


def repair(constraint: Constraint, text: str) -> str:
    fix = constraint.type.repair
    assert fix is not None
    return fix(text, constraint.params)


def test_exactly_the_format_types_have_a_repair_and_a_place_in_the_order() -> None:
    assert {cid for cid, t in REGISTRY.items() if t.repair is not None} == REPAIRABLE
    assert set(REPAIR_ORDER) == REPAIRABLE and len(REPAIR_ORDER) == len(REPAIRABLE)


def test_a_repair_outside_the_order_is_refused() -> None:
    base = REGISTRY["startend:quotation"]
    stray = ConstraintType(
        id="test:stray_repair",
        templates=base.templates,
        params=(),
        languages=base.languages,
        sampler=base.sampler,
        checker=base.checker,
        repair=lambda text, p: text,
    )
    with pytest.raises(ValueError, match="REPAIR_ORDER"):
        register(stray)
    assert "test:stray_repair" not in REGISTRY


# (constraint, response as drawn, response once repaired), English then Chinese for each
# type but the case rules, which ask for English.
CASES: list[tuple[Constraint, str, str]] = [
    (LOWER, "Tides Come From The Moon.", "tides come from the moon."),
    (UPPER, "Tides come from the Moon.", "TIDES COME FROM THE MOON."),
    (QUOTED, "  Tides come from the Moon.\n", '"Tides come from the Moon."'),
    (QUOTED, "潮汐来自月球。", '"潮汐来自月球。"'),
    (
        END_EN,
        "Tides come from the Moon.  \n",
        "Tides come from the Moon.\nIs there anything else I can help with?",
    ),
    (END_ZH, "潮汐来自月球。\n", "潮汐来自月球。\n还有什么可以帮您的吗？"),
    (PS_EN, "Tides come from the Moon.", "Tides come from the Moon.\n\nP.S. I hope this helps."),
    (PS_ZH, "潮汐来自月球的引力。", "潮汐来自月球的引力。\n\n附言：希望对你有帮助。"),
    (
        NO_COMMA,
        "Tides, in short, rise twice a day,twice.\nSome reach 1,200 cm,\nor more.",
        "Tides in short rise twice a day twice.\nSome reach 1200 cm\nor more.",
    ),
    (NO_COMMA, "潮汐来自月球，也与太阳、地球有关。", "潮汐来自月球 也与太阳 地球有关。"),
    (
        REPEAT_EN,
        "Tides come from the Moon.",
        "Explain tides simply.\n\nTides come from the Moon.",
    ),
    (REPEAT_ZH, "潮汐来自月球。", "请简单解释潮汐。\n\n潮汐来自月球。"),
    (
        MARKER_EN,
        "Tides come from the Moon.\n\n  § The Sun helps.\n***\nSpring tides\nare higher.",
        "§ Tides come from the Moon.\n\n  § The Sun helps.\n***\n§ Spring tides\nare higher.",
    ),
    (MARKER_ZH, "潮汐来自月球。\n\n太阳也有影响。", "▶ 潮汐来自月球。\n\n▶ 太阳也有影响。"),
    (
        PERIODS,
        "Tides:\n- rise twice a day,\n- follow the **Moon**\n- end.",
        "Tides:\n- rise twice a day.\n- follow the **Moon.**\n- end.",
    ),
    (
        PERIODS,
        "潮汐：\n- 一天两次；\n- 跟随月球\n* Moon",
        "潮汐：\n- 一天两次。\n- 跟随月球。\n* Moon.",
    ),
]


@pytest.mark.parametrize(("constraint", "drawn", "expected"), CASES)
def test_each_repair_makes_its_own_checker_pass(
    constraint: Constraint, drawn: str, expected: str
) -> None:
    assert not constraint.check(drawn).passed
    fixed = repair(constraint, drawn)
    assert fixed == expected
    assert constraint.check(fixed).passed, constraint.check(fixed).reason
    assert repair(constraint, fixed) == fixed  # a second pass changes nothing
    assert repair_all([constraint], drawn) == (expected, [constraint.id])


@pytest.mark.parametrize(
    ("constraint", "text"),
    [
        (END_EN, "Tides come from the Moon. Is there anything else I can help with?"),
        (END_EN, '"Tides come from the Moon. is there anything else I can help with?"'),
        (END_ZH, "潮汐来自月球。还有什么可以帮您的吗?"),
        (QUOTED, '"Tides come from the Moon."'),
        (QUOTED, "“潮汐来自月球。”"),
        (PS_EN, "Tides come from the Moon.\n\nP. S. The Sun helps too."),
        (PS_ZH, "潮汐来自月球。\n附言：太阳也有影响。"),
        (REPEAT_EN, "explain tides simply.\nTides come from the Moon."),
        (MARKER_EN, "§Tides come from the Moon.\n***\n  § The Sun helps."),
        (PERIODS, "- Tides rise.\n- 潮汐退去。\n- Spring tides (higher)."),
    ],
)
def test_a_response_that_already_passes_is_left_as_it_is(constraint: Constraint, text: str) -> None:
    assert constraint.check(text).passed
    assert repair(constraint, text) == text
    assert repair_all([constraint], text) == (text, [])


@pytest.mark.parametrize("constraint", [LOWER, UPPER])
def test_a_case_repair_leaves_an_answer_in_another_language_alone(constraint: Constraint) -> None:
    # The case rules ask for English (as IFEval's do): no change of case meets them here.
    drawn = "潮汐和 Moon 有关，也和 NASA 的数据一致。"
    assert repair(constraint, drawn) == drawn
    assert not constraint.check(drawn).passed


def test_a_bullet_ending_in_a_question_or_exclamation_mark_is_left_alone() -> None:
    # Its mark says something a period would not: the re-check fails the answer instead.
    drawn = "- Why do tides rise?\n- Look at the Moon!\n- It pulls"
    fixed = repair(PERIODS, drawn)
    assert fixed == "- Why do tides rise?\n- Look at the Moon!\n- It pulls."
    assert not PERIODS.check(fixed).passed


def test_repairs_that_add_a_paragraph_come_before_the_marker() -> None:
    fixed, repaired = repair_all([MARKER_EN, PS_EN, PERIODS], "Tides:\n- rise,\n- fall")
    assert fixed == "§ Tides:\n- rise.\n- fall.\n\n§ P.S. I hope this helps."
    assert repaired == [PERIODS.id, PS_EN.id, MARKER_EN.id]
    assert all_passed(check_all([MARKER_EN, PS_EN, PERIODS], fixed))


def test_end_phrase_goes_inside_wrapping_quotes() -> None:
    fixed = repair(END_EN, '"Tides come from the Moon."')
    assert fixed == '"Tides come from the Moon.\nIs there anything else I can help with?"'
    assert all_passed(check_all([END_EN, QUOTED], fixed))


def test_postscript_follows_the_answers_script_not_its_marker() -> None:
    english = repair(PS_ZH, "Tides come from the Moon, as NASA explains for 北京 readers.")
    assert english.endswith("\n\n附言：I hope this helps.")
    chinese = repair(PS_EN, "潮汐主要来自月球的引力，NASA 的资料也这样说。")
    assert chinese.endswith("\n\nP.S. 希望对你有帮助。")
    marker = Constraint("detectable_content:postscript", {"postscript_marker": "P.P.S"})
    assert repair(marker, "Tides.") == "Tides.\n\nP.P.S I hope this helps."


@pytest.mark.parametrize(
    ("constraints", "drawn", "expected"),
    [
        (
            [QUOTED, END_EN, LOWER],
            "Tides come from the Moon.",
            '"tides come from the moon.\nis there anything else i can help with?"',
        ),
        (
            [UPPER, PS_EN, NO_COMMA],
            "Tides, in short, follow the Moon.",
            "TIDES IN SHORT FOLLOW THE MOON.\n\nP.S. I HOPE THIS HELPS.",
        ),
        (
            [QUOTED, NO_COMMA, END_ZH],
            "潮汐来自月球，也与太阳有关。",
            '"潮汐来自月球 也与太阳有关。\n还有什么可以帮您的吗？"',
        ),
        (
            [REPEAT_ZH, NO_COMMA],
            "潮汐来自月球，一天两次。",
            "请简单解释潮汐。\n\n潮汐来自月球 一天两次。",
        ),
    ],
)
def test_repairs_in_order_let_combinations_pass(
    constraints: list[Constraint], drawn: str, expected: str
) -> None:
    fixed, repaired = repair_all(constraints, drawn)
    assert fixed == expected
    assert all_passed(check_all(constraints, fixed))
    assert repaired == sorted((c.id for c in constraints), key=REPAIR_ORDER.index)


def test_a_constraint_is_checked_again_after_the_earlier_repairs() -> None:
    # Lowercase as drawn; the end phrase appended first brings capitals, which the
    # lowercase repair then takes out.
    drawn = "tides come from the moon."
    assert LOWER.check(drawn).passed
    fixed, repaired = repair_all([LOWER, END_EN], drawn)
    assert repaired == [END_EN.id, LOWER.id]
    assert fixed == "tides come from the moon.\nis there anything else i can help with?"
    assert all_passed(check_all([LOWER, END_EN], fixed))


def test_constraints_without_a_repair_are_left_to_the_recheck() -> None:
    short = Constraint("length_constraints:number_words", {"relation": "less than", "num_words": 4})
    fixed, repaired = repair_all([short, LOWER], "Tides Come From The Moon.")
    assert repaired == [LOWER.id] and fixed == "tides come from the moon."
    assert not all_passed(check_all([short, LOWER], fixed))
