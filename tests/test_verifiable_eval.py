"""The held-out verifiable suite: statistics, building and keeping it out of training, the
gate that uses it, and `evoinstruct eval`."""

from __future__ import annotations

import asyncio
import json
import random
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from evoinstruct.agents.constraints import Constraint, describe, describe_all
from evoinstruct.agents.constraints.phrasing import get_phrasing
from evoinstruct.models.base import Failure
from evoinstruct.store import Store, open_store
from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.seeds import add_seed_file
from evoinstruct.trainer.config import GateConfig, SuiteConfig, TrainerConfig
from evoinstruct.trainer.data import select_mix
from evoinstruct.trainer.evaluate import (
    GateDecision,
    SuiteEvidence,
    decide,
    evaluate_version,
    gate_evidence,
    gate_power,
)
from evoinstruct.trainer.suite import (
    Suite,
    SuiteItem,
    ensure_suite,
    load_suite,
    packaged_tasks,
    suite_guard,
    suite_hash,
)
from evoinstruct.trainer.verifiable import (
    Interval,
    ItemOutcome,
    SuiteResult,
    bootstrap_ratio,
    compare,
    detectable_gain,
    evaluate_suite,
    mcnemar_exact,
    paired_bootstrap,
    run_suite,
    summarize,
)
from tests.cli_helpers import run_cli
from tests.doubles import ScriptedModel

pytest_plugins = ["tests.conftest_trainer"]

if TYPE_CHECKING:
    from tests.conftest_trainer import TrainedProject

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
NO_COMMA = Constraint("punctuation:no_comma")
LOWER = Constraint("change_case:english_lowercase")
# Passes both constraints above; BAD breaks both.
GOOD = "a calm answer in plain lowercase words without any pause marks"
BAD = "Yes, This Answer Uses Commas, And Capitals."


# --- statistics on cases worked out by hand --------------------------------------------------
def test_mcnemar_exact_matches_the_binomial_tails() -> None:
    # 8 pairs only the candidate passed, 2 only the baseline: n = 10 discordant pairs.
    two, one = mcnemar_exact(8, 2)
    assert one == pytest.approx((45 + 10 + 1) / 1024)  # P(X >= 8), X ~ Bin(10, 1/2)
    assert two == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_exact(5, 0) == pytest.approx((2 / 32, 1 / 32))
    assert mcnemar_exact(0, 0) == (1.0, 1.0)
    assert mcnemar_exact(2, 8)[1] == pytest.approx(1 - 11 / 1024)  # P(X >= 2)


def test_bootstrap_interval_of_a_share() -> None:
    assert bootstrap_ratio([1, 1, 1]) == Interval(1.0, 1.0, 1.0)
    assert bootstrap_ratio([]) is None
    # 200 of 400: the normal approximation gives 0.5 +- 1.96 * 0.025.
    half = bootstrap_ratio([1, 0] * 200, samples=4000, seed=3)
    assert half.value == 0.5
    assert half.low == pytest.approx(0.451, abs=0.01) and half.high == pytest.approx(
        0.549, abs=0.01
    )
    # Instruction level: a ratio of sums over prompts, not a mean of per-prompt shares.
    ratio = bootstrap_ratio([1, 2, 0], [1, 3, 2])
    assert ratio.value == pytest.approx(3 / 6) and ratio.low <= 0.5 <= ratio.high


def test_paired_bootstrap_on_three_prompts_matches_enumeration() -> None:
    # Only prompt 1 differs (candidate passed, baseline failed): the resampled difference is
    # k/3 with k ~ Bin(3, 1/3) draws of prompt 1. P(k=0) = 8/27, P(k=3) = 1/27 > 2.5%.
    diff, low, high, p = paired_bootstrap(
        [1, 1, 0], [1, 1, 1], [0, 1, 0], [1, 1, 1], samples=20000, seed=1
    )
    assert diff == pytest.approx(1 / 3)
    assert (low, high) == (0.0, 1.0)
    assert p == pytest.approx(2 * 8 / 27, abs=0.03)
    same = paired_bootstrap([1, 0, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1])
    assert same == (0.0, 0.0, 0.0, 1.0)
    sweep = paired_bootstrap([1] * 10, [1] * 10, [0] * 10, [1] * 10)
    assert sweep == (1.0, 1.0, 1.0, 0.0)


