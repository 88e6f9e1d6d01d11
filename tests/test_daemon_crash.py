"""The daemon as a real process: SIGKILL at random points of its progress, SIGTERM, and secrets
that never leak."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from evoinstruct.graph.daemon.command import cli_command
from evoinstruct.graph.project import init_project
from evoinstruct.graph.round.build import PIPELINE
from tests.daemon_helpers import (
    ROOT,
    configure_for_server,
    start_daemon,
    wait_for,
    wait_for_heartbeat,
)
from tests.fake_teacher import server_reply
from tests.openai_server import OpenAITestServer

SECRET = "sk-test-SECRET-4f1a9b"
ENV = {"EVO_TEST_KEY": SECRET}


def _seed(project: Path) -> None:
    """`evoinstruct seed add` of the project's packaged English seeds, as a user runs it."""
    seeds = project / "seeds" / "seed_tasks_en.jsonl"
    subprocess.run(
        cli_command("seed", "add", str(seeds), "-p", str(project)),
        cwd=str(ROOT),
        check=True,
        capture_output=True,
    )


@pytest.fixture
def served_project(tmp_path: Path):
    project = init_project(tmp_path / "proj").root
    with OpenAITestServer(reply=server_reply, delay=0.03, api_key=SECRET) as server:
        configure_for_server(project, server.url)
        _seed(project)
        yield project, server


