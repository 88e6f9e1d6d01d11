"""The pool counts SQLite triggers keep (store.counts) agree with counting the rows.

`status` reads those counts instead of scanning the pool; every way the store
writes examples and rejections must keep them right, and a pool written before
the migration must be counted correctly when it is migrated.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from evoinstruct.store import open_store, stats
from evoinstruct.store.db import migrations
from evoinstruct.store.records import ExampleDraft, Rejection


def _drafts(prefix: str, n: int, source: str = "generated", output: str | None = "an answer"):
    return [
        ExampleDraft(f"{prefix} task number {i}", output=output, source=source)  # type: ignore[arg-type]
        for i in range(n)
    ]


def _both(store) -> tuple[dict, dict]:
    conn = store.db.conn
    kept = stats.pool_stats(conn)
    kept.pop("rounds_finished")
    return kept, stats.pool_stats_counted(conn)


def test_counts_follow_inserts_status_changes_and_rejections(store) -> None:
    seeds = store.add_candidates(_drafts("seed", 5, source="seed"), round=0)
    generated = store.add_candidates(_drafts("gen", 6), round=1)
    again = store.add_candidates(_drafts("gen", 6), round=2)  # all duplicates: nothing counted
    assert again.inserted == 0
    store.set_status(generated.ids[:4], "accepted")
    store.set_status(generated.ids[:2], "accepted")  # no change: no count moves
    store.reject(
        [
            Rejection("select", "too_similar", {"rouge_l": 0.8}, example_id=i)
            for i in generated.ids[4:]
        ]
        + [Rejection("select", "too_similar", {"rouge_l": 0.9}, example_id=seeds.ids[0])],
        round=1,
    )
    # The same rejections again are ignored by the store, so the count must not move either.
    store.record_rejections(
        [Rejection("select", "too_similar", {"rouge_l": 0.8}, example_id=generated.ids[4])], round=1
    )
    store.record_rejections([Rejection("generate", "model_failure:server", {})], round=2)
    store.add_rewrites(
        [
            ExampleDraft(
                "gen task number 0",
                output="a better answer",
                source="rewritten",
                parent_id=generated.ids[0],
            )
        ],
        round=3,
    )
    store.update_meta(generated.ids[1], tags=["poetry"])  # not a counted column

    kept, counted = _both(store)
    assert kept == counted
    assert kept["by_status"] == {"candidate": 1, "accepted": 8, "rejected": 2, "superseded": 1}
    assert kept["by_source"] == {"generated": 6, "rewritten": 1, "seed": 5}
    assert kept["by_round"] == {"0": 5, "1": 6, "3": 1}
    assert kept["rejections"] == 4
    assert kept["total"] == 12


def test_counts_follow_relabels_round_moves_and_deletes(store) -> None:
    ids = store.add_candidates(_drafts("old", 4, source="filter_input"), round=0).ids
    store.relabel_source("filter_input", "generated")
    with store.transaction() as db:
        db.execute("UPDATE examples SET round = 7 WHERE id = ?", [ids[0]])
        db.execute("DELETE FROM examples WHERE id = ?", [ids[1]])
    store.record_rejections([Rejection("critique", "low_score", {}, example_id=ids[2])], round=0)
    with store.transaction() as db:
        db.execute("DELETE FROM rejections")

    kept, counted = _both(store)
    assert kept == counted
    # Groups that emptied are not reported, as counting rows would not report them.
    assert kept["by_source"] == {"generated": 3}
    assert kept["by_round"] == {"0": 2, "7": 1}
    assert kept["rejections"] == 0


def test_random_writes_keep_counts_equal_to_a_recount(store) -> None:
    rng = random.Random(7)
    ids: list[str] = []
    for step in range(30):
        source = rng.choice(["seed", "generated", "evolved", "rewritten"])
        ids += store.add_candidates(_drafts(f"s{step}", rng.randint(1, 20), source), step).ids
        store.set_status(rng.sample(ids, k=min(len(ids), 5)), rng.choice(["accepted", "rejected"]))
    kept, counted = _both(store)
    assert kept == counted
    assert kept["total"] == len(set(ids))


def test_a_pool_written_before_the_migration_is_counted_when_migrated(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m003_status_counts")
    db["examples"].insert_all(
        {
            "id": f"e{i}",
            "instruction": f"task {i}",
            "input": "",
            "system": "",
            "depth": 0,
            "source": "seed" if i % 2 else "generated",
            "round": i % 3,
            "status": "accepted" if i % 4 else "candidate",
        }
        for i in range(40)
    )
    db["rejections"].insert_all({"id": f"r{i}", "stage": "select", "reason": "x"} for i in range(3))
    conn = sqlite3.connect(path)
    assert not stats._has_counts(conn)
    before = stats.pool_stats(conn)  # counted from the rows: an older pool still reports
    conn.close()
    db.close()

    with open_store(path) as store:
        kept, counted = _both(store)
    assert kept == counted
    conn = sqlite3.connect(path)
    assert stats._has_counts(conn)
    conn.close()
    before.pop("rounds_finished")
    assert kept == before
    assert kept["by_status"]["candidate"] == 10 and kept["rejections"] == 3


@pytest.mark.parametrize("status", ["accepted", "rejected"])
def test_status_command_reports_the_kept_counts(project_dir: Path, capsys, status: str) -> None:
    from tests.cli_helpers import run_cli

    with open_store(project_dir / "pool.db") as store:
        store.add_candidates(_drafts("cli", 3), round=2, status=status)
    report = run_cli(capsys, "status", "--json", "-p", project_dir).json()
    assert report["examples"]["by_status"][status] == 3
    assert report["examples"]["by_round"] == {"2": 3}
    assert report["examples"]["total"] == 3


def _config(teacher: str, price: float | None = None) -> dict:
    models = {teacher: {"backend": "openai", "model": f"{teacher}-1", "price_per_mtok_in": price}}
    return {"roles": {"generator": teacher, "critic": teacher}, "models": models, "loop": {}}


def _stages(calls: int) -> dict:
    return {
        "generate": {"calls": calls, "tokens": 100 * calls},
        "critique": {"calls": 1, "prompt_tokens": 40 * calls, "completion_tokens": 7},
        "select": {"accepted": calls},
    }


_COUNTERS = ("calls", "prompt_tokens", "completion_tokens", "tokens")


def _kept_rounds(conn: sqlite3.Connection) -> list[dict]:
    """The per-round copy the triggers keep, shaped as cli.costs.read_rounds' rows."""
    stages: dict[int, dict] = {}
    for number, stage, *values in conn.execute(
        f"SELECT number, stage, {', '.join(_COUNTERS)} FROM round_stage_usage"
    ):
        kept = {k: v for k, v in zip(_COUNTERS, values, strict=True) if v is not None}
        stages.setdefault(number, {})[stage] = kept
    rows = conn.execute(
        "SELECT u.number, u.model_version, u.accepted, s.setup FROM round_usage AS u "
        "LEFT JOIN round_setups AS s ON s.id = u.setup ORDER BY u.number"
    )
    out = []
    for number, version, accepted, setup in rows:
        roles, models = json.loads(setup) or [None, None]
        out.append(
            {
                "number": number,
                "model_version": version,
                "stages": stages.get(number, {}),
                "accepted": accepted or 0,
                "roles": roles or {},
                "models": models or {},
            }
        )
    return out


