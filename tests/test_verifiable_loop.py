"""Verifiable constraints through the loop: the evolver attaches them, the responder samples
until one answer passes, the critic scores each verdict, the selector drops failures, and a
whole round through the real graph accepts constrained, verified examples."""

from __future__ import annotations

import hashlib
from collections import Counter
from functools import partial
from pathlib import Path
from random import Random

import pytest
from pydantic import ValidationError

from evoinstruct.agents import selector
from evoinstruct.agents.constraints import (
    REGISTRY,
    Constraint,
    all_passed,
    check_all,
    describe,
    describe_all,
    dump_constraints,
    find_conflicts,
    load_constraints,
    sample_constraint,
)
from evoinstruct.agents.constraints.phrasing import placed_from_meta, render_prompt
from evoinstruct.agents.constraints.split import default_split
from evoinstruct.agents.critic import CriticConfig, critique
from evoinstruct.agents.evolver import EvolverConfig, evolve, without_constraints
from evoinstruct.agents.responder import ResponderConfig, respond
from evoinstruct.agents.rewriter import RewriteOutcome
from evoinstruct.agents.scoring.verify import guard_rewrites
from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes
from evoinstruct.agents.textstats import find_phrase
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.project import init_project
from evoinstruct.graph.round import stages
from evoinstruct.graph.round.deps import deps_for_project
from evoinstruct.graph.round.stages import StageContext
from evoinstruct.models.base import ChatRequest, Choice, Failure, Generation
from evoinstruct.models.factory import ModelSet
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, ExampleDraft
from evoinstruct.store.seeds import add_seed_file
from tests.doubles import ScriptedModel
from tests.fake_teacher import teacher_reply


def from_layout(draft: Example | ExampleDraft, language: str) -> str:
    """The prompt the stored layout describes; every phrasing in it may train."""
    constraints = load_constraints(draft.meta["constraints"])
    stored = draft.meta["constraint_layout"]
    placed = placed_from_meta(constraints, stored)
    split = default_split()
    assert all(split.is_training_phrasing(p.phrasing) for p in placed)
    assert all(p.phrasing.language == language for p in placed)
    return render_prompt(stored["task"], placed, language)


NO_COMMA = Constraint("punctuation:no_comma")
LOWER = Constraint("change_case:english_lowercase")
TITLE = Constraint("detectable_format:title")
# Types a scripted answer can meet whatever their parameters: the whole-round test uses them.
EASY = [NO_COMMA.id, LOWER.id, TITLE.id]
PASSING = "<<tides>>\nthe moon pulls the sea toward it and the earth turns beneath the bulge."
FAILING = "Tides, in short, come from the Moon."


def example(
    id: str,
    instruction: str,
    output: str | None = None,
    *,
    constraints: list[Constraint] = (),
    source: str = "evolved",
    language: str = "en",
) -> Example:
    meta = {"constraints": dump_constraints(constraints)} if constraints else {}
    return Example(
        id=id, instruction=instruction, output=output, source=source, round=1,
        language=language, model_version="teacher", depth=1, meta=meta,
    )  # fmt: skip


def alternating(failing: str = FAILING, passing: str = PASSING) -> ScriptedModel:
    """Answers n samples per request: failing, passing, failing, ..."""

    def reply(request: ChatRequest) -> Generation:
        texts = [passing if i % 2 else failing for i in range(request.n)]
        return Generation(choices=[Choice(t, "stop") for t in texts])

    return ScriptedModel(default=reply, model_id="teacher")


# --- evolver ---------------------------------------------------------------------------------

