"""LangGraph Studio: the served graph opens a project's real dependencies and runs a round.

The last test starts `langgraph dev` itself on 127.0.0.1 and drives a round through its
HTTP API, as Studio does: run to an interrupt, inspect, continue.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from filelock import FileLock
from langgraph.checkpoint.memory import InMemorySaver

from evoinstruct.graph.project import PROJECT_ENV, init_project
from evoinstruct.graph.round.build import PIPELINE, studio_graph
from evoinstruct.graph.round.studio import StudioError, StudioGraph
from evoinstruct.store.seeds import add_seed_file
from tests.daemon_helpers import ROOT, configure_for_server
from tests.fake_teacher import server_reply
from tests.openai_server import OpenAITestServer

SECRET = "sk-test-studio-91c2"
# Stages that report counts; `commit` closes the round and leaves a note instead.
COUNTED = [stage for stage in PIPELINE if stage != "commit"]


@pytest.fixture
def served_project(tmp_path: Path):
    """A project whose every role is the scripted teacher behind a loopback OpenAI server."""
    project = init_project(tmp_path / "proj")
    with OpenAITestServer(reply=server_reply, api_key=SECRET) as server:
        configure_for_server(project.root, server.url)
        with project.open_store() as store:
            add_seed_file(store, project.root / "seeds" / "seed_tasks_en.jsonl")
        yield project


def pool_size(project) -> int:
    conn = sqlite3.connect(f"file:{project.pool_path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM examples").fetchone()[0]
    finally:
        conn.close()


def finished_at(project, number: int) -> str | None:
    conn = sqlite3.connect(f"file:{project.pool_path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT finished_at FROM rounds WHERE number = ?", (number,)).fetchone()
        return row and row[0]
    finally:
        conn.close()


def test_init_writes_env_and_langgraph_json(tmp_path: Path) -> None:
    # The parser `langgraph dev` itself reads .env with (python-dotenv, a langgraph-cli need).
    dotenv_values = pytest.importorskip("dotenv").dotenv_values
    project = init_project(tmp_path / "my proj #1")
    assert dotenv_values(project.env_path)[PROJECT_ENV] == str(project.root)
    spec = json.loads(project.studio_path.read_text(encoding="utf-8"))
    assert spec["env"] == ".env"
    module, variable = spec["graphs"]["evolution_round"].split(":")
    assert isinstance(getattr(importlib.import_module(module), variable)(), StudioGraph)

    # A re-init keeps the user's keys and langgraph.json, and only moves the project line.
    with project.env_path.open("a", encoding="utf-8") as env:
        env.write("OPENAI_API_KEY=sk-mine\n")
    project.studio_path.write_text('{"mine": true}', encoding="utf-8")
    init_project(project.root, force=True)
    values = dotenv_values(project.env_path)
    assert values == {"OPENAI_API_KEY": "sk-mine", PROJECT_ENV: str(project.root)}
    assert project.studio_path.read_text(encoding="utf-8") == '{"mine": true}'


def test_repository_langgraph_json_names_the_factory() -> None:
    spec = json.loads((ROOT / "langgraph.json").read_text(encoding="utf-8"))
    module, variable = spec["graphs"]["evolution_round"].split(":")
    graph = getattr(importlib.import_module(module), variable)()
    assert isinstance(graph, StudioGraph) and graph.checkpointer is None
    assert set(PIPELINE) <= set(graph.get_graph().nodes)


def test_schemas_are_json_schemas() -> None:
    graph = studio_graph()
    assert graph.get_input_jsonschema()["properties"].keys() == {"round"}
    assert {"round", "counts", "notes"} <= graph.get_output_jsonschema()["properties"].keys()
    assert graph.get_context_jsonschema()["properties"].keys() == {"project", "overrides"}


async def test_a_round_from_the_environment_with_an_interrupt(served_project, monkeypatch) -> None:
    project = served_project
    monkeypatch.setenv(PROJECT_ENV, str(project.root))
    monkeypatch.setenv("EVO_TEST_KEY", SECRET)
    before = pool_size(project)
    graph = studio_graph().copy(update={"checkpointer": InMemorySaver()})
    config = {"configurable": {"thread_id": "studio-1"}}

    ran = []
    async for update in graph.astream({}, config, interrupt_before=["respond"]):
        ran.extend(update)
    assert ran == ["plan", "generate", "evolve", "__interrupt__"]
    paused = await graph.aget_state(config)
    assert paused.next == ("respond",) and paused.values["round"] == 1
    assert finished_at(project, 1) is None

    async for update in graph.astream(None, config):
        ran.extend(update)
    assert ran[-5:] == ["respond", "critique", "rewrite", "select", "commit"]
    done = await graph.aget_state(config)
    assert set(COUNTED) <= set(done.values["counts"])
    assert finished_at(project, 1) is not None
    assert pool_size(project) > before

    with pytest.raises(StudioError, match="already ran round 1"):
        async for _ in graph.astream({}, config):
            pass
    # A new thread runs the next round, as the daemon would.
    async for _ in graph.astream({}, {"configurable": {"thread_id": "studio-2"}}):
        pass
    assert finished_at(project, 2) is not None


async def test_a_run_names_what_is_missing(served_project, monkeypatch) -> None:
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    graph = studio_graph()
    with pytest.raises(StudioError, match=PROJECT_ENV):
        await graph.ainvoke({})
    with pytest.raises(StudioError, match="not an evoinstruct project"):
        await graph.ainvoke({}, context={"project": str(served_project.root / "seeds")})
    with FileLock(str(served_project.lock_path)), pytest.raises(StudioError, match="busy"):
        await graph.ainvoke({}, context={"project": str(served_project.root)})
    monkeypatch.setenv("LANGGRAPH_ALLOW_BLOCKING", "false")
    with pytest.raises(StudioError, match="--allow-blocking"):
        await graph.ainvoke({}, context={"project": str(served_project.root)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    """Poll /ok while the server lives; the bound only guards a hang."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"langgraph dev did not come up:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
