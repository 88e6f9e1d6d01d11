"""`evoinstruct browse`: the pool in Datasette, read-only, beside a live daemon.

pool.db is served as Datasette's plain (mutable) file database, never `-i`:
Datasette reads a mutable file through `mode=ro` connections, which see a live
WAL writer's commits, while `immutable=1` tells SQLite the file never changes and
can return stale or torn pages. Datasette 0.65 has no write API, and this
metadata declares no writable canned query, so nothing here writes to the pool;
nothing changes its schema either: everything below lives in Datasette's metadata
and in a plugin registered at launch.

- Lineage links: the schema declares no foreign keys (the store keeps a rejected
  example's lineage even if the parent is gone), so Datasette cannot link
  `parent_id` or `example_id` itself; the plugin's `render_cell` does.
- Views: SQL views would have to live in pool.db, and a view in another file
  cannot name an attached database's tables. Canned queries serve instead, live,
  with parameters: accepted examples with their scores, one example's ancestry
  (a recursive CTE on `:id`) and its descendants.
- Search: a substring canned query (`instr` on lower-cased text), not FTS5. An
  FTS5 index needs a write, so it would be a copy that goes stale beside a running
  daemon, and FTS5's tokenizers fit Chinese badly: unicode61 makes a whole
  unspaced sentence one token, trigram cannot match a two-character word. A scan
  finds any substring in any language and stays current; on a pool of a few
  hundred thousand examples it takes about a second.
- JSON columns (meta, evidence, counts, config, metrics, scores) render as
  indented JSON, folded when long.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

PLUGIN = "evoinstruct-browse"
# Datasette names a file database after its stem.
DATABASE = "pool"
JSON_COLUMNS = frozenset({"meta", "evidence", "counts", "config", "metrics", "scores"})
EXAMPLE_LINKS = frozenset({"parent_id", "example_id"})
FOLD_LINES = 8
# A substring scan of a large pool outlasts Datasette's default 1 s limit.
SETTINGS = {"sql_time_limit_ms": 5000, "facet_time_limit_ms": 500, "allow_download": False}

ACCEPTED_SQL = """
select
  e.id, e.round, e.language, e.source, e.operation, e.depth, e.parent_id,
  (select round(avg(s.value), 2) from scores s
     where s.example_id = e.id and s.scorer = 'judge') as judge,
  (select json_group_object(k, v) from (
     -- the newest score per scorer and dimension
     select s.scorer || '.' || s.dimension as k, s.value as v, max(s.created_at)
     from scores s where s.example_id = e.id group by k)) as scores,
  e.instruction, e.input, e.output
from examples e
where e.status = 'accepted'
  and (:round = '' or e.round = :round)
  and (:language = '' or e.language = :language)
order by e.round desc, judge desc
"""

ANCESTRY_SQL = """
with recursive chain(id, parent_id, generation) as (
  select id, parent_id, 0 from examples where id = :id
  union all
  select e.id, e.parent_id, chain.generation + 1
  from examples e join chain on e.id = chain.parent_id
  -- a guard, should a hand-edited pool ever hold a cycle
  where chain.generation < 1000
)
select chain.generation, e.id, e.parent_id, e.source, e.operation, e.status, e.round, e.depth,
  e.instruction, e.input, e.output
from chain join examples e on e.id = chain.id
order by chain.generation
"""

DESCENDANTS_SQL = """
with recursive tree(id, generation) as (
  select id, 0 from examples where id = :id
  union all
  select e.id, tree.generation + 1
  from examples e join tree on e.parent_id = tree.id
  where tree.generation < 1000
)
select tree.generation, e.id, e.parent_id, e.source, e.operation, e.status, e.round, e.depth,
  e.instruction, e.output
from tree join examples e on e.id = tree.id
order by tree.generation, e.round, e.id
"""

SEARCH_SQL = """
select id, status, source, language, round, parent_id, instruction, input, output
from examples
where :q != '' and (
  instr(lower(instruction), lower(:q)) or instr(lower(input), lower(:q))
  or instr(lower(coalesce(output, '')), lower(:q)))