REWRITES = {
    "en": "Explain how tides work to a ten-year-old, using the Moon and one beach example.",
    "zh": "请向十岁的孩子解释潮汐是怎样形成的，并结合月亮和一个海边的例子。",
}
PARENTS = {"en": "Explain how tides work.", "zh": "请解释潮汐是怎样形成的。"}


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_add_constraints_attaches_compatible_registry_constraints(language: str) -> None:
    parents = [example(f"p{i}", PARENTS[language], "An answer.", source="seed") for i in range(30)]
    model = ScriptedModel(default=REWRITES[language])
    config = EvolverConfig(operations=["add_constraints"])
    outcome = await evolve(parents, model, PromptLibrary(language), config, Random(11))
    assert len(outcome.drafts) == 30
    counts = Counter()
    for draft in outcome.drafts:
        constraints = load_constraints(draft.meta["constraints"])
        counts[len(constraints)] += 1
        assert find_conflicts(constraints) == []
        # The text the responder's model reads states every constraint around the rewrite,
        # in training phrasings only.
        assert draft.meta["constraint_layout"]["task"] == REWRITES[language]
        assert draft.instruction == from_layout(draft, language)
        assert REWRITES[language] in draft.instruction
        assert draft.language == language
        assert without_constraints(draft, constraints) == REWRITES[language]
    assert set(counts) == {1, 2, 3}
    assert outcome.verifiable["constrained"] == 30
    assert outcome.verifiable["constraints_attached"] == sum(k * n for k, n in counts.items())
    # The model was told its own constraint should be about content: the rules come apart.
    hint = "checkable rules" if language == "en" else "可检验的规则"
    assert all(hint in call.messages[0]["content"] for call in model.calls)


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_add_verifiable_appends_constraints_without_a_model_call(language: str) -> None:
    """Tülu 3 / AutoIF style: the prompt as it is plus checkable rules; any model will do."""
    parents = [example(f"p{i}", PARENTS[language], "An answer.", source="seed") for i in range(12)]
    model = ScriptedModel([])  # no reply scripted: a call would fail the test
    config = EvolverConfig(operations=["add_verifiable"])
    outcome = await evolve(parents, model, PromptLibrary(language), config, Random(3))
    assert model.calls == [] and len(outcome.drafts) == 12
    for draft in outcome.drafts:
        constraints = load_constraints(draft.meta["constraints"])
        assert 1 <= len(constraints) <= 3 and find_conflicts(constraints) == []
        assert draft.instruction == from_layout(draft, language)
        assert draft.meta["constraint_layout"]["task"] == PARENTS[language]
        assert draft.operation == "add_verifiable" and draft.language == language


async def test_constraints_are_drawn_deterministically_per_parent() -> None:
    parents = [example(f"p{i}", f"Explain how tides work, part {i}.") for i in range(4)]
    config = EvolverConfig(operations=["add_constraints"])

    async def run(replies, seed: int = 5) -> dict[str, list]:
        outcome = await evolve(
            parents, ScriptedModel(replies), PromptLibrary("en"), config, Random(seed)
        )
        return {d.parent_id: d.meta["constraints"] for d in outcome.drafts}

    rewrites = [f"Explain how tides work on beach number {i}." for i in range(4)]
    first = await run(rewrites)
    assert await run(rewrites) == first  # a re-run after a crash draws the same
    # Another parent's failed call changes nothing for the others.
    failed = await run([Failure("timeout", "slow"), *rewrites[1:]])
    assert failed == {k: v for k, v in first.items() if k != "p0"}
    assert await run(rewrites, seed=6) != first


async def test_children_carry_their_parents_constraints() -> None:
    base = "Explain how tides work."
    carried = [NO_COMMA, Constraint("combination:repeat_prompt", {"prompt_to_repeat": base})]
    parent = example("p1", f"{base}\n\n{describe_all(carried, 'en')}", "An answer.")
    parent.meta["constraints"] = dump_constraints(carried)
    rewrite = "Explain how tides work on a rocky coast."
    prompts = PromptLibrary("en")

    async def child(op: str, **verifiable) -> ExampleDraft:
        config = EvolverConfig(operations=[op], verifiable=verifiable)
        model = ScriptedModel(default=rewrite)
        outcome = await evolve([parent], model, prompts, config, Random(0))
        # The model sees the parent without its constraint sentences.
        assert f"#The Given Prompt#\n{base}\n\n" in model.calls[0].messages[0]["content"]
        return outcome.drafts[0]

    deepened = await child("deepen")
    kept = load_constraints(deepened.meta["constraints"])
    # repeat_prompt quotes the instruction: it now asks for the rewrite to be repeated.
    assert kept == [NO_COMMA, Constraint(carried[1].id, {"prompt_to_repeat": rewrite})]
    assert deepened.instruction == from_layout(deepened, "en")
    assert deepened.meta["constraint_layout"]["task"] == rewrite
    # repeat_prompt asks for the text before it: every sentence follows the request.
    assert deepened.instruction.startswith(rewrite)
    added = await child("add_constraints", min_count=3, max_count=3)
    more = load_constraints(added.meta["constraints"])
    assert more[:2] == kept and len(more) == 3 and find_conflicts(more) == []
    full = await child("add_constraints", max_count=2)  # no room left: the carried ones only
    assert load_constraints(full.meta["constraints"]) == kept
    breadth = await child("in_breadth")  # a new prompt: no rules carried over
    assert breadth.instruction == rewrite and breadth.meta == {}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_no_constraint_sentence_trips_the_copied_prompt_rule(language: str) -> None:
    """Elimination rule 4 re-checks a child's whole instruction, sentences included."""
    phrases = [p for ps in EvolverConfig().copy_phrases.values() for p in ps]
    for constraint_id in REGISTRY:
        for seed in range(10):
            constraint = sample_constraint(constraint_id, Random(seed), language, "Explain tides.")
            if constraint is not None:
                assert find_phrase(describe(constraint, language), phrases) is None


