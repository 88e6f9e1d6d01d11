"""A stop request ends the daemon in seconds even while a model call hangs: the step in flight
is cancelled after a short grace, nothing of its unfinished batch is written, and the next
start runs the step again from its checkpoint."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.project import Project, init_project
from evoinstruct.graph.round.deps import deps_for_project
from evoinstruct.graph.round.threads import run_config
from evoinstruct.store.seeds import add_seed_file
from evoinstruct.store.store import open_store
from tests.daemon_helpers import configure_for_server, heartbeat, start_daemon, wait_for
from tests.fake_teacher import server_reply
from tests.openai_server import OpenAITestServer, eventually

KEY = "sk-test-stop-7c1d"


def _project(tmp_path: Path, url: str) -> Project:
    """Seeds and a teacher whose calls would time out in 60 s: never within the test."""
    project = init_project(tmp_path / "proj")
    configure_for_server(project.root, url)
    text = project.config_path.read_text(encoding="utf-8")
    project.config_path.write_text(text.replace("timeout_s = 10", "timeout_s = 60"), "utf-8")
    assert "timeout_s = 60" in project.config_path.read_text(encoding="utf-8")
    with open_store(project.pool_path) as store:
        add_seed_file(store, project.root / "seeds" / "seed_tasks_en.jsonl")
    return project


def _count(project: Project, sql: str) -> int:
    conn = sqlite3.connect(project.pool_path, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


async def _next_step(project: Project, round_: int) -> tuple[str, ...]:
    from evoinstruct.graph.round.build import build_graph
    from evoinstruct.graph.round.checkpoints import open_checkpointer

    async with open_checkpointer(project.checkpoints_path) as saver:
        graph = build_graph().compile(checkpointer=saver, interrupt_before="*")
        return tuple((await graph.aget_state(run_config(round_))).next)


async def test_a_stop_cancels_a_hung_step_and_the_next_start_runs_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVO_TEST_KEY", KEY)
    with OpenAITestServer(reply=server_reply, api_key=KEY) as server:
        project = _project(tmp_path, server.url)
        deps = deps_for_project(project, project.load_config())
        events: list[tuple[str, dict[str, Any]]] = []
        daemon = Daemon(
            project,
            deps,
            DaemonOptions(rounds=1, stop_grace_s=0.5),
            lambda kind, event: events.append((kind, event)),
        )
        server.pause()  # every call is held: the generate step hangs on its first batch
        run = asyncio.create_task(daemon.run())
        await eventually(lambda: server.in_flight > 0, "the generate step's calls in flight")
        assert (deps.store.daemon_info() or {}).get("stage") == "generate"
        project.stop_path.touch()  # what `evoinstruct stop` leaves, besides its SIGTERM
        async with asyncio.timeout(60):  # hang guard: a stop waits for nothing that hangs
            result = await run
        await deps.models.aclose()
        deps.store.close()
        assert result.stopped_by_signal and result.rounds_run == []
        assert ("stopping", {"round": 1, "next": ["generate"]}) in events
        # Nothing of the cancelled step was written; its checkpoint is still before it.
        assert _count(project, "SELECT count(*) FROM examples WHERE round = 1") == 0
        assert await _next_step(project, 1) == ("generate",)
        server.resume()

        # The next start resumes round 1 at generate, runs it again and finishes the round.
        deps = deps_for_project(project, project.load_config())
        events.clear()
        resumed = Daemon(
            project, deps, DaemonOptions(rounds=0), lambda kind, event: events.append((kind, event))
        )
        async with asyncio.timeout(300):  # hang guard
            result = await resumed.run()
        await deps.models.aclose()
        assert result.resumed == 1 and result.rounds_run == [1] and not result.stopped_by_signal
        assert any(k == "node_done" and e["node"] == "generate" for k, e in events)
        assert deps.store.round(1)["finished_at"]
        deps.store.close()
    assert _count(project, "SELECT count(*) FROM examples WHERE round = 1") > 0
    orphans = (
        "SELECT count(*) FROM rejections WHERE example_id IS NOT NULL"
        " AND example_id NOT IN (SELECT id FROM examples)"
    )
    assert _count(project, orphans) == 0


async def test_max_seconds_cuts_a_step_in_flight_like_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-seconds used to wait for the next step boundary (one CPU step can take ten
    minutes); now the step in flight gets the grace and is cancelled, and resumes next time."""
    monkeypatch.setenv("EVO_TEST_KEY", KEY)
    with OpenAITestServer(reply=server_reply, api_key=KEY) as server:
        project = _project(tmp_path, server.url)
        deps = deps_for_project(project, project.load_config())
        clock = {"now": 0.0}
        deps.clock = lambda: clock["now"]
        events: list[tuple[str, dict[str, Any]]] = []
        daemon = Daemon(
            project,
            deps,
            DaemonOptions(rounds=1, max_seconds=60, stop_grace_s=0.5),
            lambda kind, event: events.append((kind, event)),
        )
        server.pause()  # the generate step hangs on its first batch
        run = asyncio.create_task(daemon.run())
        await eventually(lambda: server.in_flight > 0, "the generate step's calls in flight")
        clock["now"] = 61.0  # the time limit passes while the step is in flight
        async with asyncio.timeout(60):  # hang guard
            result = await run
        server.resume()
        await deps.models.aclose()
        deps.store.close()
    assert result.stopped_by_time and not result.stopped_by_signal and result.rounds_run == []
    notes = [e["text"] for kind, e in events if kind == "note"]
    assert any(n.startswith("time limit (--max-seconds) reached") for n in notes), notes
    assert await _next_step(project, 1) == ("generate",)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["model check", "step"])
def test_sigterm_stops_a_daemon_on_a_dripping_teacher_within_seconds(
    tmp_path: Path, where: str
) -> None:
    """Every answer drips a byte every 2 s; the calls' deadline (60 s) is far off. One SIGTERM
    ends the process within 10 s, in the model check before a round or in a step."""
    with OpenAITestServer(
        reply=server_reply, api_key=KEY, fault_rate=1.0, fault_kinds=("drip",), fault_delay=2.0
    ) as server:
        project = _project(tmp_path, server.url)
        log = project.root / "stop.log"
        args = ["--rounds", "1"] + (["--no-check"] if where == "step" else [])
        process = start_daemon(project.root, *args, env={"EVO_TEST_KEY": KEY}, log=log)
        stage = "generate" if where == "step" else "starting"

        def dripping() -> bool:
            row = heartbeat(project.root)
            return (
                server.in_flight > 0
                and row is not None
                and row["pid"] == process.pid
                and row["stage"] == stage
            )

        assert wait_for(dripping, 120), log.read_text(errors="replace")[-3000:]
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)  # hang guard; the bound is checked below
        stopped_after = time.monotonic() - sent
        text = log.read_text(errors="replace")
        assert code == 0, text[-3000:]
        assert stopped_after < 10, f"stopped {stopped_after:.1f} s after SIGTERM\n{text[-3000:]}"
        assert "cancelling" in text
        assert (heartbeat(project.root) or {}).get("state") == "stopped"
