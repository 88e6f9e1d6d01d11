"""Preference pairs from verification: built only from verified pass/fail answers to the same
prompt, stored idempotently with what each answer failed, the round and the model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from random import Random

import pytest

from evoinstruct.agents.constraints import Constraint, check_all, dump_constraints
from evoinstruct.agents.preference import PairsConfig, verified_pairs
from evoinstruct.agents.responder import ResponderConfig, respond
from evoinstruct.graph.round import stages
from evoinstruct.models.base import Choice, Generation
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store import Store, open_store
from evoinstruct.store.records import Example, ExampleDraft, PreferencePair
from tests.doubles import ScriptedModel

LOWER = Constraint("change_case:english_lowercase")
NO_COMMA = Constraint("punctuation:no_comma")
QUOTED = Constraint("startend:quotation")
SHORT = Constraint("length_constraints:number_words", {"relation": "less than", "num_words": 6})
ON = PairsConfig()


def drawn(*texts: str, cut: tuple[int, ...] = ()) -> list[Choice]:
    return [Choice(t, "length" if i in cut else "stop") for i, t in enumerate(texts)]


def assert_verified(pair: PreferencePair, choices: list[Choice], constraints: list) -> None:
    """The pair's answers are answers of this draw, checked here again: chosen passes every
    constraint strictly, rejected fails exactly the constraints it names."""
    texts = [c.text.strip() for c in choices]
    assert pair.rejected in texts
    if not pair.chosen_repaired:
        assert pair.chosen in texts
    assert all(r.passed for r in check_all(constraints, pair.chosen))
    failed = [
        c.id
        for c, r in zip(constraints, check_all(constraints, pair.rejected), strict=True)
        if not r.passed
    ]
    assert failed and failed == pair.rejected_failed


@pytest.mark.parametrize(
    ("answers", "passing", "failing"),
    [
        (["tides follow the moon.", "Tides, Mostly.", "the sea rises, then falls."], [0], [1, 2]),
        (["潮汐随月亮涨落。", "潮汐，月亮。", "海水涨落很有规律。"], [0, 2], [1]),
    ],
)
def test_every_pair_is_a_passing_and_a_failing_answer_of_one_draw(
    answers: list[str], passing: list[int], failing: list[int]
) -> None:
    constraints = [NO_COMMA] if "潮汐随月亮涨落。" in answers else [NO_COMMA, LOWER]
    choices = drawn(*answers)
    pairs = verified_pairs("ex1", choices, constraints, ON, model_version="teacher")
    assert {(p.chosen, p.rejected) for p in pairs} == {
        (answers[c], answers[r]) for c in passing for r in failing
    }
    for pair in pairs:
        assert pair.example_id == "ex1" and pair.model_version == "teacher"
        assert_verified(pair, choices, constraints)


def test_no_pair_when_no_answer_passes_or_none_fails() -> None:
    failing = drawn("Tides, Mostly.", "The Sea, Rising.")
    assert verified_pairs("ex1", failing, [NO_COMMA, LOWER], ON) == []
    passing = drawn("tides follow the moon.", "the sea rises.")
    assert verified_pairs("ex1", passing, [NO_COMMA, LOWER], ON) == []
    # No constraints: nothing was verified, so nothing is chosen.
    assert verified_pairs("ex1", drawn("Tides.", "Tides, yes."), [], ON) == []
    assert (
        verified_pairs(
            "ex1", drawn("tides.", "Tides, yes."), [NO_COMMA], PairsConfig(enabled=False)
        )
        == []
    )


def test_a_cut_answer_is_never_chosen_and_rejected_only_when_allowed() -> None:
    # The cut answer passes every constraint: it still teaches stopping mid-sentence.
    choices = drawn("tides follow the moon and", "Tides, Mostly.", "tides, yes.", cut=(0, 2))
    assert verified_pairs("ex1", choices, [NO_COMMA], ON) == []
    choices = drawn("tides follow the moon.", "Tides, Mostly.", "tides rise, and", cut=(2,))
    pairs = verified_pairs("ex1", choices, [NO_COMMA], ON)
    assert [(p.chosen, p.rejected, p.rejected_truncated) for p in pairs] == [
        ("tides follow the moon.", "Tides, Mostly.", False)
    ]
    allowed = verified_pairs("ex1", choices, [NO_COMMA], PairsConfig(truncated_rejected=True))
    assert [(p.rejected, p.rejected_truncated) for p in allowed] == [
        ("Tides, Mostly.", False),
        ("tides rise, and", True),
    ]


@pytest.mark.parametrize("empty", ["", "  ", ",", "，。"])
def test_an_answer_without_content_is_in_no_pair(empty: str) -> None:
    choices = drawn("tides follow the moon.", empty)
    assert verified_pairs("ex1", choices, [NO_COMMA, QUOTED], ON) == []
    assert verified_pairs("ex1", drawn(empty, "Tides, Mostly."), [LOWER], ON) == []


def test_a_repaired_answer_is_chosen_only_against_its_own_original() -> None:
    choices = drawn("Tides Come From The Moon.", "The Sea, Rising And Falling Twice Daily.")
    repaired = (0, "tides come from the moon.", [LOWER.id])
    pairs = verified_pairs("ex1", choices, [LOWER], ON, repaired=repaired)
    assert [(p.chosen, p.rejected, p.chosen_repaired, p.rejected_failed) for p in pairs] == [
        ("tides come from the moon.", "Tides Come From The Moon.", [LOWER.id], [LOWER.id])
    ]
    assert_verified(pairs[0], choices, [LOWER])
    assert (
        verified_pairs(
            "ex1", choices, [LOWER], PairsConfig(repaired_chosen=False), repaired=repaired
        )
        == []
    )
    # A "repair" that does not pass is never taken on the responder's word.
    wrong = (0, "Tides Come From The Moon!", [LOWER.id])
    assert verified_pairs("ex1", choices, [LOWER], ON, repaired=wrong) == []


def _item(id: str, instruction: str, constraints: list) -> Example:
    return Example(
        id=id, instruction=instruction, source="evolved", round=2, language="en",
        meta={"constraints": dump_constraints(constraints)},
    )  # fmt: skip


async def test_respond_pairs_each_prompt_only_with_its_own_answers() -> None:
    items = [
        _item("a", "Explain tides.", [NO_COMMA]),
        _item("b", "Explain waves.", [NO_COMMA]),
        _item("c", "Explain wind.", [NO_COMMA]),  # no answer passes: no pair
        Example(id="d", instruction="Name a river."),  # unconstrained: no pair
    ]
    replies = [
        Generation(choices=drawn("tides follow the moon.", "Tides, Mostly.")),
        Generation(choices=drawn("Waves, Wind.", "waves come from wind.", "Waves, yes.")),
        Generation(choices=drawn("Wind, Air.", "Wind, Moving.")),
        "The Nile.",
    ]
    model = ScriptedModel(replies, model_id="teacher-7b")
    config = ResponderConfig(verifiable_samples=3)
    outcome = await respond(items, model, PromptLibrary("en"), config, Random(0))
    by_example = Counter(p.example_id for p in outcome.pairs)
    assert by_example == {"a": 1, "b": 2}
    answers = {
        "a": {"tides follow the moon.", "Tides, Mostly."},
        "b": {"Waves, Wind.", "waves come from wind.", "Waves, yes."},
    }
    for pair in outcome.pairs:
        assert {pair.chosen, pair.rejected} <= answers[pair.example_id]
        assert pair.model_version == "teacher-7b" and pair.rejected_failed == [NO_COMMA.id]
    assert outcome.counters["preference_pairs"] == 3
    # Drafts are not in the store yet: a pair has no example to belong to.
    draft = ExampleDraft("Explain tides.", meta={"constraints": dump_constraints([NO_COMMA])})
    model.push(Generation(choices=drawn("tides follow the moon.", "Tides, Mostly.")))
    outcome = await respond([draft], model, PromptLibrary("en"), config, Random(0))
    assert outcome.answered and outcome.pairs == []


@pytest.fixture
def store(tmp_path: Path):
    with open_store(tmp_path / "pool.db") as s:
        yield s


def _constrained(store: Store, n: int, round: int = 1) -> list[str]:
    drafts = [
        ExampleDraft(
            f"Explain tides to a child, part {i}.",
            source="evolved",
            language="en",
            meta={"constraints": dump_constraints([NO_COMMA])},
        )
        for i in range(n)
    ]
    return store.add_candidates(drafts, round).ids


def test_the_store_keeps_pairs_once_with_their_round_and_verdicts(store: Store) -> None:
    a, b = _constrained(store, 2)
    pairs = [
        PreferencePair(a, "tides rise.", "Tides, Rise.", [NO_COMMA.id], model_version="teacher"),
        PreferencePair(a, "tides fall.", "Tides, Fall.", [NO_COMMA.id, LOWER.id]),
        PreferencePair(b, '"waves"', "Waves", [QUOTED.id], chosen_repaired=[QUOTED.id]),
    ]
    assert store.add_preference_pairs(pairs, 3) == 3
    assert store.add_preference_pairs(pairs, 4) == 0  # a re-run changes nothing
    assert store.count_preference_pairs() == 3
    stored = store.preference_pairs_of([b, a])
    assert [p["example_id"] for p in stored] == [b, a, a]
    assert stored[0]["chosen_repaired"] == [QUOTED.id] and stored[0]["round"] == 3
    assert {tuple(p["rejected_failed"]) for p in stored[1:]} == {
        (NO_COMMA.id,),
        (NO_COMMA.id, LOWER.id),
    }
    by_id = store.preference_pairs_by_id([stored[2]["id"], "nope", stored[0]["id"]])
    assert [p["id"] for p in by_id] == [stored[2]["id"], stored[0]["id"]]
    store.set_status([a], "accepted")
    store.set_status([b], "rejected")
    accepted = list(store.iter_preference_pairs(status=["accepted"]))
    assert {e.id for _, e in accepted} == {a} and len(accepted) == 2
    assert len(list(store.iter_preference_pairs())) == 3
    assert list(store.iter_preference_pairs(round=4)) == []


async def test_the_respond_stage_writes_pairs_with_its_batch(store: Store) -> None:
    ids = _constrained(store, 3, round=2)
    replies = {
        "part 0": ["tides follow the moon.", "Tides, Mostly."],
        "part 1": ["Tides, Rise.", "Tides, Fall."],
        "part 2": ["潮汐随月亮涨落。", "潮汐，月亮。", "tides go up."],
    }

    def reply(request) -> Generation:
        text = request.messages[-1]["content"]
        key = next(k for k in replies if k in text)
        return Generation(choices=drawn(*replies[key]))

    model = ScriptedModel(default=reply, model_id="teacher")
    config = ResponderConfig(verifiable_samples=3)
    ctx = stages.StageContext(store, 2, batch_size=2)

    async def agent(batch):
        return await respond(batch, model, PromptLibrary("en"), config, Random(0))

    counts = await stages.respond(ctx, agent, model_version="teacher", template="en/respond")
    assert counts["preference_pairs"] == 3
    rows = store.preference_pairs_of(ids)
    assert Counter(r["example_id"] for r in rows) == {ids[0]: 1, ids[2]: 2}
    assert all(r["round"] == 2 and r["model_version"] == "teacher" for r in rows)
    # Done marks and pairs landed together: a second pass answers nothing and adds nothing.
    calls = len(model.calls)
    await stages.respond(ctx, agent, model_version="teacher", template="en/respond")
    assert len(model.calls) == calls and store.count_preference_pairs() == 3