def test_verifiable_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="exceeds"):
        EvolverConfig(verifiable={"min_count": 3, "max_count": 2})
    with pytest.raises(ValidationError, match="unknown constraint"):
        EvolverConfig(verifiable={"only": ["punctuation:no_semicolons"]})
    assert EvolverConfig().verifiable.enabled


async def test_only_narrows_the_types_and_off_attaches_none() -> None:
    parents = [example(f"p{i}", "Explain how tides work.") for i in range(10)]
    model = ScriptedModel(default=REWRITES["en"])
    config = EvolverConfig(operations=["add_constraints"], verifiable={"only": EASY})
    outcome = await evolve(parents, model, PromptLibrary("en"), config, Random(2))
    ids = {c["id"] for d in outcome.drafts for c in d.meta["constraints"]}
    assert ids <= set(EASY)
    off = EvolverConfig(operations=["add_constraints"], verifiable={"enabled": False})
    outcome = await evolve(parents, model, PromptLibrary("en"), off, Random(2))
    assert all(d.meta == {} for d in outcome.drafts)
    assert "checkable rules" not in model.calls[-1].messages[0]["content"]


# --- responder -------------------------------------------------------------------------------


async def test_responder_keeps_a_passing_sample_and_records_the_draw() -> None:
    constrained = example("c1", "Explain tides.", constraints=[NO_COMMA, TITLE])
    plain = example("c2", "Explain waves.")
    model = alternating()
    outcome = await respond(
        [constrained, plain], model, PromptLibrary("en"), ResponderConfig(), Random(0)
    )
    assert model.batches == [2]  # one batch, one request per item
    assert [c.n for c in model.calls] == [4, 1]
    assert [c.temperature for c in model.calls] == [0.7, 0.7]
    answered = {a.id: a for a in outcome.answered}
    assert answered["c1"].output == PASSING and answered["c2"].output == FAILING
    record = answered["c1"].meta["rejection_sampling"]
    assert record == {
        "drawn": 4,
        "passing": [1, 3],
        "kept": 1,
        "kept_passes": 2,
        "constraints": 2,
    }
    assert "rejection_sampling" not in answered["c2"].meta
    assert answered["c1"].meta["response_model"] == "teacher"
    assert outcome.counters["samples"] == 4 and outcome.counters["sampling_passed"] == 1
    assert outcome.rejections == []


async def test_responder_keeps_the_best_failing_sample_for_the_selector() -> None:
    item = example("c1", "Explain tides.", constraints=[NO_COMMA, TITLE])
    # Neither passes both: the second passes one (no comma), the first none.
    model = alternating("Tides, in short.", "Tides come from the Moon.")
    config = ResponderConfig(verifiable_samples=3, verifiable_temperature=1.0)
    outcome = await respond([item], model, PromptLibrary("en"), config, Random(0))
    assert (model.calls[0].n, model.calls[0].temperature) == (3, 1.0)
    [answered] = outcome.answered
    assert answered.output == "Tides come from the Moon."
    assert answered.meta["rejection_sampling"]["passing"] == []
    assert answered.meta["rejection_sampling"]["kept_passes"] == 1
    assert outcome.counters["sampling_failed"] == 1 and outcome.rejections == []