def query(project: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(project / "pool.db", timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def finished_rounds(project: Path) -> int:
    return query(project, "SELECT count(*) FROM rounds WHERE finished_at IS NOT NULL")[0][0]


def unfinished(project: Path) -> bool:
    rows = query(project, "SELECT finished_at FROM rounds ORDER BY number DESC LIMIT 1")
    return bool(rows) and rows[0][0] is None


def accepted_ids(project: Path) -> set[str]:
    return {r[0] for r in query(project, "SELECT id FROM examples WHERE status = 'accepted'")}


# Where a kill may land: a round and a node the heartbeat names. Only nodes with teacher calls
# still ahead in their round (the critique and rewrite calls at least), so that with the
# teacher paused the daemon cannot finish the round before the kill reaches it.
KILL_STAGES = ("plan", "generate", "evolve", "respond", "critique")


def kill_targets(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """`n` distinct (round, stage index) points over three rounds, in the order they come."""
    points = [(r, PIPELINE.index(s)) for r in (1, 2, 3) for s in KILL_STAGES]
    return sorted(rng.sample(points, n))


def at_or_past(target: tuple[int, int]):
    def reached(row: dict) -> bool:
        # Stages that are not nodes ("starting", sub-stages a node reports) say nothing new.
        if row["round"] is None or row["stage"] not in PIPELINE:
            return False
        return (row["round"], PIPELINE.index(row["stage"])) >= target

    return reached


# The timeout is a hang guard for a dozen daemon starts on a loaded machine; every wait
# inside is bounded by progress instead (a heartbeat that stops changing fails the test).
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_at_random_moments_loses_nothing(served_project) -> None:
    project, server = served_project
    targets = kill_targets(random.Random(7), 10)  # seeded: the same kill points every run
    log = project / "test-daemon.log"
    kills = 0
    accepted_before_kills: set[str] = set()
    starts = 0
    while finished_rounds(project) < 3:
        starts += 1
        assert starts < 40, "the daemon never finished three rounds"
        # Resume only, while a round is unfinished; else one new round. Three rounds in all.
        process = start_daemon(
            project, "--rounds", "0" if unfinished(project) else "1", env=ENV, log=log
        )
        if kills < len(targets):
            round_, stage = targets[kills]
            # False when this start ends first (it had only the rest of an earlier round to
            # do): the next start goes on towards the same point.
            if wait_for_heartbeat(
                process,
                project,
                at_or_past(targets[kills]),
                what=f"round {round_} to reach {PIPELINE[stage]} (kill {kills + 1})",
                log=log,
            ):
                server.pause()  # the daemon cannot get past its next teacher call
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=120)
                server.resume()
                # What was accepted when the process died must all be there at the end.
                accepted_before_kills |= accepted_ids(project)
                kills += 1
        assert process.wait(timeout=120) in (0, -signal.SIGKILL)
    assert kills == len(targets) == 10

    rounds = query(project, "SELECT number, finished_at FROM rounds ORDER BY number")
    assert [r[0] for r in rounds] == [1, 2, 3] and all(r[1] for r in rounds)
    # No accepted example was lost.
    assert accepted_before_kills <= accepted_ids(project)
    # Killing changed nothing: an uninterrupted run of the same three rounds gives the same pool
    # (content ids, statuses, lineage) and the same rejections — no duplicates, nothing extra.
    clean = init_project(project.parent / "clean").root
    configure_for_server(clean, server.url)
    _seed(clean)
    assert start_daemon(clean, "--rounds", "3", env=ENV, log=log).wait(timeout=120) == 0
    pool = "SELECT id, status, source, parent_id, operation, round FROM examples ORDER BY id"
    assert query(project, pool) == query(clean, pool)
    reasons = "SELECT stage, reason, count(*) FROM rejections GROUP BY stage, reason ORDER BY 1, 2"
    assert query(project, reasons) == query(clean, reasons)
    # Complete provenance.
    machine = query(
        project,
        "SELECT id, source, parent_id, operation, round, model_version, template FROM examples WHERE source != 'seed'",
    )
    assert machine
    for eid, source, parent, operation, round_, model_version, template in machine:
        assert round_ in (1, 2, 3) and model_version and template, eid
        if source in ("evolved", "rewritten"):
            assert (
                parent
                and operation
                and query(project, "SELECT 1 FROM examples WHERE id = ?", (parent,))
            ), eid
    # No orphan rows.
    assert (
        query(
            project, "SELECT count(*) FROM scores WHERE example_id NOT IN (SELECT id FROM examples)"
        )[0][0]
        == 0
    )
    orphans = "SELECT count(*) FROM rejections WHERE example_id IS NOT NULL AND example_id NOT IN (SELECT id FROM examples)"
    assert query(project, orphans)[0][0] == 0
    assert (
        query(
            project,
            "SELECT count(*) FROM examples WHERE status = 'candidate' AND output IS NOT NULL",
        )[0][0]
        == 0
    )


@pytest.mark.slow
def test_sigterm_stops_at_a_step_boundary_and_resumes(served_project) -> None:
    project, server = served_project
    log = project / "test-daemon.log"
    process = start_daemon(project, "--rounds", "1", env=ENV, log=log)
    assert wait_for(
        lambda: query(project, "SELECT count(*) FROM examples WHERE round = 1")[0][0] > 0, 60
    )
    # Paused, the teacher holds the step in flight while the signal goes in: the round cannot
    # end before the daemon has seen it.
    server.pause()
    process.send_signal(signal.SIGTERM)
    server.resume()
    assert process.wait(timeout=30) == 0
    assert unfinished(project)
    assert "stopping before" in log.read_text()
    resumed = start_daemon(project, "--rounds", "0", env=ENV, log=log)
    assert resumed.wait(timeout=120) == 0
    assert finished_rounds(project) == 1
    assert "resuming round 1" in log.read_text()


@pytest.mark.slow
def test_api_key_never_reaches_disk(served_project, tmp_path: Path) -> None:
    project, server = served_project
    log = project / "daemon-secret.log"
    assert start_daemon(project, "--rounds", "1", env=ENV, log=log).wait(timeout=120) == 0
    assert server.requests > 0  # the key was used: the server rejects requests without it
    export = tmp_path / "export.jsonl"
    subprocess.run(
        cli_command(
            "export", "-o", str(export), "--with-lineage", "--status", "all", "-p", str(project)
        ),
        cwd=str(ROOT),
        check=True,
        capture_output=True,
    )
    for path in [
        *project.glob("*.db"),
        *project.glob("*.db-wal"),
        log,
        export,
        project / "evoinstruct.toml",
    ]:
        if path.exists():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_detached_daemon_shows_in_status_and_stops(served_project) -> None:
    project, _server = served_project

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            cli_command(*args, "-p", str(project)),
            cwd=str(ROOT),
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=120,
        )

    started = cli("run", "--forever", "--detach")
    assert started.returncode == 0 and "Daemon started" in started.stdout

    def running() -> dict | None:
        import json

        daemon = json.loads(cli("status", "--json").stdout)["daemon"]
        return daemon if daemon and daemon["running"] and daemon["round"] else None

    assert wait_for(running, 60, interval=0.3)
    daemon = running()
    assert daemon["pid"] and daemon["stage"] and daemon["heartbeat_at"]
    again = cli("run", "--detach")
    assert again.returncode == 2 and "already running" in again.stderr
    stopped = cli("stop")
    assert stopped.returncode == 0 and f"pid {daemon['pid']} stopped" in stopped.stdout
    assert not cli("status", "--json").stdout.count('"running": true')
    assert (
        "stopping before" in (project / "daemon.log").read_text() or finished_rounds(project) >= 1
    )


@pytest.mark.slow
def test_a_teacher_that_stops_answering_ends_a_forever_daemon(served_project) -> None:
    project, server = served_project
    log = project / "test-daemon.log"
    process = start_daemon(project, "--forever", env=ENV, log=log)
    assert wait_for(lambda: finished_rounds(project) >= 1, 60)
    server.inject("500", times=100_000)  # the server now fails every call
    assert process.wait(timeout=120) == 1
    assert "cannot start the round: teacher: the server failed" in log.read_text()
