"""Typed failures: a failed model call is a Rejection with a FailureKind, stored as before."""

from __future__ import annotations

from typing import get_args

from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.models import base
from evoinstruct.models.base import Choice, Failure, Generation
from evoinstruct.store.records import Example, ExampleDraft, FailureKind, Rejection


def test_failure_kinds_are_the_backends_kinds() -> None:
    assert {k.value for k in FailureKind} == set(get_args(base.FailureKind))


def test_a_failed_call_is_typed_and_keeps_its_stored_reason() -> None:
    failed = Rejection.failed_call("critique", "timeout", example_id="e1")
    assert failed.failure is FailureKind.TIMEOUT and not failed.is_verdict
    assert failed.reason == "model_failure:timeout"  # what reports and old databases facet on
    verdict = Rejection("critique", "judge_below_threshold", example_id="e1")
    assert verdict.failure is None and verdict.is_verdict
    # A row of an existing database reads back as the same typed failure.
    row = {"stage": "respond", "reason": "model_failure:rate_limit", "evidence": None}
    assert Rejection.from_row(row).failure is FailureKind.RATE_LIMIT
    # A reason that merely looks alike is a verdict: there is no prefix matching.
    assert Rejection("x", "model_failure:bogus").is_verdict


class _Outcome(AgentOutcome):
    stage = "respond"


def _example(eid: str) -> Example:
    return Example(eid, f"Task {eid}", round=1)


def test_one_outcome_counts_calls_and_builds_every_rejection() -> None:
    outcome = _Outcome()
    answer = Generation([Choice("fine", "stop")], prompt_tokens=3, completion_tokens=2)
    assert outcome.count(answer) and not outcome.count(Failure("server", "HTTP 503"))
    outcome.fail(Failure("server", "HTTP 503", attempts=3), _example("a"))
    outcome.reject("empty_response", _example("b"), raw_output="")
    outcome.reject("too_short", ExampleDraft("Draft task"))
    assert outcome.calls == 2 and outcome.tokens == 5 and outcome.failures == {"server": 1}
    assert outcome.usage() == {"calls": 2, "tokens": 5}
    assert outcome.failed_ids() == {"a"}
    assert [r.reason for r in outcome.verdicts()] == ["empty_response", "too_short"]
    failed, empty, draft = outcome.rejections
    assert failed.stage == "respond" and failed.evidence == {"message": "HTTP 503", "attempts": 3}
    assert (empty.example_id, empty.text) == ("b", "Task b")
    assert (draft.example_id, draft.text) == (None, "Draft task")  # a draft has no id yet


def test_the_store_keeps_failed_calls_and_seeds(store) -> None:
    """`reject` is the one rule: a failed call drops nothing, nor does any verdict on a seed."""
    ids = store.add_candidates(
        [
            ExampleDraft("Seed task", source="seed"),
            ExampleDraft("Filter row", output="x", source="filter_input"),
            ExampleDraft("Generated task", output="y"),
        ],
        round=1,
    ).ids
    seed, row, generated = ids
    store.reject(
        [
            Rejection("respond", "truncated", example_id=seed),
            Rejection("select", "near_duplicate", example_id=row),
            Rejection.failed_call("critique", "timeout", example_id=generated),
        ],
        1,
    )
    assert [e.status for e in store.get_many(ids)] == ["candidate", "rejected", "candidate"]
    assert len(store.rejections(round=1)) == 3  # every one is recorded
    assert store.rejections(example_id=generated)[0]["reason"] == "model_failure:timeout"
