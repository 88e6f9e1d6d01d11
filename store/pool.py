"""The instruction pool: examples, their scores and rejections, statistics and lineage."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from evoinstruct.store import stats
from evoinstruct.store._base import dumps, loads, now
from evoinstruct.store.errors import InputError
from evoinstruct.store.ids import example_id, stable_hash
from evoinstruct.store.records import (
    KEPT_SOURCES,
    STATUSES,
    Example,
    ExampleDraft,
    Rejection,
    Score,
)
from evoinstruct.store.rows import EXAMPLE_COLUMNS, chunks, row_to_example
from evoinstruct.store.selector_log import SelectorLogMixin
from evoinstruct.store.stages import Stage

# Pools up to this many rows are sampled by reading the matching rowids (a few ms); past
# it, by probing random rowids.
SAMPLE_SCAN_ROWS = 50_000
# Probes allowed per wanted id before probing gives way to a read of the matching rowids:
# matches rarer than about one row in twenty are cheaper to read than to find.
PROBE_BUDGET_PER_ID = 20


@dataclass
class AddResult:
    """Ids in the order of the drafts (duplicates get the existing id) and what was new."""

    ids: list[str] = field(default_factory=list)
    inserted: int = 0
    duplicates: int = 0


_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")


def _in_languages(languages: Sequence[str]) -> str:
    """An SQL condition on the language column (empty for any language). Only language codes
    ("en", "zh") are accepted, so the values are safe to write into the SQL."""
    for lang in languages:
        if not _LANGUAGE_CODE.fullmatch(lang):
            raise InputError(f"not a language code: {lang!r}", field="language")
    if not languages:
        return ""
    return " AND language IN (" + ", ".join(f"'{lang}'" for lang in languages) + ")"


class PoolMixin(SelectorLogMixin):
    # --- examples -----------------------------------------------------------------
    def add_candidates(
        self, drafts: Sequence[ExampleDraft], round: int, *, status: str | None = None
    ) -> AddResult:
        """Insert new examples; an example already in the pool is counted, never changed.

        Without `status`, a seed with an output is accepted at once and everything
        else starts as a candidate.
        """
        result = AddResult()
        rows: dict[str, dict[str, Any]] = {}
        for draft in drafts:
            eid = example_id(draft.instruction, draft.input, draft.output, source=draft.source)
            result.ids.append(eid)
            if eid in rows:
                continue
            row_status = status or (
                "accepted" if draft.source in KEPT_SOURCES and draft.output else "candidate"
            )
            rows[eid] = {
                "id": eid,
                "instruction": draft.instruction,
                "input": draft.input or "",
                "output": draft.output,
                "system": draft.system or "",
                "source": draft.source,
                "parent_id": draft.parent_id,
                "operation": draft.operation,
                "round": round,
                "status": row_status,
                "language": draft.language,
                "model_version": draft.model_version,
                "template": draft.template,
                "depth": draft.depth,
                "created_at": now(),
                "updated_at": None,
                "meta": dumps(draft.meta),
            }
        with self.transaction() as db:
            existing = self._existing_ids(list(rows))
            new_rows = [row for eid, row in rows.items() if eid not in existing]
            if new_rows:
                db["examples"].insert_all(new_rows, ignore=True, batch_size=500)
        result.inserted = len(new_rows)
        result.duplicates = len(drafts) - result.inserted
        return result

    def _existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            found.update(
                r["id"]
                for r in self.db.query(f"SELECT id FROM examples WHERE id IN ({marks})", chunk)
            )
        return found

    def get(self, id: str) -> Example | None:
        rows = self._query(f"SELECT {EXAMPLE_COLUMNS} FROM examples WHERE id = ?", [id])
        return row_to_example(rows[0]) if rows else None

    def get_many(self, ids: Sequence[str]) -> list[Example]:
        """Examples for `ids`, in that order; unknown ids are skipped."""
        by_id: dict[str, Example] = {}
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(
                f"SELECT {EXAMPLE_COLUMNS} FROM examples WHERE id IN ({marks})", chunk
            ):
                by_id[row["id"]] = row_to_example(row)
        return [by_id[i] for i in ids if i in by_id]

    def iter_examples(
        self,
        *,
        status: str | Sequence[str] | None = None,
        source: str | Sequence[str] | None = None,
        round: int | None = None,
        min_round: int | None = None,
        max_round: int | None = None,
        has_output: bool | None = None,
        limit: int | None = None,
        batch: int = 2000,
    ) -> Iterator[Example]:
        """Stream examples matching the filters, oldest first, in keyset-paginated batches."""
        where, params = self._filters(status, source, round, min_round, max_round, has_output)
        last_rowid = 0
        yielded = 0
        while True:
            rows = self._query(
                f"SELECT rowid AS _rowid, {EXAMPLE_COLUMNS} FROM examples "
                f"WHERE rowid > ? {where} ORDER BY rowid LIMIT ?",
                [last_rowid, *params, batch],
            )
            for row in rows:
                yield row_to_example(row)
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            if len(rows) < batch:
                return
            last_rowid = rows[-1]["_rowid"]

    def count_examples(self, **filters: Any) -> int:
        where, params = self._filters(
            filters.get("status"),
            filters.get("source"),
            filters.get("round"),
            filters.get("min_round"),
            filters.get("max_round"),
            filters.get("has_output"),
        )
        return self._query(f"SELECT count(*) AS n FROM examples WHERE 1=1 {where}", params)[0]["n"]

    @staticmethod
    def _filters(
        status: str | Sequence[str] | None,
        source: str | Sequence[str] | None,
        round: int | None,
        min_round: int | None,
        max_round: int | None,
        has_output: bool | None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("source", source)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            clauses.append(f"AND {column} IN ({','.join('?' * len(values))})")
            params.extend(values)
        for clause, value in (
            ("round = ?", round),
            ("round >= ?", min_round),
            ("round <= ?", max_round),
        ):
            if value is not None:
                clauses.append(f"AND {clause}")
                params.append(value)
        if has_output is True:
            clauses.append("AND output IS NOT NULL")
        elif has_output is False:
            clauses.append("AND output IS NULL")
        return " ".join(clauses), params

    def set_status(self, ids: Iterable[str], status: str) -> int:
        """Move examples to `status`; returns how many rows changed."""
        if status not in STATUSES:
            raise InputError(f"unknown status {status!r}", field="status")
        ids = list(ids)
        changed = 0
        with self.transaction() as db:
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                cursor = db.execute(
                    f"UPDATE examples SET status = ?, updated_at = ? "
                    f"WHERE id IN ({marks}) AND status != ?",
                    [status, now(), *chunk, status],
                )
                changed += cursor.rowcount
        return changed

    def relabel_source(self, old: str, new: str) -> int:
        """Move every example of source `old` to `new` (a store written by an older version)."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE examples SET source = ?, updated_at = ? WHERE source = ?", [new, now(), old]
            )
        return cursor.rowcount

    def set_output(
        self,
        id: str,
        output: str,
        *,
        system: str | None = None,
        model_version: str | None = None,
        template: str | None = None,
    ) -> None:
        """Give an example its response (the responder), keeping who wrote it in `meta`."""
        with self.transaction() as db:
            row = self.get(id)
            if row is None:
                raise KeyError(id)
            meta = {**row.meta, "response_model": model_version, "response_template": template}
            updates: dict[str, Any] = {"output": output, "updated_at": now(), "meta": dumps(meta)}
            if system is not None:
                updates["system"] = system
            db["examples"].update(id, updates)

    # --- per-stage progress of a round -------------------------------------------------
    def mark_done(self, ids: Iterable[str], stage: str) -> None:
        """Record that `stage` finished with these examples, so a re-run node skips them."""
        ids = list(ids)
        with self.transaction() as db:
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                db.execute(
                    f"UPDATE examples SET meta = json_set(coalesce(meta, '{{}}'), ?, 1) WHERE id IN ({marks})",
                    [f"$.done_{stage}", *chunk],
                )

    def pending(
        self,
        round: int,
        stage: str,
        *,
        status: str | Sequence[str] = "candidate",
        source: str | Sequence[str] | None = None,
        has_output: bool | None = None,
        limit: int | None = None,
        requires: str | None = None,
        exclude: Collection[str] = (),
        after: str | None = None,
    ) -> list[Example]:
        """Examples up to `round` that `stage` has not finished yet (a node's work list).

        Earlier rounds count too: a seed added while the daemon runs, or an item a
        failed call left behind, is picked up by the next round. `requires` names a
        stage that must have finished first; `exclude` skips ids; `after` (an id)
        continues the list past that example, so a failed item is not met twice.
        """
        where, params = self._pending_where(
            round,
            stage,
            status=status,
            source=source,
            has_output=has_output,
            requires=requires,
            exclude=exclude,
            after=after,
        )
        tail = f"LIMIT {int(limit)}" if limit else ""
        rows = self._query(
            f"SELECT {EXAMPLE_COLUMNS} FROM examples WHERE {where} ORDER BY rowid {tail}", params
        )
        return [row_to_example(r) for r in rows]

    def count_pending(self, round: int, stage: str, **filters: Any) -> int:
        """How many examples `pending` would list with these filters (a stage's progress total)."""
        where, params = self._pending_where(round, stage, **filters)
        return self._query(f"SELECT count(*) AS n FROM examples WHERE {where}", params)[0]["n"]

    def _pending_where(
        self,
        round: int,
        stage: str,
        *,
        status: str | Sequence[str] = "candidate",
        source: str | Sequence[str] | None = None,
        has_output: bool | None = None,
        requires: str | None = None,
        exclude: Collection[str] = (),
        after: str | None = None,
    ) -> tuple[str, list[Any]]:
        where, params = self._filters(status, source, None, None, round, has_output)
        where = f"json_extract(meta, ?) IS NULL {where}"
        params = [f"$.done_{stage}", *params]
        if requires is not None:
            where += " AND json_extract(meta, ?) IS NOT NULL"
            params.append(f"$.done_{requires}")
        if exclude:
            where += f" AND id NOT IN ({','.join('?' * len(exclude))})"
            params.extend(exclude)
        if after is not None:
            where += " AND rowid > (SELECT rowid FROM examples WHERE id = ?)"
            params.append(after)
        return where, params

    def sample_accepted(self, n: int, rng: random.Random) -> list[str]:
        """Ids of up to `n` accepted examples, sampled reproducibly."""
        return self._sample_ids("status = 'accepted'", n, rng)

    def sample_evolvable(
        self, n: int, max_depth: int, rng: random.Random, *, languages: Sequence[str] = ()
    ) -> list[str]:
        """Ids of accepted examples that may be evolved again (depth below `max_depth`), in
        one of `languages` (any language when empty)."""
        where = f"status = 'accepted' AND depth < {int(max_depth)}"
        return self._sample_ids(where + _in_languages(languages), n, rng)

    def round_counts(self, round: int) -> dict[str, Any]:
        """What a round produced, counted with SQL (reducer counters undercount after a re-run)."""
        created = self._query(
            "SELECT source, status, count(*) AS n FROM examples WHERE round = ? GROUP BY source, status",
            [round],
        )
        by_status: dict[str, int] = {}
        by_source: dict[str, int] = {}
        for row in created:
            by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
            by_source[row["source"]] = by_source.get(row["source"], 0) + row["n"]
        return {
            "created": sum(by_status.values()),
            "by_status": by_status,
            "by_source": by_source,
            "rejections": self.rejection_counts(round),
        }

    def rejection_counts(
        self, round: int | None = None, stage: str | None = None, *, verdicts_only: bool = False
    ) -> dict[str, dict[str, int]]:
        """Rows of `rejections` by stage and reason (largest first), for a round and stage or
        all: the one count of drops the live view, `inspect`, the report and the card show.

        `verdicts_only` leaves out failed model calls (`model_failure:*`), which drop nothing.
        """
        where, params = [], []
        if round is not None:
            where.append("round = ?")
            params.append(round)
        if stage is not None:
            where.append("stage = ?")
            params.append(stage)
        if verdicts_only:
            where.append("reason NOT LIKE 'model_failure:%'")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(
            f"SELECT stage, reason, count(*) AS n FROM rejections {clause} "
            "GROUP BY stage, reason ORDER BY stage, n DESC, reason",
            params,
        )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["stage"], {})[row["reason"]] = row["n"]
        return counts

    def elimination_counts(self, round: int) -> dict[str, int]:
        """Verdicts of Evol-Instruct's elimination rules in `round`, per reason: they are
        recorded under the evolver's stage (`Stage.EVOLVE`), on the round's evolved children (a
        failed evolution is recorded on its parent)."""
        rows = self._query(
            "SELECT r.reason, count(*) AS n FROM rejections AS r "
            "JOIN examples AS e ON e.id = r.example_id "
            "WHERE r.round = ? AND r.stage = ? AND e.source = 'evolved' AND e.round = ? "
            "AND r.reason NOT LIKE 'model_failure:%' GROUP BY r.reason",
            [round, Stage.EVOLVE, round],
        )
        return {row["reason"]: row["n"] for row in rows}

    def tag_counts(self, status: str = "accepted") -> dict[str, int]:
        """InsTag tag → how many examples of `status` carry it, from the tags in `meta`.

        One aggregate in SQL, so the selector can ask every round without
        loading the pool into Python.
        """
        rows = self.db.execute(
            "SELECT tag.value, count(*) FROM examples, json_each(examples.meta, '$.tags') AS tag "
            "WHERE examples.status = ? AND json_type(examples.meta, '$.tags') = 'array' "
            "AND tag.type = 'text' GROUP BY tag.value",
            [status],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def copy_scores(self, from_id: str, to_id: str, round: int, note: str) -> None:
        """Give a rewrite its parent's scores: ReAlign keeps the meaning the judge scored."""
        scores = [
            Score(
                to_id,
                s.scorer,
                s.dimension,
                s.value,
                s.raw_output,
                f"{note}: {s.explanation or ''}".strip(),
            )
            for s in self.scores_for([from_id])[from_id]
        ]
        self.record_scores(scores, round)

    def update_meta(self, id: str, **values: Any) -> None:
        with self.transaction() as db:
            row = self.get(id)
            if row is None:
                raise KeyError(id)
            db["examples"].update(id, {"meta": dumps({**row.meta, **values}), "updated_at": now()})

    # --- scores and rejections ------------------------------------------------------
    def record_scores(self, scores: Sequence[Score], round: int) -> None:
        """Upsert scores; one row per (example, scorer, dimension), the newest wins."""
        rows = [
            {
                "id": stable_hash([s.example_id, s.scorer, s.dimension])[:24],
                "example_id": s.example_id,
                "scorer": s.scorer,
                "dimension": s.dimension,
                "value": s.value,
                "raw_output": s.raw_output,
                "explanation": s.explanation,
                "round": round,
                "created_at": now(),
            }
            for s in scores
        ]
        if rows:
            with self.transaction() as db:
                db["scores"].insert_all(rows, replace=True, batch_size=500)

    def scores_for(self, ids: Sequence[str]) -> dict[str, list[Score]]:
        found: dict[str, list[Score]] = {i: [] for i in ids}
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(
                f"SELECT * FROM scores WHERE example_id IN ({marks}) ORDER BY rowid", chunk
            ):
                found[row["example_id"]].append(
                    Score(
                        row["example_id"],
                        row["scorer"],
                        row["dimension"],
                        row["value"],
                        row["raw_output"],
                        row["explanation"],
                    )
                )
        return found

    def record_rejections(self, rejections: Sequence[Rejection], round: int) -> None:
        """Keep every rejection with its evidence and raw output; re-recording is a no-op.

        Each rejection in `rejections` is one row, identical ones too: a weak generator that
        writes the same task seven times has seven drafts dropped as too similar, and every
        count (the live view, `inspect rejections`, the report, the card) says seven. A
        re-run (after a crash) records the same list again, and finds each row already there.
        """
        rows = []
        seen: Counter[str] = Counter()
        for r in rejections:
            # Two distinct failures of one stage (two failed calls with no example yet)
            # differ in their raw output or evidence; repeats of one are told apart by their
            # place among the equal ones (the first keeps the id it always had).
            key = [r.stage, r.reason, r.example_id, r.text, round, r.raw_output, dumps(r.evidence)]
            base = stable_hash(key)
            repeat = seen[base]
            seen[base] += 1
            rows.append(
                {
                    "id": (stable_hash([*key, repeat]) if repeat else base)[:24],
                    "example_id": r.example_id,
                    "text": r.text,
                    "stage": r.stage,
                    "reason": r.reason,
                    "evidence": dumps(r.evidence),
                    "raw_output": r.raw_output,
                    "round": round,
                    "created_at": now(),
                }
            )
        if rows:
            with self.transaction() as db:
                db["rejections"].insert_all(rows, ignore=True, batch_size=500)

    def reject(self, rejections: Sequence[Rejection], round: int) -> None:
        """Record rejections and move their examples out of the candidates, in one transaction.

        A failed model call is no verdict: it is recorded, and its example stays
        where it was, for a later round (or a re-run) to try again. A human seed
        (`KEPT_SOURCES`) is never dropped either: the verdict is recorded with it.
        """
        verdicts = [r.example_id for r in rejections if r.example_id and r.is_verdict]
        with self.transaction():
            self.record_rejections(rejections, round)
            self.set_status(self._droppable(verdicts), "rejected")

    def _droppable(self, ids: Sequence[str]) -> list[str]:
        kept = sorted(KEPT_SOURCES)
        found: list[str] = []
        for chunk in chunks(list(dict.fromkeys(ids))):
            marks = ",".join("?" * len(chunk))
            found.extend(
                r["id"]
                for r in self.db.query(
                    f"SELECT id FROM examples WHERE id IN ({marks}) "
                    f"AND source NOT IN ({','.join('?' * len(kept))})",
                    [*chunk, *kept],
                )
            )
        return found

    def add_rewrites(
        self, drafts: Sequence[ExampleDraft], round: int, *, supersede: bool = True
    ) -> dict[str, str]:
        """Add kept ReAlign rewrites, each inheriting its original's scores (and, with
        `supersede`, replacing it at once). Returns original id → rewrite id.
        """
        children: dict[str, str] = {}
        with self.transaction():
            ids = self.add_candidates(list(drafts), round=round).ids if drafts else []
            for draft, child in zip(drafts, ids, strict=True):
                if draft.parent_id is None:
                    continue
                self.copy_scores(
                    draft.parent_id, child, round, "inherited from the original before ReAlign"
                )
                children[draft.parent_id] = child
            if supersede:
                self.set_status(list(children), "superseded")
        return children

    def rejections(
        self,
        *,
        stage: str | None = None,
        reason: str | None = None,
        example_id: str | None = None,
        round: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        clauses, params = [], []
        for column, value in (
            ("stage", stage),
            ("reason", reason),
            ("example_id", example_id),
            ("round", round),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        tail = f"LIMIT {int(limit)}" if limit else ""
        rows = self._query(f"SELECT * FROM rejections {where} ORDER BY rowid {tail}", params)
        for row in rows:
            row["evidence"] = loads(row["evidence"])
        return rows

    # --- demos, statistics, lineage -------------------------------------------------
    def sample_demos(
        self, n_human: int, n_machine: int, rng: random.Random, *, language: str | None = None
    ) -> list[Example]:
        """Few-shot demos: human seeds plus accepted machine examples, shuffled (Self-Instruct);
        with `language`, only examples in that language (a call's demos share its language)."""
        only = _in_languages([language] if language else [])
        machine = self._sample_ids(
            "source != 'seed' AND status = 'accepted'" + only, n_machine, rng
        )
        # Too few machine examples yet (always, at the start): more human seeds fill the prompt.
        wanted = n_human + n_machine - len(machine)
        human = self._sample_ids("source = 'seed' AND status = 'accepted'" + only, wanted, rng)
        demos = self.get_many(human + machine)
        rng.shuffle(demos)
        return demos

    def _sample_ids(self, where: str, n: int, rng: random.Random) -> list[str]:
        """Up to `n` distinct ids of rows matching `where`, uniformly, reproducibly.

        On a big pool rowids are probed at random and kept when they match (uniform over
        the matching rows, without replacement): reading every matching rowid cost 0.55 s
        a call at 1M examples, six calls a round. A small pool, or one where matches are
        too sparse for probing to pay, is read whole.
        """
        if n <= 0:
            return []
        top = self.db.conn.execute("SELECT max(rowid) FROM examples").fetchone()[0] or 0
        if top > SAMPLE_SCAN_ROWS:
            probed = self._probe_ids(where, n, top, rng)
            if probed is not None:
                return probed
        # Plain tuples, not sqlite-utils dicts: this may read the whole pool.
        rowids = [r[0] for r in self.db.conn.execute(f"SELECT rowid FROM examples WHERE {where}")]
        picked = rng.sample(rowids, min(n, len(rowids)))
        return self._ids_of_rowids(picked)

    def _probe_ids(self, where: str, n: int, top: int, rng: random.Random) -> list[str] | None:
        """Rejection sampling over rowids 1..top; None when too few probes match."""
        picked: list[int] = []
        seen: set[int] = set()
        probes = 0
        # Below SQLite's smallest default variable limit (32,766), whatever n is.
        batch = min(max(64, 4 * n), 4096)
        while len(picked) < n:
            if probes >= PROBE_BUDGET_PER_ID * n + batch:
                return None
            draws = [rng.randint(1, top) for _ in range(batch)]
            probes += batch
            marks = ",".join("?" * len(draws))
            matching = {
                r[0]
                for r in self.db.conn.execute(
                    # NOT INDEXED: rowid lookups only; with an index on status or source
                    # the planner scanned every matching row (0.1 s a call at 1M).
                    f"SELECT rowid FROM examples NOT INDEXED WHERE rowid IN ({marks}) AND ({where})",
                    draws,
                )
            }
            # Draw order decides, so the result is what one-at-a-time probing would give.
            for rowid in draws:
                if rowid in matching and rowid not in seen:
                    seen.add(rowid)
                    picked.append(rowid)
                    if len(picked) == n:
                        break
        return self._ids_of_rowids(picked)

    def _ids_of_rowids(self, rowids: list[int]) -> list[str]:
        by_rowid: dict[int, str] = {}
        for part in chunks(rowids):
            marks = ",".join("?" * len(part))
            by_rowid.update(
                self.db.conn.execute(
                    f"SELECT rowid, id FROM examples WHERE rowid IN ({marks})", part
                )
            )
        return [by_rowid[r] for r in rowids]

    def pool_stats(self) -> dict[str, Any]:
        """Counts by status, source and round, read in one consistent snapshot."""
        return stats.pool_stats(self.db.conn)

    def children(self, id: str) -> list[Example]:
        rows = self._query(
            f"SELECT {EXAMPLE_COLUMNS} FROM examples WHERE parent_id = ? ORDER BY rowid", [id]
        )
        return [row_to_example(r) for r in rows]

    def lineage(self, id: str) -> dict[str, Any]:
        """An example's ancestry up to its seed, its descendants, scores and rejections."""
        example = self.get(id)
        if example is None:
            raise InputError(f"no example with id {id!r}", field="id")
        ancestors: list[Example] = []
        seen = {example.id}
        parent_id = example.parent_id
        while parent_id and parent_id not in seen:
            parent = self.get(parent_id)
            if parent is None:
                break
            ancestors.append(parent)
            seen.add(parent.id)
            parent_id = parent.parent_id
        return {
            "example": self._node(example),
            "ancestors": [self._node(a) for a in ancestors],
            "descendants": self._descendants(example.id, depth=0),
        }

    def _node(self, example: Example) -> dict[str, Any]:
        node = example.__dict__.copy()
        node["scores"] = [s.__dict__ for s in self.scores_for([example.id])[example.id]]
        node["rejections"] = self.rejections(example_id=example.id)
        return node

    def _descendants(self, id: str, depth: int) -> list[dict[str, Any]]:
        if depth > 50:  # a cycle cannot happen with content ids, but bound the walk anyway
            return []
        out = []
        for child in self.children(id):
            node = self._node(child)
            node["children"] = self._descendants(child.id, depth + 1)
            out.append(node)
        return out