def _outcomes(flags: list[bool]) -> list[ItemOutcome]:
    return [ItemOutcome(str(i), (f,), (f,)) for i, f in enumerate(flags)]


def _result(suite: Suite, flags: list[bool], label: str) -> SuiteResult:
    outcomes = _outcomes(flags)
    return SuiteResult(suite.hash, label, label, outcomes, summarize(suite, outcomes))


def _suite(n: int) -> Suite:
    items = tuple(
        SuiteItem(str(i), "tasks", "en", f"task {i}", f"task {i}", (NO_COMMA,)) for i in range(n)
    )
    return Suite(suite_hash(items), items)


def test_compare_counts_discordant_pairs_and_leaves_failures_out() -> None:
    suite = _suite(12)
    candidate = _result(suite, [True] * 9 + [False] * 3, "v2")
    baseline = _result(suite, [False] * 8 + [True] * 4, "v1")
    c = compare(candidate, baseline)
    # pairs: 0-7 candidate only (8), 8 both, 9-11 baseline only (3)
    assert (c.mcnemar["b"], c.mcnemar["c"], c.n) == (8, 3, 12)
    assert c.diff == pytest.approx(9 / 12 - 4 / 12)
    assert c.p_value == pytest.approx(mcnemar_exact(8, 3)[0])
    assert c.low <= c.diff <= c.high
    failed = list(candidate.outcomes)
    failed[0] = ItemOutcome("0", (), (), failed="timeout")
    partial = SuiteResult(suite.hash, "v2", "v2", failed, summarize(suite, failed))
    assert partial.metrics["answered"] == 11 and partial.metrics["failed"] == 1
    c2 = compare(partial, baseline)
    assert (c2.n, c2.excluded, c2.mcnemar["b"]) == (11, 1, 7)


# --- the gate's rule ------------------------------------------------------------------------
def _evidence(candidate: list[bool], baseline: list[bool], teacher: bool = True) -> SuiteEvidence:
    suite = _suite(len(candidate))
    cand, base = _result(suite, candidate, "v2"), _result(suite, baseline, "v1")
    ref = _result(suite, [True] * len(candidate), "teacher") if teacher else None
    return SuiteEvidence(cand, base, compare(cand, base), ref)


def test_gate_refuses_a_worse_suite_score_even_with_a_lower_loss() -> None:
    worse = _evidence([False] * 8 + [True] * 12, [True] * 20)
    decision = decide(
        GateConfig(), new_loss=1.0, baseline_loss=2.0, baseline_name="v1", verifiable=worse
    )
    assert not decision.promote
    # A suite without parts (built before them) is gated on all its prompts.
    assert decision.reason.startswith(
        "verifiable (all prompts) 60.0% vs 100.0% of v1 (-40.0 points, 95% CI"
    )
    assert "the lower end is not above margin 0" in decision.reason
    assert "teacher 100.0%" in decision.reason
    assert "held-out loss 1.0000 < 2.0000 (diagnostic)" in decision.reason


def test_gate_promotes_a_clear_paired_win_and_honours_the_margin() -> None:
    better = _evidence([True] * 20, [False] * 10 + [True] * 10)
    decision = decide(GateConfig(), new_loss=2.5, baseline_loss=2.0, verifiable=better)
    assert decision.promote and "> margin 0" in decision.reason
    assert "held-out loss 2.5000 >= 2.0000 (diagnostic)" in decision.reason
    strict = decide(GateConfig(min_margin=60), new_loss=2.5, baseline_loss=2.0, verifiable=better)
    assert not strict.promote  # +50 points cannot clear a 60-point margin
    mcnemar = decide(
        GateConfig(test="mcnemar"), new_loss=None, baseline_loss=None, verifiable=better
    )
    assert mcnemar.promote and "one-sided p=0.000977 < 0.05" in mcnemar.reason  # 1 / 2**10
    tie = _evidence([True, False] * 10, [True, False] * 10)
    assert not decide(GateConfig(), new_loss=1.0, baseline_loss=2.0, verifiable=tie).promote


