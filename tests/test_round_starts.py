"""The record is what ran: each start of a round stores the config it ran with, and a
resumed round's record, card and report show the settings of each start; the live view says
when a resumed round keeps the plan an earlier start made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoinstruct.cli.inspect import rounds_report
from evoinstruct.cli.report.data import collect
from evoinstruct.cli.status import status_report
from evoinstruct.graph.config import with_overrides
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.report_config import ReportConfig
from evoinstruct.store.export import CardOptions, export_dataset
from evoinstruct.store.starts import config_changes, describe_starts


async def test_a_resumed_round_records_each_starts_settings(
    seeded_deps: Any, tmp_path: Path
) -> None:
    deps = seeded_deps
    deps.config = with_overrides(deps.config, ["loop.evolve_per_round=4"])
    events: list[tuple[str, dict[str, Any]]] = []
    first = Daemon(deps.project, deps, DaemonOptions(rounds=1))

    def stop_after_generate(kind: str, event: dict[str, Any]) -> None:
        events.append((kind, event))
        if kind == "node_done" and event["node"] == "generate":
            first.stop.request()  # as SIGTERM would: the round stops before its next step

    first.progress = stop_after_generate
    result = await first.run()
    assert result.stopped_by_signal and result.rounds_run == []
    # The unfinished round's tokens count already: those of the steps it finished.
    stages = deps.store.round(1)["counts"]["stages"]
    assert set(stages) == {"plan", "generate"} and stages["generate"]["tokens"] > 0
    assert status_report(deps.project)["cost"]["tokens"] == stages["generate"]["tokens"]

    # The next start runs with other settings, as `run --set ...` would.
    deps.config = with_overrides(
        deps.config, ["loop.evolve_per_round=2", "critic.judge.enabled=false"]
    )
    events.clear()
    resumed = Daemon(
        deps.project, deps, DaemonOptions(rounds=0), lambda k, e: events.append((k, e))
    )
    result = await resumed.run()
    assert result.resumed == 1 and result.rounds_run == [1]

    starts = deps.store.round_starts(1)
    assert [(s["start"], s["step"]) for s in starts] == [(1, "start"), (2, "evolve")]
    assert starts[0]["steps"] == ["plan", "generate"]
    assert starts[1]["steps"][0] == "evolve" and starts[1]["steps"][-1] == "commit"
    assert starts[0]["config"]["loop"]["evolve_per_round"] == 4
    assert starts[1]["changes"] == {
        "critic.judge.enabled": [True, False],
        "loop.evolve_per_round": [4, 2],
    }
    notes = [e["text"] for k, e in events if k == "note"]
    assert any("start 2 at evolve: critic.judge.enabled true -> false" in n for n in notes), notes
    # The plan made by start 1 (four parents) stands, and the live view says so.
    assert any("keeps the plan an earlier start made (4 parents" in n for n in notes), notes
    assert deps.store.round(1)["counts"]["stages"]["evolve"]["children"] > 2

    # inspect rounds: the round's config is its last start's, and the starts are listed.
    [row] = [r for r in rounds_report(deps.store) if r["round"] == 1]
    assert row["config"]["loop"]["evolve_per_round"] == 2
    assert row["config"]["critic"]["judge"]["enabled"] is False
    assert [s["step"] for s in row["starts"]] == ["start", "evolve"]
    line = "start 2 at evolve: critic.judge.enabled true -> false, loop.evolve_per_round 4 -> 2"
    assert describe_starts(starts) == [line]

    # The report and the dataset card say the same.
    report = collect(deps.store, ReportConfig(diversity_min_examples=10_000), None, "starts")
    assert next(r for r in report.rounds if r.number == 1).starts == [line]
    export_dataset(
        deps.store, "alpaca", tmp_path / "out" / "train.jsonl", card=CardOptions(name="starts")
    )
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert f"- Round 1, {line}" in card
    assert "- `critic.judge`: off" in card  # the thresholds shown are the last start's


def test_config_changes_name_every_differing_setting() -> None:
    before = {"loop": {"evolve_per_round": 8, "rewrite": True}, "models": {"t": {"path": "/a"}}}
    after = {"loop": {"evolve_per_round": 3, "rewrite": True}, "models": {"t": {"path": "/b"}}}
    assert config_changes(before, after) == {
        "loop.evolve_per_round": [8, 3],
        "models.t.path": ["/a", "/b"],
    }
    assert config_changes(after, after) == {}
