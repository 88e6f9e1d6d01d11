"""The round's checkpointer: SQLite, with a serializer that revives plain data only.

The round state is ids, counters and strings, so nothing in a checkpoint needs a
class revived. LangGraph's default serializer would import and call whatever a
checkpoint names (a warning, not a refusal), so a tampered `checkpoints.db` could
run code on `run` or `inspect checkpoints`. This one refuses every type outside
LangGraph's own safe list, and never unpickles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver


def strict_serializer() -> JsonPlusSerializer:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(
        pickle_fallback=False, allowed_json_modules=None, allowed_msgpack_modules=None
    )


@asynccontextmanager
async def open_checkpointer(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(str(path)) as conn:
        yield AsyncSqliteSaver(conn, serde=strict_serializer())