def _parted(spec: dict[str, tuple[list[bool], list[bool]]]) -> tuple[SuiteResult, SuiteResult]:
    """Candidate and baseline results on a suite whose parts hold the given pass/fail flags."""
    items, cand, base = [], [], []
    for part, (c_flags, b_flags) in spec.items():
        for c, b in zip(c_flags, b_flags, strict=True):
            key = f"{part}-{len(items)}"
            items.append(SuiteItem(key, "tasks", "en", key, key, (NO_COMMA,), part))
            cand.append(ItemOutcome(key, (c,), (c,), part=part))
            base.append(ItemOutcome(key, (b,), (b,), part=part))
    suite = Suite(suite_hash(items), tuple(items))
    return (
        SuiteResult(suite.hash, "v2", "v2", cand, summarize(suite, cand)),
        SuiteResult(suite.hash, "v1", "v1", base, summarize(suite, base)),
    )


def test_gate_refuses_a_version_that_gains_only_in_distribution() -> None:
    """+60 points on training's own phrasings and types, nothing on the held-out parts:
    pooled over the whole suite that would pass; the gate decides on the held-out parts."""
    same = [True] * 30 + [False] * 70
    candidate, baseline = _parted(
        {
            "in_distribution": ([True] * 80 + [False] * 20, [True] * 20 + [False] * 80),
            "held_out_phrasing": (same, same),
            "held_out_type": (same[::-1], same[::-1]),
        }
    )
    pooled = compare(candidate, baseline)
    assert pooled.low > 0  # what a gate on every prompt would have promoted
    cfg = TrainerConfig()
    evidence = gate_evidence(cfg, candidate, baseline)
    assert evidence.comparison.parts == ("held_out_phrasing", "held_out_type")
    assert evidence.comparison.n == 200 and evidence.comparison.diff == 0
    decision = decide(cfg.gate, new_loss=1.0, baseline_loss=2.0, verifiable=evidence)
    assert not decision.promote
    assert decision.reason.startswith(
        "verifiable (held-out phrasing + held-out type) 30.0% vs 30.0% of the current generator"
    )
    assert "not gated: in-distribution +60.0 (CI" in decision.reason
    # Identical answers on the gated parts: the power falls back on the assumed discordance.
    assert "power: finds +" in decision.reason and "15% discordant, assumed" in decision.reason
    assert set(evidence.by_part) == {"in_distribution", "held_out_phrasing", "held_out_type"}
    stored = evidence.to_dict()
    assert stored["comparison"]["parts"] == ["held_out_phrasing", "held_out_type"]
    assert stored["by_part"]["in_distribution"]["diff"] == pytest.approx(0.6)
    assert stored["candidate"]["by_part"]["in_distribution"]["n"] == 100


def test_gate_promotes_a_gain_on_the_held_out_parts_and_states_its_power() -> None:
    base = [True] * 20 + [False] * 80
    better = [True] * 45 + [False] * 55  # +25 points, 25 discordant pairs of 100
    candidate, baseline = _parted(
        {
            "in_distribution": (base, base),
            "held_out_phrasing": (better, base),
            "held_out_type": (better, base),
        }
    )
    cfg = TrainerConfig()
    evidence = gate_evidence(cfg, candidate, baseline)
    decision = decide(cfg.gate, new_loss=2.0, baseline_loss=1.0, verifiable=evidence)
    assert decision.promote
    expected = gate_power(cfg.gate, 200, 0.25)
    assert evidence.power == expected and expected["observed"]
    assert f"finds +{expected['detectable_points']:.1f} points 80% of the time" in decision.reason
    assert "(n=200, 25% discordant, observed)" in decision.reason
    assert "not gated: in-distribution +0.0" in decision.reason
    # Parts are config: gated on in-distribution alone, this version gained nothing.
    only_id = TrainerConfig(gate=GateConfig(parts=["in_distribution"]))
    evidence = gate_evidence(only_id, candidate, baseline)
    assert not decide(only_id.gate, new_loss=None, baseline_loss=None, verifiable=evidence).promote


