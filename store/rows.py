"""Reading `examples` rows into records: the columns, the conversion, and id batches for IN (...)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from evoinstruct.store._base import loads
from evoinstruct.store.records import Example

T = TypeVar("T")

EXAMPLE_COLUMNS = (
    "id, instruction, input, output, system, source, parent_id, operation, round, status, "
    "language, model_version, template, depth, created_at, meta"
)


def row_to_example(row: dict[str, Any]) -> Example:
    return Example(
        id=row["id"],
        instruction=row["instruction"],
        input=row["input"] or "",
        output=row["output"],
        system=row["system"] or "",
        source=row["source"],
        parent_id=row["parent_id"],
        operation=row["operation"],
        round=row["round"],
        status=row["status"],
        language=row["language"],
        model_version=row["model_version"],
        template=row["template"],
        depth=row["depth"] or 0,
        created_at=row["created_at"],
        meta=loads(row["meta"], {}),
    )


def chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """Slices small enough for one `IN (...)` list."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