def _costed(rows: list[dict]) -> list[dict]:
    """read_rounds' rows with only what costing reads of each stage (its counters)."""
    return [
        {
            **row,
            "stages": {
                name: {k: v for k, v in counters.items() if k in _COUNTERS}
                for name, counters in row["stages"].items()
                if isinstance(counters, dict)
            },
        }
        for row in rows
    ]


def test_the_kept_rounds_follow_every_write_of_rounds(store) -> None:
    from evoinstruct.cli import costs

    store.start_round(1, _config("big", 2.0))
    store.finish_round(1, {"stages": _stages(2), "by_status": {"accepted": 3}})
    store.start_round(2, _config("big", 2.0), model_version="v1")
    store.record_step_failure(2, "critique", "boom")
    store.clear_step_failure(2)
    store.finish_round(2, {"failed": "gave up"}, phase="failed")
    store.start_round(3, _config("small"))  # unfinished: no counts yet
    store.start_round(3, _config("other"))  # a resume keeps the first record
    with store.transaction() as db:
        db.execute("UPDATE rounds SET config = ?, model_version = 'v2' WHERE number = 1", ["{}"])
        db.execute("DELETE FROM rounds WHERE number = 2")
    store.start_round(4, _config("small"))
    store.finish_round(4, {"stages": _stages(5), "by_status": {"accepted": 1, "rejected": 4}})

    kept = _kept_rounds(store.db.conn)
    assert kept == _costed(costs.read_rounds(store.db.conn))
    assert [r["number"] for r in kept] == [1, 3, 4]
    assert kept[0]["model_version"] == "v2" and kept[0]["roles"] == {}
    assert kept[2]["stages"]["generate"]["calls"] == 5 and kept[2]["accepted"] == 1