def test_the_stated_power_is_the_power() -> None:
    """Worked values (the issue's guide: 15-20% discordant pairs need ~500-600 prompts for a
    5-point gain), and a simulation: at the detectable gain McNemar's one-sided exact test
    rejects about 80% of the time."""
    assert 100 * detectable_gain(197, 0.15, 0.025) == pytest.approx(7.68, abs=0.01)
    assert 100 * detectable_gain(576, 0.15, 0.025) == pytest.approx(4.51, abs=0.01)
    assert 100 * detectable_gain(576, 0.20, 0.025) == pytest.approx(5.21, abs=0.01)
    assert detectable_gain(600, 0.2, 0.025) < detectable_gain(300, 0.2, 0.025)
    assert detectable_gain(0, 0.2, 0.025) is None and detectable_gain(50, 0.001, 0.05) is None
    n, d, alpha = 500, 0.18, 0.05
    gain = detectable_gain(n, d, alpha)
    rng = np.random.default_rng(0)
    trials = rng.multinomial(n, [(d + gain) / 2, (d - gain) / 2, 1 - d], size=1500)
    found = np.mean([mcnemar_exact(int(b), int(c))[1] < alpha for b, c, _ in trials])
    assert 0.74 < found < 0.86, found


def test_gate_without_suite_results() -> None:
    refused = decide(GateConfig(metric="verifiable"), new_loss=1.0, baseline_loss=2.0)
    assert refused == GateDecision(
        False, "no suite result: the verifiable gate needs the student model to answer the suite"
    )
    # auto without a suite: the loss decides, as before
    assert decide(GateConfig(), new_loss=1.0, baseline_loss=2.0).promote
    with pytest.raises(ValueError, match="prompt-level"):
        GateConfig(test="mcnemar", suite_metric="instruction_strict")


# --- evaluate_suite with scripted models ------------------------------------------------------
def _gate_items(n: int = 12) -> list[SuiteItem]:
    shapes = [(NO_COMMA,), (LOWER,), (NO_COMMA, LOWER)]
    items = []
    for i in range(n):
        task = f"Describe item number {i} of the held-out gate suite in a few words."
        constraints = shapes[i % 3]
        prompt = f"{task} {describe_all(constraints, 'en')}"
        part = ("in_distribution", "held_out_phrasing", "held_out_type")[i % 3]
        items.append(SuiteItem(f"g{i}", "tasks", "en", task, prompt, constraints, part))
    return items


def _store_suite(store: Store, items: list[SuiteItem]) -> Suite:
    store.save_eval_suite(suite_hash(items), [i.to_dict() for i in items], {"test": True})
    return load_suite(store)


async def test_evaluate_suite_scores_batches_and_counts_failures(store: Store) -> None:
    suite = _store_suite(store, _gate_items(12))
    follower = ScriptedModel(default=GOOD)
    result = await evaluate_suite(follower, suite, batch_size=5, samples=500)
    assert follower.batches == [5, 5, 2]
    assert all(r.temperature == 0.0 for r in follower.calls)
    assert result.accuracy("prompt_strict") == 1.0
    assert result.metrics["by_type"]["punctuation:no_comma"]["n"] == 8
    mixed = ScriptedModel([BAD, Failure("timeout", "slow"), *[GOOD] * 10])
    seen: list[tuple[int, int]] = []
    result = await evaluate_suite(
        mixed, suite, samples=500, progress=lambda d, t: seen.append((d, t))
    )
    m = result.metrics
    assert (m["answered"], m["failed"], seen) == (11, 1, [(12, 12)])
    assert result.accuracy("prompt_strict") == pytest.approx(10 / 11)
    assert result.accuracy("instruction_strict") == pytest.approx(14 / 15)  # g0 has 1, g1 failed
    for name in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"):
        a = m["accuracy"][name]
        assert 0 <= a["low"] <= a["value"] <= a["high"] <= 1


async def test_stored_results_are_reused_unless_calls_failed(store: Store) -> None:
    suite = _store_suite(store, _gate_items(3))
    cfg = SuiteConfig(bootstrap_samples=200)
    flaky = ScriptedModel([Failure("connection", "down")], default=GOOD, model_id="flaky")
    first = await run_suite(store, suite, flaky, cfg, label="teacher")
    assert first.metrics["failed"] == 1 and not first.cached
    second = await run_suite(store, suite, flaky, cfg, label="teacher")
    assert second.metrics["failed"] == 0 and len(flaky.calls) == 6
    third = await run_suite(store, suite, flaky, cfg, label="teacher")
    assert third.cached and len(flaky.calls) == 6
    assert third.accuracy() == 1.0 and len(store.eval_results(suite.hash)) == 1


