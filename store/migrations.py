"""The pool database's schema history: every numbered migration, in the order it is applied.

sqlite-utils applies migrations in the order they register, so they all live here, one
after another; a module whose table a migration makes keeps the schema text it shares with
its queries (imported when the migration runs), not the migration.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("evoinstruct.pool")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["examples"].create(
        {
            "id": str,
            "instruction": str,
            "input": str,
            "output": str,
            "system": str,
            "source": str,
            "parent_id": str,
            "operation": str,
            "round": int,
            "status": str,
            "language": str,
            "model_version": str,
            "template": str,
            "depth": int,
            "created_at": str,
            "updated_at": str,
            "meta": str,
        },
        pk="id",
        not_null={"instruction", "input", "system", "source", "round", "status", "depth"},
        defaults={"input": "", "system": "", "depth": 0, "meta": "{}"},
    )
    for cols in (["status"], ["source"], ["round"], ["parent_id"], ["status", "source"]):
        db["examples"].create_index(cols)
    db["scores"].create(
        {
            "id": str,
            "example_id": str,
            "scorer": str,
            "dimension": str,
            "value": float,
            "raw_output": str,
            "explanation": str,
            "round": int,
            "created_at": str,
        },
        pk="id",
        not_null={"example_id", "scorer", "dimension"},
    )
    db["scores"].create_index(["example_id"])
    db["scores"].create_index(["scorer", "dimension"])
    db["rejections"].create(
        {
            "id": str,
            "example_id": str,
            "text": str,
            "stage": str,
            "reason": str,
            "evidence": str,
            "raw_output": str,
            "round": int,
            "created_at": str,
        },
        pk="id",
        not_null={"stage", "reason"},
    )
    db["rejections"].create_index(["stage", "reason"])
    db["rejections"].create_index(["example_id"])
    db["rejections"].create_index(["round"])
    db["rounds"].create(
        {
            "number": int,
            "phase": str,
            "started_at": str,
            "finished_at": str,
            "counts": str,
            "config": str,
            "model_version": str,
        },
        pk="number",
    )
    db["model_versions"].create(
        {
            "version": str,
            "number": int,
            "base": str,
            "method": str,
            "path": str,
            "round": int,
            "metrics": str,
            "config": str,
            "created_at": str,
        },
        pk="version",
    )
    db["promotions"].create(
        {"id": int, "version": str, "action": str, "reason": str, "at": str},
        pk="id",
    )
    db["manifests"].create(
        {"version": str, "example_id": str, "role": str}, pk=("version", "example_id")
    )
    db["response_cache"].create(
        {"key": str, "model_id": str, "value": str, "created_at": str}, pk="key"
    )
    db["daemon"].create(
        {
            "id": int,
            "pid": int,
            "round": int,
            "stage": str,
            "started_at": str,
            "heartbeat_at": str,
            "state": str,
        },
        pk="id",
    )


@migrations()
def m002_eval_suites(db: sqlite_utils.Database) -> None:
    # The held-out verifiable suite lives beside the pool, never in `examples`: nothing
    # that exports or trains from the pool can reach it.
    db["eval_suites"].create(
        {"hash": str, "created_at": str, "selected": int, "items": int, "meta": str},
        pk="hash",
        not_null={"items"},
        defaults={"meta": "{}"},
    )
    db["eval_items"].create(
        {
            "suite": str,
            "position": int,
            "key": str,
            "source": str,
            "language": str,
            "task": str,
            "prompt": str,
            "constraints": str,
        },
        pk=("suite", "position"),
        not_null={"key", "source", "prompt", "constraints"},
        foreign_keys=[("suite", "eval_suites", "hash")],
    )
    db["eval_results"].create(
        {
            "id": str,
            "suite": str,
            "label": str,
            "version": str,
            "identity": str,
            "settings": str,
            "metrics": str,
            "items": str,
            "created_at": str,
        },
        pk="id",
        not_null={"suite", "label", "identity"},
        foreign_keys=[("suite", "eval_suites", "hash")],
    )
    db["eval_results"].create_index(["suite", "label"])
    db["eval_results"].create_index(["version"])


@migrations()
def m003_status_counts(db: sqlite_utils.Database) -> None:
    from evoinstruct.store.counts import SCHEMA, split_statements

    # executescript would COMMIT the migration's transaction half-way: run statement by
    # statement instead (sqlite3.complete_statement finds where each trigger body ends).
    for statement in split_statements(SCHEMA):
        db.execute(statement)


@migrations()
def m004_selector_log(db: sqlite_utils.Database) -> None:
    from evoinstruct.store.selector_log import SCHEMA

    # Examples accepted before this migration are not logged: an index file that does
    # not exist yet is built from the accepted rows, with the log's head as watermark.
    for statement in SCHEMA:
        db.execute(statement)


@migrations()
def m005_preference_pairs(db: sqlite_utils.Database) -> None:
    from evoinstruct.store.preferences import TABLE

    db[TABLE].create(
        {
            "id": str,
            "example_id": str,
            "round": int,
            "chosen": str,
            "rejected": str,
            "chosen_repaired": str,
            "rejected_failed": str,
            "rejected_truncated": int,
            "model_version": str,
            "created_at": str,
        },
        pk="id",
        not_null={"example_id", "chosen", "rejected", "rejected_failed"},
        defaults={"chosen_repaired": "[]", "rejected_truncated": 0},
    )
    db[TABLE].create_index(["example_id"])
    db[TABLE].create_index(["round"])


@migrations()
def m006_eval_item_parts(db: sqlite_utils.Database) -> None:
    # Which part of the suite an item belongs to (in-distribution, held-out phrasing,
    # held-out type, ifeval) and the phrasing that describes each of its constraints;
    # items of suites stored before have neither.
    db["eval_items"].add_column("part", str)
    db["eval_items"].add_column("phrasings", str)


@migrations()
def m007_round_starts(db: sqlite_utils.Database) -> None:
    db["round_starts"].create(
        {
            "number": int,
            "start": int,
            "started_at": str,
            "step": str,
            "config": str,
            "model_version": str,
            "steps": str,
        },
        pk=("number", "start"),
        not_null={"started_at", "step", "config"},
        defaults={"steps": "[]"},
    )
    db["daemon"].add_column("activity", str)


@migrations()
def m008_experiments(db: sqlite_utils.Database) -> None:
    db["experiments"].create(
        {
            "name": str,
            "kind": str,
            "round": int,
            "created_at": str,
            "finished_at": str,
            "plan": str,
            "result": str,
        },
        pk="name",
        not_null={"kind", "created_at", "plan"},
    )
    db["experiments"].create_index(["kind", "created_at"])


@migrations()
def m009_generation_calls(db: sqlite_utils.Database) -> None:
    db["generation_calls"].create(
        {
            "id": str,
            "round": int,
            "call": int,
            "model_version": str,
            "language": str,
            "template": str,
            "prompt": str,
            "first_index": int,
            "tasks": int,
            "candidates": str,
            "drops": str,
            "created_at": str,
        },
        pk="id",
        not_null={"round", "call", "prompt", "first_index", "tasks"},
        defaults={"tasks": 0, "candidates": "[]", "drops": "{}"},
    )
    db["generation_calls"].create_index(["round"])
    db["generation_calls"].create_index(["model_version"])