def _status_and_costing(project_dir: Path) -> tuple[dict, dict]:
    from evoinstruct.cli.costs import project_costs
    from evoinstruct.cli.status import status_report
    from evoinstruct.graph.project import Project

    project = Project(project_dir)
    return status_report(project)["cost"], project_costs(project)["summary"]


def test_status_costs_rounds_summed_per_config_as_costing_every_round(project_dir: Path) -> None:
    rng = random.Random(3)
    with open_store(project_dir / "pool.db") as store:
        for n in range(1, 41):
            config = _config(rng.choice(["big", "small", "tiny"]), rng.choice([None, 1.5, 4.0]))
            store.start_round(n, config, model_version=rng.choice([None, None, f"v{n}"]))
            if n % 7:  # some rounds never finished
                accepted = rng.randint(0, 9)
                store.finish_round(
                    n, {"stages": _stages(rng.randint(1, 9)), "by_status": {"accepted": accepted}}
                )
        totals = stats.round_usage_totals(store.db.conn)
    assert totals is not None and totals[1] == 40 and len(totals[0]) < 40
    status, costing = _status_and_costing(project_dir)
    assert status["rounds"] == costing["rounds"] == 40
    assert status["tokens"] == costing["tokens"] > 0
    assert status["accepted"] == costing["accepted"]
    assert status["cost"] == pytest.approx(costing["cost"])
    assert status["by_model"].keys() == costing["by_model"].keys()
    for name, entry in costing["by_model"].items():
        assert status["by_model"][name] == {**entry, "cost": pytest.approx(entry["cost"])}


def test_a_round_with_fewer_tokens_than_its_parts_is_costed_round_by_round(
    project_dir: Path,
) -> None:
    odd = {"critique": {"calls": 1, "prompt_tokens": 50, "completion_tokens": 50, "tokens": 10}}
    with open_store(project_dir / "pool.db") as store:
        store.start_round(1, _config("big", 2.0))
        store.finish_round(1, {"stages": odd})
        store.start_round(2, _config("big", 2.0))
        store.finish_round(2, {"stages": _stages(3)})
        assert stats.round_usage_totals(store.db.conn) is None
    status, costing = _status_and_costing(project_dir)
    assert status == costing


def test_a_malformed_round_record_is_kept_not_refused(store) -> None:
    # The triggers must never fail a write of the daemon's own: bad JSON counts as no data.
    with store.transaction() as db:
        db.execute("INSERT INTO rounds (number, counts, config) VALUES (1, 'oops', '{bad')")
    rows, n = stats.round_usage_totals(store.db.conn)
    assert n == 1
    assert rows == [
        {"number": 1, "model_version": None, "stages": {}, "accepted": 0, "roles": {}, "models": {}}
    ]


def test_rounds_written_before_the_migration_are_kept_when_migrated(tmp_path: Path) -> None:
    from evoinstruct.cli import costs

    path = tmp_path / "pool.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m003_status_counts")
    db["rounds"].insert_all(
        {
            "number": n,
            "config": json.dumps(_config(f"m{n % 2}", 1.0)),
            "model_version": None,
            "counts": json.dumps({"stages": _stages(n), "by_status": {"accepted": n}}),
        }
        for n in range(1, 6)
    )
    db.close()
    with open_store(path) as store:
        kept = _kept_rounds(store.db.conn)
        assert kept == _costed(costs.read_rounds(store.db.conn))
    assert len(kept) == 5 and kept[4]["accepted"] == 5


def test_a_stage_named_twice_in_a_round_record_is_not_refused(store) -> None:
    twice = '{"stages": {"critique": {"calls": 1}, "critique": {"calls": 2}}}'
    with store.transaction() as db:
        db.execute("INSERT INTO rounds (number, counts, config) VALUES (1, ?, '{}')", [twice])
        db.execute("UPDATE rounds SET counts = ? WHERE number = 1", [twice])
    rows, _ = stats.round_usage_totals(store.db.conn)
    assert rows[0]["stages"]["critique"]["calls"] == 2
