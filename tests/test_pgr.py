"""PGR's arithmetic and its joint bootstrap interval, on scores made by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from evoinstruct.trainer.pgr import MODELS, pgr_text, recovered, recovered_on_suite
from evoinstruct.trainer.verifiable import ItemOutcome, SuiteResult


def prompts(passed: int, n: int) -> tuple[list[float], list[float]]:
    """Prompt-level scores: the first `passed` of `n` prompts pass."""
    return [1.0] * passed + [0.0] * (n - passed), [1.0] * n


def table(weak: int, base: int, on_weak: int, ceiling: int, n: int = 20, times: int = 1):
    scores = dict(zip(MODELS, (weak, base, on_weak, ceiling), strict=True))
    return {m: tuple(x * times for x in prompts(k, n)) for m, k in scores.items()}


# weak, strong base, strong-on-weak, ceiling (passes out of 20) -> PGR, base's share
CASES = [
    ((4, 8, 10, 16), 0.5, 1 / 3),
    ((4, 8, 16, 16), 1.0, 1 / 3),  # the weak labels taught all the ceiling knows
    ((4, 8, 4, 16), 0.0, 1 / 3),  # no better than the supervisor
    ((4, 8, 2, 16), -1 / 6, 1 / 3),  # worse than the supervisor: a negative PGR
    ((4, 2, 19, 16), 1.25, -1 / 6),  # beyond the ceiling; the untuned model below the weak
]


@pytest.mark.parametrize(("counts", "pgr", "base"), CASES)
def test_pgr_arithmetic(counts: tuple[int, ...], pgr: float, base: float) -> None:
    found = recovered(table(*counts), samples=500)
    assert found.value == pytest.approx(pgr)
    assert found.base == pytest.approx(base)
    assert found.gap.value == pytest.approx((counts[3] - counts[0]) / 20)
    acc = {m: a.value for m, a in found.accuracy.items()}
    assert acc == pytest.approx(dict(zip(MODELS, [c / 20 for c in counts], strict=True)))
    assert found.n == 20


def test_no_gap_gives_no_pgr() -> None:
    for ceiling in (4, 3):  # as good as the weak model, or worse
        found = recovered(table(4, 8, 10, ceiling), samples=500)
        assert found.value is None and found.base is None
        assert (found.low, found.high) == (None, None)
        assert not found.meaningful
        assert pgr_text(found.to_dict()).startswith("undefined")


def test_instruction_level_is_a_ratio_of_sums() -> None:
    # Two prompts with 1 and 3 instructions: a prompt's weight is its instruction count.
    scores = {
        "weak": ([0, 1], [1, 3]),  # 1/4
        "strong_base": ([1, 1], [1, 3]),  # 2/4
        "strong_on_weak": ([1, 2], [1, 3]),  # 3/4
        "ceiling": ([1, 3], [1, 3]),  # 4/4
    }
    found = recovered(scores, "instruction_strict", samples=200)
    assert found.value == pytest.approx((3 / 4 - 1 / 4) / (1 - 1 / 4))


def test_interval_holds_the_value_and_narrows_with_more_prompts() -> None:
    small = recovered(table(4, 8, 10, 16), samples=2000, seed=1)
    large = recovered(table(4, 8, 10, 16, times=10), samples=2000, seed=1)
    for found in (small, large):
        assert found.meaningful
        assert found.low is not None and found.high is not None
        assert found.low < found.value < found.high
    assert large.value == small.value
    assert large.high - large.low < (small.high - small.low) / 2


def test_interval_is_unbounded_when_the_gap_is_not_clear() -> None:
    # One prompt more for the ceiling than for the weak model: the gap's interval reaches 0,
    # so some resamples have no gap at all and PGR's interval is unbounded on both sides.
    found = recovered(table(5, 5, 6, 6), samples=2000)
    assert found.value == pytest.approx(1.0)
    assert not found.meaningful and found.gap.low <= 0
    assert (found.low, found.high) == (None, None)
    assert (
        pgr_text(found.to_dict())
        == "1.00 [-inf, inf] (not meaningful: the gap's interval reaches 0)"
    )


def test_resampling_is_joint_across_the_four_models() -> None:
    # The student passes exactly the prompts the ceiling passes, so every resample recovers
    # the whole gap: a joint resample gives [1, 1], where resampling each model on its own
    # prompts would scatter the ratio widely.
    weak = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0] * 4
    ceiling = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0] * 4
    ones = [1] * 40
    scores = {
        "weak": (weak, ones),
        "strong_base": (weak, ones),
        "strong_on_weak": (ceiling, ones),
        "ceiling": (ceiling, ones),
    }
    found = recovered(scores, samples=2000)
    assert (found.value, found.low, found.high) == (1.0, 1.0, 1.0)


def test_pgr_refuses_mismatched_scores() -> None:
    scores = table(4, 8, 10, 16)
    with pytest.raises(ValueError, match="same non-empty list"):
        recovered({**scores, "ceiling": prompts(3, 19)})
    with pytest.raises(ValueError, match="ceiling"):
        recovered({m: s for m, s in scores.items() if m != "ceiling"})


@dataclass(frozen=True)
class PartOutcome(ItemOutcome):
    """An outcome that names its suite part, as outcomes of a suite with parts do."""

    part: str | None = None


def _result(flags: list[bool | None], parts: list[str], label: str) -> SuiteResult:
    outcomes = [
        PartOutcome(str(i), (), (), failed="timeout", part=part)
        if flag is None
        else PartOutcome(str(i), (flag,), (flag,), part=part)
        for i, (flag, part) in enumerate(zip(flags, parts, strict=True))
    ]
    return SuiteResult("suite", label, label, outcomes, {})


def test_pgr_on_a_suite_leaves_out_unanswered_prompts_and_splits_parts() -> None:
    parts = ["held_out_type"] * 4 + ["in_distribution"] * 4
    results = {
        "weak": _result([False, False, False, True, False, False, True, None], parts, "weak"),
        "strong_base": _result([False, False, True, True, False, True, True, True], parts, "b"),
        "strong_on_weak": _result([True, False, True, True, False, True, True, False], parts, "s"),
        "ceiling": _result([True, True, True, True, True, True, True, False], parts, "c"),
    }
    found = recovered_on_suite(results, samples=300)
    assert found["excluded"] == 1  # the weak model's call failed on the last prompt
    everything = found["all"]
    assert everything["n"] == 7
    # weak 2/7, on weak 5/7, ceiling 7/7
    assert everything["pgr"] == pytest.approx((5 / 7 - 2 / 7) / (7 / 7 - 2 / 7))
    assert set(found["by_part"]) == {"held_out_type", "in_distribution"}
    held = found["by_part"]["held_out_type"]
    assert held["n"] == 4 and held["pgr"] == pytest.approx((3 / 4 - 1 / 4) / (1 - 1 / 4))
    with pytest.raises(ValueError, match="different suites"):
        recovered_on_suite({**results, "ceiling": SuiteResult("other", "c", "c", [], {})})
