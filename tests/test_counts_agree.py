"""Every view of a round's drops reads one count: the live view, `status`, `inspect
rejections`, the report and the dataset card agree after a round with drops of several kinds.

The regression: a weak generator wrote the same task several times; each copy was dropped as
too similar to the first, with the same evidence, and the store kept one row for all of them
while the live view counted each (12 dropped, 7 too_similar, on screen; 6 and 1 recorded).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

from evoinstruct.cli.inspect import rejections_report
from evoinstruct.cli.progress import ProgressView
from evoinstruct.cli.report.data import collect
from evoinstruct.cli.status import status_report
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.report_config import ReportConfig
from evoinstruct.models.base import ChatRequest
from evoinstruct.store.export import CardOptions, export_dataset
from tests.fake_teacher import teacher_reply

REPEATED = "Explain how ocean tides form for a curious teenager, step by step."


def _repetitive_teacher(request: ChatRequest) -> str:
    """The fake teacher, but its task lists repeat one task three times and ask for a picture."""
    text = request.messages[-1]["content"]
    reply = teacher_reply(list(request.messages))
    if text.startswith("Here are some example tasks"):
        first = int(re.search(r"Number them (\d+) to", text).group(1))  # type: ignore[union-attr]
        lines = reply.splitlines()
        extra = [REPEATED] * 3 + ["Draw a picture of a lighthouse at dusk for a school newsletter."]
        reply = "\n".join(lines[:2] + [f"{first + 2 + i}. {task}" for i, task in enumerate(extra)])
    return reply


def _flat(counts: dict[str, dict[str, int]]) -> Counter[tuple[str, str]]:
    return Counter({(s, r): n for s, reasons in counts.items() for r, n in reasons.items()})


async def test_the_live_view_status_inspect_report_and_card_count_the_same_drops(
    seeded_deps: Any, tmp_path: Path
) -> None:
    deps = seeded_deps
    deps.extras["teacher"].default = _repetitive_teacher
    events: list[dict[str, Any]] = []
    out = io.StringIO()
    with ProgressView(out, live=False) as view:

        def sink(kind: str, event: dict[str, Any]) -> None:
            if kind == "event":
                events.append(event)
            view(kind, event)

        await Daemon(deps.project, deps, DaemonOptions(rounds=1), sink).run()

    store = deps.store
    recorded = _flat(store.rejection_counts(1, verdicts_only=True))
    # The three copies: the first is kept, the two after it dropped, one row each (a copy
    # within one call's list is "repeated", one of an earlier call's task "too_similar").
    assert recorded[("generate", "repeated")] + recorded[("generate", "too_similar")] >= 2
    assert recorded[("generate", "blacklist:draw")] + recorded[("generate", "blacklist:picture")]
    assert len({stage for stage, _ in recorded}) >= 3, recorded  # drops of several kinds

    # The live view: each stage's last report of what it dropped (eliminate is the evolver's
    # check of answered children; the store records it under "evolve").
    live: Counter[tuple[str, str]] = Counter()
    last: dict[str, dict[str, int]] = {}
    for event in events:
        if "rejected" in event:
            last[event["stage"]] = event["rejected"]
    for stage, reasons in last.items():
        for reason, n in reasons.items():
            live[("evolve" if stage == "eliminate" else stage, reason)] += n
    assert live == recorded
    summary = out.getvalue()
    generate_dropped = sum(n for (s, _), n in recorded.items() if s == "generate")
    line = next(x for x in summary.splitlines() if x.startswith("round 1 generate:"))
    assert f"dropped {generate_dropped} (repeated {recorded[('generate', 'repeated')]}" in line

    everything = _flat(store.rejection_counts())
    # status: every recorded rejection, failed calls included.
    assert status_report(deps.project)["rejections"] == sum(everything.values())
    # inspect rejections: the groups and their counts.
    groups = rejections_report(store, stage=None, reason=None, samples=1)
    assert Counter({(g["stage"], g["reason"]): g["count"] for g in groups}) == everything
    # The report's rounds table and funnel read the round's counts.
    report = collect(store, ReportConfig(diversity_min_examples=10_000), None, "counts")
    row = next(r for r in report.rounds if r.number == 1)
    assert _flat(row.rejections) == _flat(store.rejection_counts(1))
    # The dataset card's table of drops.
    result = export_dataset(
        store, "alpaca", tmp_path / "out" / "train.jsonl", card=CardOptions(name="counts")
    )
    assert result.card_data is not None
    assert Counter({(s, r): n for s, r, n in result.card_data.rejections}) == everything
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    n = recorded[("generate", "too_similar")]
    assert f"| generate | too_similar | {n} |" in card