async def test_a_stored_result_of_other_weights_under_the_same_name_is_not_reused(
    store: Store,
) -> None:
    """A version's suite result is kept by the digest of its adapter's files too: a project
    copied and trained again under the same names is scored anew."""
    suite = _store_suite(store, _gate_items(3))
    cfg = SuiteConfig(bootstrap_samples=200)
    student = ScriptedModel(default=BAD, model_id="student")
    student.adapter_version, student.adapter_digest = "v1", "weights-a"
    first = await run_suite(store, suite, student, cfg, label="v1", adapter_path="models/v1")
    assert first.accuracy() == 0.0
    student.default, student.adapter_digest = GOOD, "weights-b"
    second = await run_suite(store, suite, student, cfg, label="v1", adapter_path="models/v1")
    assert not second.cached and second.accuracy() == 1.0 and len(student.calls) == 6
    student.adapter_digest = "weights-a"
    assert (
        await run_suite(store, suite, student, cfg, label="v1", adapter_path="models/v1")
    ).cached


# --- the suite: built once, disjoint from the pool, kept out of training ------------------------
def test_packaged_tasks_are_bilingual_distinct_and_unlike_the_seeds(store: Store) -> None:
    tasks = packaged_tasks()
    counts = Counter(t["language"] for t in tasks)
    assert counts == {"en": 720, "zh": 360}
    # Tasks as users write them: many kinds, most of several sentences.
    assert len({t["kind"] for t in tasks}) >= 15
    several = [
        t for t in tasks if len(re.findall(r"[.!?。！？]", t["task"].rstrip(".!?。！？"))) >= 1
    ]
    assert len(several) > len(tasks) / 2
    assert len({t["id"] for t in tasks}) == len({t["task"] for t in tasks}) == len(tasks)
    for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
        add_seed_file(store, PROMPTS_DIR / "seeds" / name)
    build = ensure_suite(store, SuiteConfig())
    assert build.created and len(build.suite) == len(tasks)
    assert build.skipped == {"overlaps_pool": 0}
    assert {len(i.constraints) for i in build.suite.items} == {1, 2, 3}
    assert set(build.suite.part_counts()) == {
        "in_distribution",
        "held_out_phrasing",
        "held_out_type",
    }
    for item in build.suite.items:
        assert len(item.phrasings) == len(item.constraints)
        # The prompt is the task, whole, and the constraints' sentences placed around it.
        rest = item.prompt
        for constraint, phrasing in zip(item.constraints, item.phrasings, strict=True):
            sentence = get_phrasing(phrasing).render(constraint.params)
            assert sentence in rest
            rest = rest.replace(sentence, " ", 1)
        assert re.sub(r"\s+", "", rest) == re.sub(r"\s+", "", item.task)


def test_suite_is_stored_once_and_drops_tasks_the_pool_already_has(store: Store) -> None:
    first = packaged_tasks()[0]
    # A pool example quoting a long run of the first task's words (not the whole task).
    copied = " ".join(first["task"].split()[:12]) + " and keep it short."
    store.add_candidates([ExampleDraft(instruction=copied, output="Grey sky.")], 1)
    cfg = SuiteConfig(tasks_per_language=5)
    build = ensure_suite(store, cfg)
    assert build.skipped["overlaps_pool"] == 1
    assert first["id"] not in {i.key for i in build.suite.items} and len(build.suite) == 9
    again = ensure_suite(store, cfg)
    assert not again.created and again.suite == build.suite
    # The draw depends on the seed and the task only: the same config draws the same suite.
    other = open_store(Path(store.path).with_name("other.db"))
    other.add_candidates([ExampleDraft(instruction=copied, output="Grey sky.")], 1)
    assert ensure_suite(other, cfg).suite.hash == build.suite.hash
    other.close()