async def test_langgraph_dev_runs_a_round(served_project, tmp_path: Path) -> None:
    """`langgraph dev` in the project directory, with the files `init` wrote, as a user runs it."""
    if importlib.util.find_spec("langgraph_api") is None:
        pytest.skip("needs the dev server: pip install 'langgraph-cli[inmem]'")
    from langgraph_sdk import get_client

    project = served_project
    # The key travels the way a user's would: in the .env that langgraph.json names.
    with project.env_path.open("a", encoding="utf-8") as env:
        env.write(f"EVO_TEST_KEY={SECRET}\n")
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "LANGSMITH_TRACING": "false",
    }
    for name in (PROJECT_ENV, "EVO_TEST_KEY"):
        env.pop(name, None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "langgraph-dev.log"
    before = pool_size(project)
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "langgraph_cli",
                "dev",
                "--no-browser",
                "--no-reload",
                "--allow-blocking",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=project.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(server, url, log)
        client = get_client(url=url)
        [assistant] = await client.assistants.search(graph_id="evolution_round")
        schemas = await client.assistants.get_schemas(assistant["assistant_id"])
        for kind in ("input_schema", "output_schema", "state_schema", "context_schema"):
            assert schemas[kind], kind
        drawn = await client.assistants.get_graph(assistant["assistant_id"])
        assert set(PIPELINE) | {"train", "evaluate", "promote"} <= {n["id"] for n in drawn["nodes"]}

        thread = (await client.threads.create())["thread_id"]
        await client.runs.wait(thread, "evolution_round", input={}, interrupt_before=["respond"])
        paused = await client.threads.get_state(thread)
        assert paused["next"] == ["respond"], log.read_text()[-3000:]
        assert set(paused["values"]["counts"]) == {"plan", "generate", "evolve"}

        ran = []
        async for part in client.runs.stream(
            thread, "evolution_round", input=None, stream_mode="updates"
        ):
            if part.event == "updates":
                ran.extend(part.data)
            assert part.event != "error", part.data
        assert ran == ["respond", "critique", "rewrite", "select", "commit"]
        done = await client.threads.get_state(thread)
        assert done["next"] == [] and set(COUNTED) <= set(done["values"]["counts"])
        assert pool_size(project) > before and finished_at(project, 1) is not None

        # Studio shows why a run is refused, not "An internal error occurred".
        with pytest.raises(Exception, match="already ran round 1"):
            await client.runs.wait(thread, "evolution_round", input={})
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
