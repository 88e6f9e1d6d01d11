"""A tampered checkpoints.db cannot make evoinstruct import and call code."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import ormsgpack
import pytest
from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_SINGLE_ARG, JsonPlusSerializer

from evoinstruct.cli.inspect import checkpoints_report
from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
from evoinstruct.graph.project import init_project
from evoinstruct.graph.round.checkpoints import strict_serializer
from evoinstruct.graph.round.deps import deps_for_project
from evoinstruct.models.factory import ModelSet
from evoinstruct.store.seeds import add_seed_file
from tests.fake_teacher import scripted_teacher


def _evil(marker: Path) -> ormsgpack.Ext:
    """What an attacker writes: 'call os.system with this argument' in LangGraph's ext format."""
    call = ormsgpack.packb(("os", "system", f"touch {marker}"))
    return ormsgpack.Ext(EXT_CONSTRUCTOR_SINGLE_ARG, call)


@pytest.fixture
def project_after_one_round(tmp_path: Path):
    project = init_project(tmp_path / "proj")
    config = project.load_config()
    teacher = scripted_teacher()
    models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
    deps = deps_for_project(project, config, models=models)
    add_seed_file(deps.store, project.root / "seeds" / "seed_tasks_en.jsonl")
    asyncio.run(Daemon(project, deps, DaemonOptions(rounds=1)).run())
    deps.store.close()
    return project


def _tamper(db: Path, marker: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        thread, cid, kind, blob = conn.execute(
            "SELECT thread_id, checkpoint_id, type, checkpoint FROM checkpoints "
            "ORDER BY checkpoint_id DESC LIMIT 1"
        ).fetchone()
        assert kind == "msgpack"
        checkpoint = ormsgpack.unpackb(blob, option=ormsgpack.OPT_NON_STR_KEYS)
        checkpoint["channel_values"]["notes"] = [_evil(marker)]
        conn.execute(
            "UPDATE checkpoints SET checkpoint = ? WHERE thread_id = ? AND checkpoint_id = ?",
            (ormsgpack.packb(checkpoint, option=ormsgpack.OPT_NON_STR_KEYS), thread, cid),
        )
        conn.commit()
    finally:
        conn.close()


def test_the_default_serializer_would_run_the_payload(tmp_path: Path) -> None:
    """The threat is real: LangGraph's permissive default calls what the blob names."""
    marker = tmp_path / "pwned-default"
    blob = ormsgpack.packb({"x": _evil(marker)})
    JsonPlusSerializer().loads_typed(("msgpack", blob))
    assert marker.exists()


def test_a_tampered_checkpoint_runs_nothing(project_after_one_round, tmp_path: Path) -> None:
    project = project_after_one_round
    marker = tmp_path / "pwned"
    _tamper(project.checkpoints_path, marker)
    strict_serializer().loads_typed(("msgpack", ormsgpack.packb({"x": _evil(marker)})))
    rows = asyncio.run(checkpoints_report(project, 1))
    assert rows, "the history is still readable"
    assert not marker.exists()