def test_training_never_sees_a_suite_prompt(store: Store) -> None:
    build = ensure_suite(store, SuiteConfig(tasks_per_language=3))
    item = build.suite.items[0]
    # Later a generated example copies a suite task, another carries only the same
    # constraint sentences (the evolver writes them too), a third is unrelated.
    drafts = [
        ExampleDraft(instruction=item.task + " Keep it short.", output="ok"),
        ExampleDraft(
            instruction="Plan a picnic for a rowing club on a windy spring day. "
            + describe_all([NO_COMMA, LOWER], "en"),
            output="ok",
        ),
        ExampleDraft(instruction="Name three rivers that flow through Germany.", output="ok"),
    ]
    ids = store.add_candidates(drafts, 1).ids
    store.set_status(ids, "accepted")
    cfg = TrainerConfig(suite=SuiteConfig(tasks_per_language=3), heldout_fraction=0.0)
    mix = select_mix(store, cfg, random.Random(0))
    trained = {e.id for e in mix.train}
    assert mix.available["suite_overlap"] == 1
    assert ids[0] not in trained and {ids[1], ids[2]} <= trained
    assert suite_guard(store, cfg.suite).hit(store.get(ids[0])) == item.key


def test_ifeval_rows_join_the_suite_and_unsupported_ids_are_counted(
    store: Store, tmp_path: Path
) -> None:
    lowercase = describe(LOWER, "en")  # 13 tokens: one whole 13-gram of our own wording
    rows = [
        {
            "key": 1,
            "prompt": f"Write a limerick about a cat. {lowercase}",
            "instruction_id_list": ["change_case:english_lowercase"],
            "kwargs": [{}],
        },
        {
            "key": 2,
            "prompt": "Write a riddle about the sea and answer it in exactly 4 bullet points.",
            "instruction_id_list": ["detectable_format:number_bullet_lists"],
            "kwargs": [{"num_bullets": 4, "relation": None}],
        },
        {
            "key": 3,
            "prompt": "Rewrite this in a pirate voice.",
            "instruction_id_list": ["detectable_format:pirate_voice"],
            "kwargs": [{}],
        },
    ]
    path = tmp_path / "my_eval.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    first = ensure_suite(store, SuiteConfig(tasks_per_language=2))
    # The evolver writes our constraint sentences into pool examples: sharing one is no copy.
    store.add_candidates(
        [ExampleDraft(instruction=f"Describe the harbour at dawn. {lowercase}")], 2
    )
    added = ensure_suite(store, SuiteConfig(tasks_per_language=2), ifeval_files=[path])
    assert added.created and added.added == 2 and added.suite.hash != first.suite.hash
    assert added.skipped == {
        "unsupported:detectable_format:pirate_voice": 1,
        "unsupported_rows": 1,
        "overlaps_pool": 0,
    }
    assert added.suite.counts()["ifeval:my_eval.jsonl"] == 2
    assert added.suite.items[: len(first.suite)] == first.suite.items  # the tasks stay as drawn
    again = ensure_suite(store, SuiteConfig(), ifeval_files=[path])
    assert not again.created and again.suite.hash == added.suite.hash
    guard = suite_guard(store, SuiteConfig())
    assert guard.hit(next(store.iter_examples(round=2))) is None
    copy = "Write a riddle about the sea and answer it in exactly 4 bullet points, please."
    store.add_candidates([ExampleDraft(instruction=copy)], 3)
    assert guard.hit(next(store.iter_examples(round=3))) == "my_eval:2"


# --- the gate end to end: a real trained version, scripted answers ----------------------------
class StudentDouble(ScriptedModel):
    """A student whose answers depend on the adapter handed to it, as a real student's would."""

    def __init__(self, answers: dict[str | None, str]) -> None:
        super().__init__(default=lambda request: answers[self.adapter_version])
        self.model_id = "student-double"

    def load_adapter(self, path: str, version: str | None = None) -> str:
        self.adapter_version = version
        return version

    def remove_adapter(self) -> None:
        self.adapter_version = None


@pytest.fixture
def lora_store(trained_lora: TrainedProject, tmp_path: Path) -> Iterator[Store]:
    """A private copy of the trained project's pool: suites stored here stay here."""
    target = sqlite3.connect(tmp_path / "pool.db")
    trained_lora.store.db.conn.backup(target)
    target.close()
    store = open_store(tmp_path / "pool.db")
    yield store
    store.close()