async def test_greedy_decoding_draws_one_sample() -> None:
    item = example("c1", "Explain tides.", constraints=[NO_COMMA])
    model = alternating()
    config = ResponderConfig(temperature=0.0)
    await respond([item], model, PromptLibrary("en"), config, Random(0))
    assert model.calls[0].n == 1


# --- critic ----------------------------------------------------------------------------------

ONLY_VERIFY = {
    "stats": {"enabled": False},
    "instag": {"enabled": False},
    "deita": {"enabled": False},
    "ifd": {"enabled": False},
}


async def test_critic_scores_each_constraint_strict_and_loose() -> None:
    passing = example("ok", "Explain tides.", PASSING, constraints=[NO_COMMA, TITLE])
    # Fails lowercase strictly; IFEval's loose check drops the first line and passes it.
    failing = example(
        "bad", "Explain tides.", "Sure\nthe moon pulls the sea.", constraints=[LOWER, NO_COMMA]
    )
    plain = example("plain", "Explain waves.", FAILING)
    config = CriticConfig(**ONLY_VERIFY, judge={"enabled": False})
    outcome = await critique(
        [passing, failing, plain],
        judge=None,
        prompts=PromptLibrary("en"),
        config=config,
        rng=Random(),
    )
    table = {(s.example_id, s.dimension): s.value for s in outcome.scores if s.scorer == "verify"}
    assert table == {
        ("ok", NO_COMMA.id): 1.0,
        ("ok", TITLE.id): 1.0,
        ("ok", "all_constraints"): 1.0,
        ("ok", f"{NO_COMMA.id}:loose"): 1.0,
        ("ok", f"{TITLE.id}:loose"): 1.0,
        ("ok", "all_constraints:loose"): 1.0,
        ("bad", LOWER.id): 0.0,
        ("bad", NO_COMMA.id): 1.0,
        ("bad", "all_constraints"): 0.0,
        ("bad", f"{LOWER.id}:loose"): 1.0,
        ("bad", f"{NO_COMMA.id}:loose"): 1.0,
        ("bad", "all_constraints:loose"): 1.0,
    }
    reasons = {s.dimension: s.explanation for s in outcome.scores if s.example_id == "bad"}
    assert reasons["all_constraints"] == "1 of 2 constraints pass"
    # The critic records; the selector decides: nobody is rejected here.
    assert outcome.rejections == [] and set(outcome.kept) == {"ok", "bad", "plain"}
    assert outcome.unverified == {"bad": [LOWER.id]}
    assert outcome.counters["verify_passed"] == 1 and outcome.counters["verify_failed"] == 1


async def test_critic_spends_no_judge_call_on_a_failing_example() -> None:
    passing = example("ok", "Explain tides.", PASSING, constraints=[NO_COMMA])
    failing = example("bad", "Explain tides again.", FAILING, constraints=[NO_COMMA])
    judge = ScriptedModel(default="5\nFine.", model_id="judge")
    config = CriticConfig(**ONLY_VERIFY)
    outcome = await critique(
        [passing, failing], judge=judge, prompts=PromptLibrary("en"), config=config, rng=Random()
    )
    assert len(judge.calls) == 1 and "Explain tides." in judge.calls[0].messages[-1]["content"]
    assert {s.example_id for s in outcome.scores if s.scorer == "judge"} == {"ok"}
    gated = CriticConfig(**ONLY_VERIFY, verify={"skip_failed": False})
    judge.calls.clear()
    await critique(
        [passing, failing], judge=judge, prompts=PromptLibrary("en"), config=gated, rng=Random()
    )
    assert len(judge.calls) == 2


# --- selector --------------------------------------------------------------------------------