order by instr(lower(instruction), lower(:q)) = 0, round desc
limit 500
"""


def _sql(text: str) -> str:
    return textwrap.dedent(text).strip()


def metadata(title: str = "evoinstruct pool") -> dict[str, Any]:
    """Datasette metadata: tables described and faceted, the canned queries, the plugin's switch."""
    tables: dict[str, Any] = {
        "examples": {
            "description": "Every instruction the loop has seen: seeds, generated, evolved, "
            "rewritten. parent_id links to the example it came from.",
            "facets": ["status", "source", "language", "round"],
            "sort_desc": "round",
            "label_column": "instruction",
            "columns": {
                "parent_id": "The example this one was evolved or rewritten from",
                "operation": "The evolution operation or rewrite that made it",
                "depth": "Evolution steps from a seed or generated task",
                "meta": "JSON: what the generator or rewriter recorded",
            },
        },
        "scores": {
            "description": "One score per example, scorer and dimension.",
            "facets": ["scorer", "dimension"],
        },
        "rejections": {
            "description": "Why a stage turned an example or a draft away.",
            "facets": ["stage", "reason", "round"],
            "sort_desc": "created_at",
            "columns": {"evidence": "JSON: the numbers behind the verdict"},
        },
        "rounds": {"sort_desc": "number"},
        "model_versions": {"sort_desc": "number"},
        "response_cache": {"hidden": True},
    }
    queries = {
        "accepted": {
            "title": "Accepted examples with their scores",
            "description": "Leave round and language empty for all; judge is the mean judge "
            "score. At most 1,000 rows: filter by round for more.",
            "sql": _sql(ACCEPTED_SQL),
            "hide_sql": True,
        },
        "ancestry": {
            "title": "Ancestry of an example",
            "description": "The example with this id, its parent, its parent's parent, "
            "up to the seed or generated task it started from.",
            "sql": _sql(ANCESTRY_SQL),
            "hide_sql": True,
        },
        "descendants": {
            "title": "Descendants of an example",
            "description": "Everything evolved or rewritten from the example with this id.",
            "sql": _sql(DESCENDANTS_SQL),
            "hide_sql": True,
        },
        "search": {
            "title": "Search instructions and responses",
            "description": "Any text, in any language; matches in the instruction first.",
            "sql": _sql(SEARCH_SQL),
            "hide_sql": True,
        },
    }
    return {
        "title": title,
        "databases": {DATABASE: {"tables": tables, "queries": queries}},
        "plugins": {PLUGIN: {"databases": [DATABASE]}},
    }


def _active(datasette: Any, database: str | None) -> bool:
    """Only instances this module configured, so a plugin registered process-wide stays inert
    in any other Datasette (a test's, a user's own)."""
    config = datasette.plugin_config(PLUGIN) or {}
    return database in config.get("databases", ())


def _example_link(datasette: Any, database: str, value: str) -> str:
    from datasette.utils import tilde_encode
    from markupsafe import escape

    url = datasette.urls.row(database, "examples", tilde_encode(value))
    return f'<a href="{escape(url)}">{escape(value)}</a>'


def _column(row: Any, name: str) -> Any:
    try:
        return row[name]
    except (IndexError, KeyError):
        return None


def _json_cell(value: str) -> str | None:
    from markupsafe import escape

    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if not isinstance(parsed, dict | list) or not parsed:
        return None
    pretty = json.dumps(parsed, ensure_ascii=False, indent=2, sort_keys=True)
    block = f'<pre style="margin:0">{escape(pretty)}</pre>'
    lines = pretty.count("\n") + 1
    if lines <= FOLD_LINES:
        return block
    kind = f"{len(parsed)} keys" if isinstance(parsed, dict) else f"{len(parsed)} items"
    return f"<details><summary>{kind}</summary>{block}</details>"


def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
):
    """Links for lineage and ids, readable JSON; None leaves a cell to Datasette."""
    if not isinstance(value, str) or not value or not _active(datasette, database):
        return None
    from markupsafe import Markup, escape

    if column in JSON_COLUMNS:
        cell = _json_cell(value)
        return Markup(cell) if cell else None
    if column in EXAMPLE_LINKS or (column == "id" and table in (None, "examples")):
        cell = _example_link(datasette, database, value)
        child = _column(row, "id")
        if column == "parent_id" and isinstance(child, str):
            # From a child, the whole chain is one click away.
            chain = datasette.urls.query(database, "ancestry") + f"?id={escape(child)}"
            cell += f' <a href="{escape(chain)}" title="ancestry">(lineage)</a>'
        return Markup(cell)
    return None


def _register_plugin() -> None:
    """Datasette finds plugins through setuptools entry points; this one is registered
    here instead, so `browse` needs no install step beyond datasette itself."""
    import sys

    from datasette import hookimpl
    from datasette.plugins import pm

    if pm.get_plugin(PLUGIN) is None:
        module = sys.modules[__name__]
        hookimpl(render_cell)
        pm.register(module, name=PLUGIN)


def make_datasette(pool_path: Path, *, title: str = "evoinstruct pool") -> Any:
    """A Datasette on pool.db as described above; raises ImportError without datasette."""
    from datasette.app import Datasette

    _register_plugin()
    return Datasette([str(pool_path)], metadata=metadata(title), settings=dict(SETTINGS))


def serve(pool_path: Path, *, host: str, port: int, title: str) -> None:
    """Run Datasette in the foreground until interrupted, as `datasette serve` does."""
    import asyncio

    import uvicorn

    ds = make_datasette(pool_path, title=title)
    asyncio.run(ds.invoke_startup())
    uvicorn.run(ds.app(), host=host, port=port, log_level="warning", lifespan="on", workers=1)
