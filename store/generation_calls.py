"""Generation calls: what each Self-Instruct call was asked, and what became of its tasks.

A round's generate step writes one row per model call: the prompt it sent (the
rendered user message, demos and numbering included), its language, the model
version that answered, the first task number the list continues at, the ids of
the candidates it added, and how many of its tasks each filter of the step
dropped. Two readers need exactly that:

* the trainer, which turns a call's prompt and the tasks of it that were later
  accepted into a training example of the generation task (the student learns
  to write instructions that survive the filters, Humpback-style self-curation);
* the report and the bench, which measure the generator per model version: new
  accepted instructions per call, drop reasons and diversity.

Rows are keyed by round and call number, and written with INSERT OR IGNORE in
the transaction that adds the call's candidates: a generate step re-run after a
crash finds its rows and candidates already there and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evoinstruct.store._base import StoreBase, dumps, loads, now
from evoinstruct.store.records import Rejection
from evoinstruct.store.rows import chunks
from evoinstruct.store.stages import Stage


@dataclass
class GenerationCall:
    """One generation call and its fate: the prompt sent, the tasks read, where they went.

    `tasks` counts the tasks parsed from the answer (before any filter);
    `candidates` are the ids of the examples it added to the pool (new ones only);
    `drops` counts, per reason, what the generate step dropped of this call.
    """

    round: int
    call: int
    prompt: str
    first_index: int
    language: str | None = None
    model_version: str | None = None
    template: str | None = None
    tasks: int = 0
    candidates: list[str] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.round}:{self.call}"

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "round": self.round,
            "call": self.call,
            "model_version": self.model_version,
            "language": self.language,
            "template": self.template,
            "prompt": self.prompt,
            "first_index": self.first_index,
            "tasks": self.tasks,
            "candidates": dumps(self.candidates),
            "drops": dumps(self.drops),
            "created_at": now(),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> GenerationCall:
        return cls(
            round=row["round"],
            call=row["call"],
            prompt=row["prompt"],
            first_index=row["first_index"],
            language=row["language"],
            model_version=row["model_version"],
            template=row["template"],
            tasks=row["tasks"],
            candidates=list(loads(row["candidates"], [])),
            drops=dict(loads(row["drops"], {})),
        )


class GenerationCallsMixin(StoreBase):
    def record_generation_calls(self, calls: Sequence[GenerationCall]) -> None:
        """Keep each call once: a re-run of the step (same round and call number) is a no-op."""
        if calls:
            with self.transaction() as db:
                db["generation_calls"].insert_all(
                    [c.to_row() for c in calls], ignore=True, batch_size=500
                )

    def generation_calls(
        self, *, round: int | None = None, model_version: str | None = None
    ) -> list[GenerationCall]:
        """Recorded calls in the order they were made, optionally of one round or model version."""
        clauses, params = [], []
        for column, value in (("round", round), ("model_version", model_version)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._query(f"SELECT * FROM generation_calls {where} ORDER BY round, call", params)
        return [GenerationCall.from_row(row) for row in rows]

    def later_rejections(self, ids: Sequence[str]) -> dict[str, str]:
        """Example id -> "stage:reason" of the first verdict a stage after generate recorded
        on it (a failed call is no verdict and is left out)."""
        found: dict[str, str] = {}
        for part in chunks(list(ids)):
            marks = ", ".join("?" for _ in part)
            rows = self._query(
                f"SELECT example_id, stage, reason FROM rejections WHERE example_id IN ({marks}) "
                "AND stage != ? ORDER BY rowid",
                [*part, Stage.GENERATE],
            )
            for row in rows:
                if Rejection(row["stage"], row["reason"]).is_verdict:
                    found.setdefault(row["example_id"], f"{row['stage']}:{row['reason']}")
        return found