async def test_selector_drops_failing_constraints_first_with_the_id() -> None:
    failing = example("bad", "Explain tides.", "Tides, in short.", constraints=[TITLE, NO_COMMA])
    # The same prompt again, answered well: the failing one holds no place in dedup.
    passing = example("ok", "Explain tides.", PASSING, constraints=[TITLE, NO_COMMA])
    plain = example("plain", "Explain waves.", FAILING)
    unreadable = example("old", "Explain wind.", PASSING)
    unreadable.meta["constraints"] = [{"id": "retired:type", "params": {}}]
    indexes = SelectorIndexes.build([], SelectorConfig())
    outcome = await selector.select(
        [failing, passing, plain, unreadable], {}, indexes, SelectorConfig()
    )
    assert outcome.accepted == ["ok", "plain"]
    rejected = {r.example_id: r for r in outcome.rejections}
    assert rejected["bad"].reason == f"constraint_failed:{TITLE.id}"
    assert rejected["bad"].stage == "select"
    evidence = rejected["bad"].evidence
    assert list(evidence["failed"]) == [TITLE.id, NO_COMMA.id]
    assert evidence["failed"][NO_COMMA.id] == "1 comma(s)"
    assert evidence["check"] == "strict"
    assert rejected["old"].reason == "constraints_unreadable"
    off = await selector.select(
        [failing],
        {},
        SelectorIndexes.build([], SelectorConfig()),
        SelectorConfig(constraints="off"),
    )
    assert off.accepted == ["bad"]


async def test_selector_loose_check() -> None:
    item = example("x", "Explain tides.", "Sure\nthe moon pulls the sea.", constraints=[LOWER])
    strict = await selector.select(
        [item], {}, SelectorIndexes.build([], SelectorConfig()), SelectorConfig()
    )
    loose = await selector.select(
        [item], {}, SelectorIndexes.build([], SelectorConfig()), SelectorConfig(constraints="loose")
    )
    assert strict.accepted == [] and loose.accepted == ["x"]


# --- rewrite guard ---------------------------------------------------------------------------


async def test_rewrites_may_not_break_constraints() -> None:
    keeps = example("a", "Explain tides.", PASSING, constraints=[NO_COMMA])
    breaks = example("b", "Explain waves.", PASSING, constraints=[NO_COMMA])
    failing = example("c", "Explain wind.", FAILING, constraints=[NO_COMMA])
    plain = example("d", "Explain rain.", FAILING)
    seen: list[str] = []

    async def realign(batch: list[Example]) -> RewriteOutcome:
        seen.extend(e.id for e in batch)
        outputs = {"a": PASSING + " more.", "b": "Waves, then tides.", "d": "Rain, again."}
        drafts = [
            ExampleDraft(e.instruction, output=outputs[e.id], source="rewritten", parent_id=e.id)
            for e in batch
        ]
        return RewriteOutcome(drafts=drafts)

    outcome = await guard_rewrites([keeps, breaks, failing, plain], realign)
    assert seen == ["a", "b", "d"]  # a failing answer is dropped later: no rewrite call for it
    assert [d.parent_id for d in outcome.drafts] == ["a", "d"]
    [rejection] = outcome.rejections
    assert (rejection.stage, rejection.reason, rejection.example_id) == (
        "rewrite",
        f"constraint_broken:{NO_COMMA.id}",
        "b",
    )
    assert outcome.counters["held_back_failing_constraints"] == 1


# --- stages and a whole round ----------------------------------------------------------------


def _deps(tmp_path: Path, teacher: ScriptedModel):
    project = init_project(tmp_path / "proj")
    config = project.load_config()
    config.evolver.operations = ["add_constraints"]
    config.evolver.verifiable.only = EASY
    models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
    deps = deps_for_project(project, config, models=models)
    add_seed_file(deps.store, project.root / "seeds" / "seed_tasks_en.jsonl")
    return deps


async def test_select_stage_keeps_a_seed_whatever_its_constraints(tmp_path: Path) -> None:
    deps = _deps(tmp_path, ScriptedModel())
    try:
        meta = {"constraints": dump_constraints([NO_COMMA])}
        drafts = [
            ExampleDraft("Explain tides.", output=FAILING, source="seed", meta=meta),
            ExampleDraft("Explain waves.", output=FAILING, source="evolved", meta=meta),
        ]
        seed, machine = deps.store.add_candidates(drafts, round=1, status="candidate").ids
        ctx = StageContext(deps.store, 1, 8)
        config = SelectorConfig()
        agent = partial(
            selector.select,
            scores={},
            indexes=SelectorIndexes.build([], config),
            config=config,
        )
        chosen = await stages.select(ctx, deps.store.get_many([seed, machine]), agent)
        assert chosen.accepted == [seed]
        assert deps.store.get(seed).status == "accepted"
        assert deps.store.get(machine).status == "rejected"
        [row] = deps.store.rejections(example_id=machine)
        assert row["reason"] == f"constraint_failed:{NO_COMMA.id}"
    finally:
        deps.store.close()


