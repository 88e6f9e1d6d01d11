"""Pool counts kept by SQLite triggers, so `evoinstruct status` reads a few rows, not the pool.

Counting one million examples three ways (by status, source and round) scans
three indexes of a million entries each on every `status`; the triggers here
keep the same numbers up to date as rows are written, in the same transaction
as the write, so a reader sees counts and rows from one snapshot.

* `counts_status_source(status, source, n)`: examples per status and source;
* `counts_round(round, n)`: examples per round they were created in;
* `counts_rejections(id = 1, n)`: rows of `rejections`;
* `round_usage(number, model_version, accepted, setup)`, `round_setups(id, setup)`
  and `round_stage_usage(number, stage, calls, prompt_tokens, completion_tokens,
  tokens)`: per round what costing reads (`cli.costs.read_rounds` extracts the
  same from `rounds`, whose stored config is tens of kB a round), the roles and
  models of each distinct config stored once, a stage's counters as numbers (NULL
  where the round did not record one), so they can be summed without parsing JSON.

Every insert, delete and update of those columns is counted. One way of
writing is not: `INSERT OR REPLACE` deletes the row it replaces without
firing delete triggers (unless `recursive_triggers` is on), so the store
never replaces an example or a rejection (it inserts with OR IGNORE).
Groups that drop to zero stay as rows with n = 0; readers skip them. No
trigger here may fail the write that fires it: bad JSON in a round counts as
no data, and a stage named twice keeps its last counters. A
round's number never changes, so only inserts, deletes and updates of its
counts, config and model version are followed.
"""

from __future__ import annotations

_ADD = {
    "status_source": (
        "INSERT INTO counts_status_source (status, source, n) VALUES ({p}.status, {p}.source, 1) "
        "ON CONFLICT (status, source) DO UPDATE SET n = n + 1;"
    ),
    "round": (
        "INSERT INTO counts_round (round, n) VALUES ({p}.round, 1) "
        "ON CONFLICT (round) DO UPDATE SET n = n + 1;"
    ),
}
_SUBTRACT = {
    "status_source": (
        "UPDATE counts_status_source SET n = n - 1 "
        "WHERE status = {p}.status AND source = {p}.source;"
    ),
    "round": "UPDATE counts_round SET n = n - 1 WHERE round = {p}.round;",
}


def _setup(row: str) -> str:
    # Malformed JSON would make json_extract raise and fail the daemon's own write.
    return (
        f"coalesce(CASE WHEN json_valid({row}.config) "
        f"THEN json_extract({row}.config, '$.roles', '$.models') END, 'null')"
    )


def _valid_counts(row: str) -> str:
    return f"CASE WHEN json_valid({row}.counts) THEN {row}.counts END"


def _accepted(row: str) -> str:
    return f"json_extract({_valid_counts(row)}, '$.by_status.accepted')"


def _setup_id(row: str) -> str:
    return f"(SELECT id FROM round_setups WHERE setup = {_setup(row)})"


def _stage_rows(row: str, table: str = "") -> str:
    """A SELECT of one round_stage_usage row per stage object in `row`'s counts (`row` a
    trigger's new row, or an alias of `table` to read every round)."""
    fields = ", ".join(
        f"json_extract(s.value, '$.{k}')"
        for k in ("calls", "prompt_tokens", "completion_tokens", "tokens")
    )
    return (
        f"SELECT {row}.number, s.key, {fields} FROM {table}"
        f"json_each({_valid_counts(row)}, '$.stages') AS s WHERE s.type = 'object'"
    )


_STAGE_COLUMNS = "(number, stage, calls, prompt_tokens, completion_tokens, tokens)"


