"""The live view and the plain log render the daemon's events without tripping over each other."""

from __future__ import annotations

import io
import re

import pytest

from evoinstruct.cli.progress import ProgressView

EVENTS = [
    ("event", {"round": 1, "stage": "generate", "done": 0, "total": 2}),
    (
        "event",
        {
            "round": 1,
            "stage": "generate",
            "done": 2,
            "total": 2,
            "final": True,
            "accepted": 5,
            "rejected": {"too_similar": 2, "blacklist:image": 1},
            "new_calls": 4,
            "new_tokens": 900,
        },
    ),
    ("node_done", {"round": 1, "node": "generate", "update": {}}),
    ("round_done", {"round": 1, "counts": {"select": {"accepted": 5}}}),
    ("event", {"round": 2, "stage": "generate", "done": 1, "total": 2}),
    ("node_done", {"round": 1, "node": "select", "update": {}}),
    ("node_done", {"round": 2, "node": "generate", "update": {}}),
    ("stopping", {"round": 2, "next": ["evolve"]}),
]


@pytest.mark.parametrize("live", [True, False])
def test_events_render(live: bool) -> None:
    out = io.StringIO()
    with ProgressView(out, live=live) as view:
        for kind, event in EVENTS:
            view(kind, event)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    # The finished round keeps each stage's counts and top drop reasons in one line.
    assert (
        "round 1 finished: 5 accepted (generate kept 5; dropped 3 (too_similar 2, "
        "blacklist:image 1)); 4 model calls, 900 tokens" in text
    )
    assert "stopping before evolve" in text
    if not live:
        assert "round 1 generate: 2/2 kept 5; dropped 3 (too_similar 2, blacklist:image 1)" in text


def test_a_sub_stage_of_unknown_size_completes_with_its_node() -> None:
    """`eliminate` runs inside respond and reports no total: its bar must not stay at n/?."""
    with ProgressView(io.StringIO(), live=True) as view:
        view("event", {"round": 1, "stage": "respond", "done": 3, "total": 3, "final": True})
        view("event", {"round": 1, "stage": "eliminate", "done": 2, "total": None})
        view("node_done", {"round": 1, "node": "respond", "update": {}})
        assert view.progress is not None
        assert all(task.finished for task in view.progress.tasks)
        eliminate = next(t for t in view.progress.tasks if t.description == "eliminate")
        assert eliminate.completed == eliminate.total == 2


def test_without_a_terminal_a_running_step_writes_a_line_every_ten_seconds() -> None:
    """A log shows progress inside a long step: the step's latest count and what the models
    are doing, at least every PLAIN_EVERY_S seconds, never more often."""
    from evoinstruct.cli.progress import PLAIN_EVERY_S

    now = {"t": 0.0}
    out = io.StringIO()
    activity = {"round": 1, "stage": "respond", "in_flight": 16, "done": 32, "failed": 0,
                "cached": 4, "tokens": 5120, "tokens_per_s": 41.2}  # fmt: skip
    with ProgressView(out, live=False, clock=lambda: now["t"]) as view:
        view("event", {"round": 1, "stage": "respond", "done": 16, "total": 64})
        for second in range(1, 31):  # activity every 2 s, as the daemon sends it
            now["t"] = float(second)
            if second % 2 == 0:
                view("activity", {**activity, "tokens": 5120 + 40 * second})
        view("event", {"round": 1, "stage": "train", "done": 3, "total": 30, "loss": 1.25})
    lines = out.getvalue().splitlines()
    gaps = [8, 16, 24]  # activity every 2 s, a line once PLAIN_EVERY_S have passed
    assert PLAIN_EVERY_S == 8.0 and len(lines) == len(gaps)
    assert lines[0] == (
        "round 1 respond: 16/64; models: 16 calls in flight, 32 done, 4 from the cache; "
        "5,440 tokens (41/s)"
    )


def test_a_step_that_has_reported_nothing_yet_is_named_in_the_log() -> None:
    now = {"t": 0.0}
    out = io.StringIO()
    with ProgressView(out, live=False, clock=lambda: now["t"]) as view:
        view("event", {"round": 1, "stage": "evolve", "done": 8, "total": 8, "final": True})
        now["t"] = 9.0
        view("activity", {"round": 1, "stage": "respond", "in_flight": 8, "done": 3,
                          "tokens": 173, "tokens_per_s": 2.25})  # fmt: skip
    assert out.getvalue().splitlines()[-1] == (
        "round 1 respond: running; models: 8 calls in flight, 3 done; 173 tokens (2.2/s)"
    )


def test_on_a_terminal_the_models_have_a_row_of_their_own() -> None:
    out = io.StringIO()
    with ProgressView(out, live=True) as view:
        view("activity", {"round": 2, "stage": "generate", "in_flight": 1, "done": 0,
                          "failed": 0, "cached": 0, "tokens": 37, "tokens_per_s": 3.25})  # fmt: skip
        assert view.progress is not None
        row = next(t for t in view.progress.tasks if t.description == "models")
        assert row.fields["summary"] == "models: 1 calls in flight, 0 done; 37 tokens (3.2/s)"


def test_scoring_a_model_before_the_first_round_shows_its_answers_in_the_log() -> None:
    """`demo --real` and the bench answer the whole suite with the base model before round 1
    (minutes on a CPU): its count so far reaches the log like a step's, naming the model."""
    from evoinstruct.cli.real_demo import answering

    now = {"t": 0.0}
    out = io.StringIO()
    with ProgressView(out, live=False, clock=lambda: now["t"]) as view:
        report = answering(view, "base")
        for done in range(0, 721, 16):
            now["t"] = done / 16  # one batch of 16 answers a second
            report(done, 720)
    lines = out.getvalue().splitlines()
    assert lines[0] == "evaluate (base): 128/720"
    assert len(lines) == 720 // 16 // 8
    # On a terminal each model scored gets a bar of its own, with no round number.
    with ProgressView(io.StringIO(), live=True) as view:
        answering(view, "base")(720, 720)
        answering(view, "v1")(32, 720)
        assert view.progress is not None
        bars = {t.description: (t.fields["round"], t.completed) for t in view.progress.tasks}
        assert bars == {"evaluate (base)": ("-", 720), "evaluate (v1)": ("-", 32)}