def _teacher() -> ScriptedModel:
    """The fake teacher, drawing several answers for constrained prompts: for about half of
    the instructions every other sample meets the easy constraints, for the rest none does."""

    def reply(request: ChatRequest) -> str | Generation:
        answer = teacher_reply(list(request.messages))
        if request.n == 1:
            return answer
        prompt = request.messages[-1]["content"]
        meets = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 2 == 0
        good = "<<notes>>\n" + answer.lower().replace(",", "")
        texts = [good if meets and i % 2 else answer for i in range(request.n)]
        return Generation(choices=[Choice(t, "stop") for t in texts])

    return ScriptedModel(default=reply, model_id="scripted")


async def test_a_whole_round_accepts_constrained_verified_examples(tmp_path: Path) -> None:
    deps = _deps(tmp_path, _teacher())
    try:
        result = await Daemon(deps.project, deps, DaemonOptions(rounds=1)).run()
        assert result.rounds_run == [1]
        store = deps.store
        constrained = [e for e in store.iter_examples() if e.meta.get("constraints")]
        assert constrained and all(e.source in ("evolved", "rewritten") for e in constrained)
        assert {e.status for e in constrained} <= {"accepted", "rejected", "superseded"}
        accepted = [e for e in constrained if e.status == "accepted"]
        assert accepted
        scores = store.scores_for([e.id for e in accepted])
        for e in accepted:
            constraints = load_constraints(e.meta["constraints"])
            assert 1 <= len(constraints) <= 3 and {c.id for c in constraints} <= set(EASY)
            assert e.instruction == from_layout(e, "en")
            assert all_passed(check_all(constraints, e.output))
            record = e.meta["rejection_sampling"]
            assert record["drawn"] == 4 and record["passing"] == [1, 3] and record["kept"] == 1
            verdicts = {(s.scorer, s.dimension): s.value for s in scores[e.id]}
            assert verdicts[("verify", "all_constraints")] == 1.0
            assert all(verdicts[("verify", c.id)] == 1.0 for c in constraints)
        dropped = store.rejections(round=1, stage="select")
        failed = [r for r in dropped if r["reason"].startswith("constraint_failed:")]
        assert failed
        for row in failed:
            example_row = store.get(row["example_id"])
            assert example_row.status == "rejected" and example_row.meta["constraints"]
            assert example_row.meta["rejection_sampling"]["passing"] == []
            assert row["reason"].removeprefix("constraint_failed:") in row["evidence"]["failed"]
        counts = store.round(1)["counts"]["stages"]
        assert counts["evolve"]["constrained"] == counts["evolve"]["children"]
        assert counts["respond"]["constrained"] >= len(accepted) + len(failed)
        assert counts["critique"]["verify_failed"] >= len(failed)
    finally:
        deps.store.close()


async def test_a_truncated_sample_is_not_kept_when_truncation_rejects() -> None:
    item = example("c1", "Explain tides.", constraints=[NO_COMMA])
    cut = Generation(choices=[Choice("Tides, cut", "stop"), Choice("tides come fr", "length")])
    config = ResponderConfig(verifiable_samples=2)
    outcome = await respond([item], ScriptedModel([cut]), PromptLibrary("en"), config, Random(0))
    [answered] = outcome.answered
    assert answered.output == "Tides, cut" and "truncated" not in answered.meta
    assert answered.meta["rejection_sampling"]["passing"] == []
    keep = ResponderConfig(verifiable_samples=2, on_truncated="keep")
    outcome = await respond([item], ScriptedModel([cut]), PromptLibrary("en"), keep, Random(0))
    [answered] = outcome.answered
    assert answered.output == "tides come fr" and answered.meta["truncated"] is True