SCHEMA = f"""
CREATE TABLE counts_status_source (
    status TEXT NOT NULL, source TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (status, source)
) WITHOUT ROWID;
CREATE TABLE counts_round (round INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE counts_rejections (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
CREATE TABLE round_setups (id INTEGER PRIMARY KEY, setup TEXT NOT NULL UNIQUE);
CREATE TABLE round_usage (
    number INTEGER PRIMARY KEY, model_version TEXT, accepted INTEGER,
    setup INTEGER REFERENCES round_setups (id)
);
CREATE TABLE round_stage_usage (
    number INTEGER NOT NULL, stage TEXT NOT NULL, calls INTEGER, prompt_tokens INTEGER,
    completion_tokens INTEGER, tokens INTEGER, PRIMARY KEY (number, stage)
) WITHOUT ROWID;

INSERT INTO counts_status_source (status, source, n)
    SELECT status, source, count(*) FROM examples GROUP BY status, source;
INSERT INTO counts_round (round, n) SELECT round, count(*) FROM examples GROUP BY round;
INSERT INTO counts_rejections (id, n) SELECT 1, count(*) FROM rejections;
INSERT OR IGNORE INTO round_setups (setup) SELECT {_setup("r")} FROM rounds AS r ORDER BY number;
INSERT INTO round_usage (number, model_version, accepted, setup)
    SELECT number, model_version, {_accepted("r")}, {_setup_id("r")} FROM rounds AS r;
INSERT OR REPLACE INTO round_stage_usage {_STAGE_COLUMNS} {_stage_rows("r", "rounds AS r, ")};

CREATE TRIGGER counts_examples_insert AFTER INSERT ON examples BEGIN
    {_ADD["status_source"].format(p="new")}
    {_ADD["round"].format(p="new")}
END;
CREATE TRIGGER counts_examples_delete AFTER DELETE ON examples BEGIN
    {_SUBTRACT["status_source"].format(p="old")}
    {_SUBTRACT["round"].format(p="old")}
END;
-- The daemon rewrites `meta` and `updated_at` far more often than it moves an example:
-- the WHEN clauses keep those updates free of counting work.
CREATE TRIGGER counts_examples_status_source AFTER UPDATE OF status, source ON examples
WHEN old.status IS NOT new.status OR old.source IS NOT new.source BEGIN
    {_SUBTRACT["status_source"].format(p="old")}
    {_ADD["status_source"].format(p="new")}
END;
CREATE TRIGGER counts_examples_round AFTER UPDATE OF round ON examples
WHEN old.round IS NOT new.round BEGIN
    {_SUBTRACT["round"].format(p="old")}
    {_ADD["round"].format(p="new")}
END;
CREATE TRIGGER counts_rejections_insert AFTER INSERT ON rejections BEGIN
    UPDATE counts_rejections SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER counts_rejections_delete AFTER DELETE ON rejections BEGIN
    UPDATE counts_rejections SET n = n - 1 WHERE id = 1;
END;
CREATE TRIGGER round_usage_insert AFTER INSERT ON rounds BEGIN
    INSERT OR IGNORE INTO round_setups (setup) VALUES ({_setup("new")});
    INSERT INTO round_usage (number, model_version, accepted, setup)
    VALUES (new.number, new.model_version, {_accepted("new")}, {_setup_id("new")});
    INSERT OR REPLACE INTO round_stage_usage {_STAGE_COLUMNS} {_stage_rows("new")};
END;
CREATE TRIGGER round_usage_counts AFTER UPDATE OF counts ON rounds BEGIN
    UPDATE round_usage SET accepted = {_accepted("new")} WHERE number = new.number;
    DELETE FROM round_stage_usage WHERE number = new.number;
    INSERT OR REPLACE INTO round_stage_usage {_STAGE_COLUMNS} {_stage_rows("new")};
END;
CREATE TRIGGER round_usage_setup AFTER UPDATE OF config, model_version ON rounds BEGIN
    INSERT OR IGNORE INTO round_setups (setup) VALUES ({_setup("new")});
    UPDATE round_usage SET model_version = new.model_version, setup = {_setup_id("new")}
    WHERE number = new.number;
END;
CREATE TRIGGER round_usage_delete AFTER DELETE ON rounds BEGIN
    DELETE FROM round_usage WHERE number = old.number;
    DELETE FROM round_stage_usage WHERE number = old.number;
END;
"""


def split_statements(script: str) -> list[str]:
    """The complete SQL statements of `script`, in order (trigger bodies kept whole)."""
    import sqlite3

    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not pending.strip():
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:60]}")
    return statements
