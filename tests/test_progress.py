"""The live view and the plain log render the daemon's events without tripping over each other."""

from __future__ import annotations

import io
import re

import pytest

from evoinstruct.graph.cli.progress import ProgressView

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
