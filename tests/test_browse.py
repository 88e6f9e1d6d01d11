"""`evoinstruct browse`: Datasette on a real pool with lineage, read-only, live."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("datasette")

from evoinstruct.cli.browse import DATABASE, make_datasette
from evoinstruct.cli.main import main
from evoinstruct.graph.daemon.command import cli_command
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.project import init_project
from evoinstruct.graph.round.deps import deps_for_project
from evoinstruct.models.factory import ModelSet
from evoinstruct.store.seeds import add_seed_file
from tests.daemon_helpers import ROOT
from tests.fake_teacher import scripted_teacher


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pool after one real round on English and Chinese seeds: evolved and rewritten
    examples, scores, rejections, a round row with its config."""
    project = init_project(tmp_path_factory.mktemp("browse") / "proj")
    # Small, so the fixture stays a few seconds; the round still evolves and rewrites.
    config = project.load_config(["loop.generate_calls=2", "loop.evolve_per_round=6"])
    teacher = scripted_teacher()
    models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
    deps = deps_for_project(project, config, models=models)
    try:
        for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
            add_seed_file(deps.store, project.root / "seeds" / name)
        asyncio.run(Daemon(project, deps, DaemonOptions(rounds=1)).run())
    finally:
        deps.store.close()
    return project.pool_path


def sql(path: Path, query: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def schema(path: Path) -> list[tuple]:
    return sql(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")


async def get(ds: Any, path: str) -> Any:
    response = await ds.client.get(path)
    assert response.status_code == 200, (path, response.text[:500])
    return response


async def rows(ds: Any, path: str) -> list[dict[str, Any]]:
    sep = "&" if "?" in path else "?"
    return (await get(ds, f"/{DATABASE}/{path}{sep}_shape=array")).json()


@pytest.fixture
async def ds(pool: Path):
    datasette = make_datasette(pool)
    await datasette.invoke_startup()
    yield datasette
    for database in datasette.databases.values():
        database.close()


async def test_accepted_lists_examples_with_scores(ds, pool: Path) -> None:
    listed = await rows(ds, "accepted.json")
    accepted = {r[0] for r in sql(pool, "SELECT id FROM examples WHERE status = 'accepted'")}
    assert {r["id"] for r in listed} == accepted
    judged = [r for r in listed if r["judge"] is not None]
    assert judged and all("judge.accuracy" in json.loads(r["scores"]) for r in judged)
    one_round = await rows(ds, "accepted.json?round=0")
    assert one_round and {r["round"] for r in one_round} == {0}


async def test_ancestry_returns_a_childs_chain(ds, pool: Path) -> None:
    grandchild, parent, grandparent = sql(
        pool,
        "SELECT c.id, p.id, p.parent_id FROM examples c JOIN examples p ON p.id = c.parent_id "
        "WHERE p.parent_id IS NOT NULL ORDER BY c.id LIMIT 1",
    )[0]
    chain = await rows(ds, f"ancestry.json?id={grandchild}")
    assert [r["id"] for r in chain][:3] == [grandchild, parent, grandparent]
    assert [r["generation"] for r in chain] == list(range(len(chain)))
    assert chain[-1]["parent_id"] is None  # up to where it started
    below = await rows(ds, f"descendants.json?id={grandparent}")
    assert {parent, grandchild} <= {r["id"] for r in below}


async def test_search_finds_chinese_and_english(ds, pool: Path) -> None:
    zh_id, zh_text = sql(pool, "SELECT id, instruction FROM examples WHERE language = 'zh'")[0]
    word = zh_text[3:5]  # two characters: a length FTS5's trigram tokenizer cannot match
    assert zh_id in {r["id"] for r in await rows(ds, f"search.json?q={word}")}
    en_id, en_text = sql(
        pool, "SELECT id, instruction FROM examples WHERE language = 'en' AND source = 'seed'"
    )[0]
    word = max(en_text.split(), key=len).strip(".,:;")
    found = await rows(ds, f"search.json?q={word.upper()}")
    assert en_id in {r["id"] for r in found}
    assert await rows(ds, "search.json?q=") == []


async def test_lineage_and_json_render_as_html(ds, pool: Path) -> None:
    child, parent = sql(
        pool, "SELECT id, parent_id FROM examples WHERE parent_id IS NOT NULL ORDER BY id"
    )[0]
    page = (await get(ds, f"/{DATABASE}/examples/{child}")).text
    assert f'<a href="/{DATABASE}/examples/{parent}">{parent}</a>' in page
    assert f'href="/{DATABASE}/ancestry?id={child}"' in page
    scored = sql(pool, "SELECT example_id FROM scores ORDER BY id")[0][0]
    page = (await get(ds, f"/{DATABASE}/scores?example_id={scored}")).text
    assert f'<a href="/{DATABASE}/examples/{scored}">' in page
    page = (await get(ds, f"/{DATABASE}/rejections")).text
    evidence = re.search(r'<td class="col-evidence[^"]*">(.*?)</td>', page, re.S)
    assert evidence and evidence.group(1).startswith("<pre")
    page = (await get(ds, f"/{DATABASE}/rounds")).text
    assert "<details><summary>" in page  # the round's whole config, folded


def test_reads_a_live_pool_and_changes_nothing(tmp_path: Path) -> None:
    project = init_project(tmp_path / "proj")
    before = schema(project.pool_path)
    writer = project.open_store()  # a daemon's connection, open throughout
    try:

        async def count(ds: Any) -> int:
            return (await rows(ds, "examples.json?_col=id&_size=max")).__len__()

        async def scenario() -> tuple[int, int]:
            ds = make_datasette(project.pool_path)
            await ds.invoke_startup()
            first = await count(ds)
            add_seed_file(writer, project.root / "seeds" / "seed_tasks_zh.jsonl")
            return first, await count(ds)

        first, then = asyncio.run(scenario())
    finally:
        writer.close()
    assert first == 0 and then > 0  # not immutable: the writer's commit is seen at once
    assert schema(project.pool_path) == before


def test_browse_without_datasette_is_one_line_exit_2(pool: Path, monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "datasette" else real(name)
    )
    with pytest.raises(SystemExit) as exit_:
        main(["browse", "-p", str(pool.parent)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'evoinstruct[browse]'" in err


def test_browse_refuses_a_busy_port(pool: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(["browse", "-p", str(pool.parent), "--port", str(port)])
    assert exit_.value.code == 1
    assert f"port {port}" in capsys.readouterr().err


def test_browse_command_serves_the_pool(pool: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "browse.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cli_command("browse") + ["-p", str(pool.parent), "--port", str(port)],
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/{DATABASE}"
        deadline = time.monotonic() + 60
        body = None
        while body is None and process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/accepted.json?_shape=array", timeout=2) as r:
                    body = json.load(r)
            except OSError:
                time.sleep(0.1)
        assert body, log.read_text()
        assert url in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