def _verifiable(cfg: TrainerConfig, **gate: Any) -> TrainerConfig:
    return cfg.model_copy(
        update={
            "gate": GateConfig(**gate),
            "suite": SuiteConfig(bootstrap_samples=500),
        }
    )


async def test_gate_refuses_v1_that_lowered_the_loss_but_follows_instructions_worse(
    trained_lora: TrainedProject, lora_store: Store
) -> None:
    _store_suite(lora_store, _gate_items(12))
    student = StudentDouble({None: GOOD, "v1": BAD})
    teacher = ScriptedModel(default=GOOD, model_id="teacher-double")
    cfg = _verifiable(trained_lora.cfg)  # metric "auto": the stored suite decides
    evaluation = await evaluate_version(lora_store, "v1", cfg, student=student, teacher=teacher)
    assert evaluation.heldout.loss < evaluation.baseline.loss  # the loss gate would promote
    assert not evaluation.decision.promote
    reason = evaluation.decision.reason
    assert reason.startswith(
        "verifiable (held-out phrasing + held-out type) 0.0% vs 100.0% of the base model "
        "(-100.0 points"
    )
    assert "not gated: in-distribution -100.0" in reason and "power: " in reason
    assert "teacher 100.0%" in reason and "(diagnostic)" in reason
    assert student.adapter_version == "v1"  # left serving the candidate
    recorded = lora_store.model_version("v1")["metrics"]
    assert recorded["evaluation"]["gate_metric"] == "verifiable"
    assert recorded["evaluation"]["verifiable"]["comparison"]["diff"] == -1.0
    assert recorded["verifiable"]["accuracy"]["prompt_strict"]["value"] == 0.0
    labels = sorted(r["label"] for r in lora_store.eval_results())
    assert labels == ["base", "teacher", "v1"]
    # Asked again, every answer comes from the stored results: nobody generates.
    calls = len(student.calls), len(teacher.calls)
    again = await evaluate_version(lora_store, "v1", cfg, student=student, teacher=teacher)
    assert (len(student.calls), len(teacher.calls)) == calls
    assert again.decision == evaluation.decision


async def test_gate_promotes_v1_that_clearly_follows_instructions_better(
    trained_lora: TrainedProject, lora_store: Store
) -> None:
    _store_suite(lora_store, _gate_items(12))
    student = StudentDouble({None: BAD, "v1": GOOD})
    cfg = _verifiable(trained_lora.cfg, metric="verifiable", teacher_reference=False)
    evaluation = await evaluate_version(lora_store, "v1", cfg, student=student)
    assert evaluation.decision.promote, evaluation.decision.reason
    assert evaluation.decision.reason.startswith(
        "verifiable (held-out phrasing + held-out type) 100.0% vs 0.0% of the base model"
    )
    assert "teacher" not in evaluation.decision.reason
    assert evaluation.verifiable.comparison.mcnemar["b"] == 8  # the 8 held-out prompts


async def test_gate_builds_the_suite_when_it_must_and_refuses_without_a_student(
    trained_lora: TrainedProject, lora_store: Store
) -> None:
    cfg = _verifiable(trained_lora.cfg, metric="verifiable")
    evaluation = await evaluate_version(lora_store, "v1", cfg)
    assert not evaluation.decision.promote
    assert "no student model" in evaluation.decision.reason
    assert lora_store.eval_suites() == []  # nothing to answer it with: nothing built yet
    loss = await evaluate_version(lora_store, "v1", _verifiable(trained_lora.cfg))
    assert loss.decision.promote and loss.verifiable is None  # auto, no suite: the loss decides


# --- `evoinstruct eval` -----------------------------------------------------------------------
def _server_reply(body: dict[str, Any]) -> str:
    return "A steady answer in lowercase words without commas"


def _cached_answers(project: Path) -> int:
    with open_store(project / "pool.db") as store:
        return store.db.execute("SELECT count(*) FROM response_cache").fetchone()[0]


@pytest.mark.timeout(300)
def test_eval_cli_prints_and_stores(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path, one_thread: None
) -> None:
    from evoinstruct.graph.project import init_project
    from tests.openai_server import OpenAITestServer

    project = init_project(tmp_path / "proj").root
    ifeval = tmp_path / "extra.jsonl"
    ifeval.write_text(
        json.dumps(
            {
                "key": 7,
                "prompt": "List three uses of rope. Wrap your entire answer in double quotes.",
                "instruction_id_list": ["startend:quotation", "keywords:unknown_kind"],
                "kwargs": [{}, {}],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    with OpenAITestServer(models=("teacher",), reply=_server_reply) as server:
        sets = [
            f'models.teacher.base_url="{server.url}"',
            'models.teacher.model="teacher"',
            "models.teacher.max_retries=0",
            f'models.student.path="{tiny_model_dir}"',
            'models.student.device="cpu"',
            "trainer.suite.tasks_per_language=2",
            "trainer.suite.max_tokens=4",
            "trainer.suite.bootstrap_samples=200",
        ]
        args = [a for s in sets for a in ("--set", s)]
        first = run_cli(capsys, "eval", "-p", project, *args, "--ifeval", ifeval)
        assert first.code == 0, first.err
        assert "built" in first.out and "unsupported:keywords:unknown_kind 1" in first.out
        assert "teacher: 4 of 4 prompts answered" in first.out  # the default: the generator
        assert "prompt-level strict" in first.out and "tasks/zh" in first.out
        assert "by part of the suite" in first.out and "held-out phrasing" in first.out
        # The gate's power on this suite, at the assumed discordance (nothing to compare yet).
        assert "The gate decides on" in first.out and "discordant, assumed" in first.out
        requests = server.requests
        cached = _cached_answers(project)
        base = run_cli(capsys, "eval", "base", "-p", project, *args, "--json")
        assert base.code == 0, base.err
        # The student answered through the response cache: a stopped evaluation keeps them.
        assert _cached_answers(project) - cached == 4
        data = base.json()
        assert data["result"]["label"] == "base" and data["result"]["n"] == 4
        assert data["suite"]["counts"] == {"tasks/en": 2, "tasks/zh": 2}
        assert [o["label"] for o in data["others"]] == ["teacher"]
        assert sum(data["suite"]["parts"].values()) == 4  # the IFEval row was unsupported
        assert set(data["result"]["by_part"]) == set(data["suite"]["parts"])
        assert data["power"]["n"] == 4 - data["suite"]["parts"].get("in_distribution", 0)
        again = run_cli(capsys, "eval", "teacher", "-p", project, *args)
        assert again.code == 0 and "stored result" in again.out
        assert server.requests == requests  # the teacher answered this suite once
        missing = run_cli(capsys, "eval", "v9", "-p", project, *args)
        assert missing.code == 2 and "no model version 'v9'" in missing.err
    with open_store(project / "pool.db") as store:
        assert sorted(r["label"] for r in store.eval_results()) == ["base", "teacher"]


# --- the real SmolLM2 ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_evaluate_suite_on_smollm2(store: Store) -> None:
    from evoinstruct.models.config import ModelConfig
    from evoinstruct.models.smollm2 import fetch_smollm2
    from evoinstruct.models.transformers_backend import TransformersModel
    from evoinstruct.store.errors import ModelError
    from tests.conftest_trainer import single_torch_thread

    try:
        path = fetch_smollm2()
    except ModelError as exc:
        pytest.skip(f"SmolLM2 is not available here: {exc}")
    full = ensure_suite(store, SuiteConfig(tasks_per_language=5)).suite
    suite = Suite(full.hash, full.items[:10])
    with single_torch_thread():
        model = TransformersModel(
            ModelConfig(
                backend="transformers",
                path=str(path),
                device="cpu",
                dtype="bfloat16",
                batch_size=10,
            )
        )
        result = asyncio.run(evaluate_suite(model, suite, max_tokens=48, samples=500))
    m = result.metrics
    assert m["n"] == 10 and m["answered"] == 10
    for name, a in m["accuracy"].items():
        assert 0 <= a["low"] <= a["value"] <= a["high"] <= 1, name
        assert a["high"] - a["low"] <= 0.8, name  # ten prompts: wide, but not everything
    assert any(o.response.strip() for o in result.outcomes)
