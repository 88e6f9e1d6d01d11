"""The daemon at scale: rounds of the whole graph on a pool of N accepted examples (issue 14).

Prints the figures the daemon must keep healthy as a pool grows (goals at 1M:
RSS ≤ 1 GiB and flat, start → first model call ≤ 5 s, orchestration ≤ 1 s a
round, `status --json` ≤ 200 ms):

1. orchestration time per round outside model calls (graph, store, selector,
   checkpoints), from an in-process run of `--rounds` rounds with the
   deterministic teacher double (behind the store's response cache, as in a
   real run); the first round is reported apart (it opens the selector indexes);
2. RSS after every round: first, last, max and the least-squares slope;
3. the size of `checkpoints.db` (+ `-wal`) after pruning and the threads left;
4. start → first model call: the daemon as a real process against a loopback
   OpenAI server in this process, started fresh and, after a SIGKILL mid-round,
   restarted; from process start to the first request reaching the server
   (requests the response cache answers never reach it), to the end of the
   round, and the process's peak RSS;
5. `evoinstruct -p DIR status --json` as a subprocess: median and max of runs, as
   this environment runs it (no bytecode cache), with one, and through
   cli.fast_status (the same command line without typer);
6. the selector's decisions on `--reference` planted candidates against
   exhaustive references over the whole accepted pool (see `reference_check`).

The pool: synthetic English and Chinese instructions (two to one) with
Zipf-distributed words and characters, 60% human seeds (round 0, with planted
exact-hash and near duplicates among them, as users' files have) and 40%
machine examples over `--history` finished rounds (generated, evolved with
parents, rewritten with superseded originals), plus rejected candidates with
their rejections and scores. It is written through the store's own API
(`add_candidates`, `record_rejections`, `record_scores`, `start_round` /
`finish_round` with a round record taken from a real round), so it is what the
daemon would have written; the seed importer's speed is measured on a sample
and extrapolated. The built pool is cached under bench/out/daemon/ keyed by
size, seed and builder version; every run works on a copy.

Each phase runs in its own process, so building the pool or the references
never shows in the rounds' RSS; a watchdog stops a phase whose RSS passes
`--rss-limit` (the in-memory indexes of old took ~1 GiB at 100k).

`--profile` runs the in-process rounds under cProfile and prints the top functions;
`--only rounds,status,resume,reference` measures some parts; `--build-only` builds.
Run: .venv/bin/python bench/daemon.py [--examples 1000000] [--rounds 20] [--kills 3]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import json
import os
import pstats
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from evoinstruct.graph.daemon.command import cli_command  # noqa: E402
from evoinstruct.store.stages import Stage  # noqa: E402

OUT = ROOT / "bench" / "out" / "daemon"
# Bump when the pool the builder writes changes: cached pools of older versions are ignored.
BUILD_VERSION = 1
SEED_SHARE = 0.6
EN_VERBS = "Explain Describe Compare Summarize Evaluate Outline Plan Critique".split()
ZH_VERBS = ["解释", "描述", "比较", "总结", "评价", "规划", "设计", "列出"]
SYLLABLES = "ka lo mi ren tor sa vel qui dan por el im ust gra bel fin".split()


def note(message: str) -> None:
    """Progress on stderr: a phase's stdout carries only its JSON answer."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --- synthetic text ---------------------------------------------------------------------
class Texts:
    """Instructions, inputs and answers with Zipf-distributed English words and Chinese characters.

    Words and characters are drawn by rank with weight 1/rank, so a few are very
    common and most are rare, as in real instructions: that shape decides how
    long the novelty and LSH shortlists get.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = ["".join(p) for p in itertools.product(SYLLABLES, repeat=3)]
        self.chars = [chr(0x4E00 + i) for i in range(2500)]
        self.word_weights = list(itertools.accumulate(1 / r for r in range(1, 4097)))
        self.char_weights = list(itertools.accumulate(1 / r for r in range(1, 2501)))

    def instruction(self, zh: bool) -> str:
        rng = self.rng
        if zh:
            body = rng.choices(self.chars, cum_weights=self.char_weights, k=rng.randint(12, 40))
            return f"{rng.choice(ZH_VERBS)}{''.join(body)}。"
        body = rng.choices(self.words, cum_weights=self.word_weights, k=rng.randint(8, 28))
        return f"{rng.choice(EN_VERBS)} {' '.join(body)}."

    def context(self) -> str:
        """An input for one example in five; the others have none."""
        if self.rng.random() >= 0.2:
            return ""
        k = self.rng.randint(5, 15)
        return " ".join(self.rng.choices(self.words, cum_weights=self.word_weights, k=k))

    def answer(self) -> str:
        k = self.rng.randint(20, 80)
        return "Answer: " + " ".join(
            self.rng.choices(self.words, cum_weights=self.word_weights, k=k)
        )

    def _split(self, text: str) -> tuple[bool, list[str]]:
        """(Chinese?, tokens) of a text without its end mark: characters or words."""
        zh = not text.isascii()
        return zh, list(text[:-1]) if zh else text[:-1].split(" ")

    @staticmethod
    def _join(zh: bool, tokens: list[str]) -> str:
        return "".join(tokens) + "。" if zh else " ".join(tokens) + "."

    def near_copy(self, text: str, edits: int = 1) -> str:
        """`text` with `edits` tokens replaced: a near duplicate when the text is long enough."""
        zh, tokens = self._split(text)
        for _ in range(edits):
            i = self.rng.randrange(len(tokens))
            tokens[i] = self.rng.choice(self.chars if zh else self.words)
        return self._join(zh, tokens)

    def exact_copy(self, text: str) -> str:
        """The same normalized text (case, end mark) under another store id (it keeps marks)."""
        zh, tokens = self._split(text)
        return "".join(tokens) + "！" if zh else " ".join(tokens).upper() + "!"

    def shuffled_copy(self, text: str) -> str:
        """Neighbouring tokens swapped: most shingles differ, the ROUGE-L LCS stays long."""
        zh, tokens = self._split(text)
        for i in range(1, len(tokens) - 1, 5):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        return self._join(zh, tokens)


# --- the pool cache ---------------------------------------------------------------------
def cache_dir(args: argparse.Namespace) -> Path:
    return OUT / f"pool-v{BUILD_VERSION}-n{args.examples}-h{args.history}-s{args.seed}"


def copy_project(source: Path, target: Path) -> None:
    """A working copy of a cached project (pool.db and whatever index files lie beside it)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def template_round() -> dict[str, Any]:
    """The `rounds` record of one real round (its stored config and counts) on a small pool."""
    import tempfile

    from evoinstruct.graph.project import init_project
    from evoinstruct.store.seeds import add_seed_file

    with tempfile.TemporaryDirectory() as tmp:
        project = init_project(Path(tmp) / "proj").root
        with project_store(project) as store:
            add_seed_file(store, project / "seeds" / "seed_tasks_en.jsonl")
        run_rounds(project, 1)
        with project_store(project) as store:
            row = store.last_round()
    assert row is not None
    return {"config": row["config"], "counts": row["counts"]}


def build_pool(args: argparse.Namespace) -> dict[str, Any]:
    """Write the synthetic pool into the cache directory; returns what the build took."""
    from evoinstruct.graph.project import init_project

    target = cache_dir(args)
    staging = target.with_name(target.name + ".building")
    if staging.exists():
        shutil.rmtree(staging)
    project = init_project(staging / "proj").root
    template = template_round()
    texts = Texts(random.Random(args.seed))
    started = time.perf_counter()
    with project_store(project) as store:
        seeds = _write_seeds(store, texts, round(args.examples * SEED_SHARE))
        machine = _write_history(store, texts, args.examples - seeds, args.history, template)
        store.checkpoint_wal()
    built = {
        "examples": args.examples,
        "seeds": seeds,
        "machine": machine,
        "history_rounds": args.history,
        "build_s": time.perf_counter() - started,
        "pool_mb": (project / "pool.db").stat().st_size / 2**20,
    }
    built["import_sample"] = measure_seed_import(min(args.examples, args.import_sample), args.seed)
    (staging / "build.json").write_text(json.dumps(built, indent=2))
    staging.rename(target)
    return built


def _seed_drafts(texts: Texts, n: int, start: int) -> list[Any]:
    """Human seeds; one in a hundred a near copy and one in two hundred an exact-hash copy of an
    earlier seed of the batch (users' files hold both; the importer keeps them)."""
    from evoinstruct.store.records import ExampleDraft
    from evoinstruct.text.rules import language_of

    drafts: list[Any] = []
    for i in range(start, start + n):
        roll = texts.rng.random()
        if drafts and roll < 0.015:
            earlier = texts.rng.choice(drafts).instruction
            copy = texts.near_copy if roll < 0.01 else texts.exact_copy
            instruction = copy(earlier)
        else:
            instruction = texts.instruction(zh=i % 3 == 2)
        context = texts.context()
        drafts.append(
            ExampleDraft(
                instruction,
                context,
                texts.answer(),
                source="seed",
                language=language_of(f"{instruction} {context}"),
            )
        )
    return drafts


def _write_seeds(store: Any, texts: Texts, n: int, batch: int = 20_000) -> int:
    inserted = 0
    for start in range(0, n, batch):
        drafts = _seed_drafts(texts, min(batch, n - start), start)
        inserted += store.add_candidates(drafts, round=0).inserted
        note(f"  seeds {inserted:,}/{n:,}")
    return inserted


def _write_history(
    store: Any, texts: Texts, n: int, rounds: int, template: dict[str, Any]
) -> dict[str, int]:
    """`n` accepted machine examples over `rounds` finished rounds, with what a round leaves."""
    written = {"accepted": 0, "superseded": 0, "rejected": 0}
    per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    parents = [r[0] for r in store.db.conn.execute("SELECT id FROM examples LIMIT 5000")]
    for first in range(0, rounds, 50):
        with store.transaction():
            for r in range(first + 1, min(first + 50, rounds) + 1):
                counts = _write_round(store, texts, r, per_round[r - 1], parents, template)
                for key in written:
                    written[key] += counts["by_status"].get(key, 0)
        note(f"  rounds {min(first + 50, rounds):,}/{rounds:,}")
    return written


def _write_round(
    store: Any,
    texts: Texts,
    number: int,
    accepted: int,
    parents: list[str],
    template: dict[str, Any],
) -> dict[str, Any]:
    """One history round: accepted generated/evolved/rewritten examples (each rewrite's
    original superseded), rejected candidates with their rejections, scores, the round row."""
    from evoinstruct.store.records import ExampleDraft, Rejection, Score

    rng = texts.rng
    by_status: dict[str, list[Any]] = {"accepted": [], "superseded": [], "rejected": []}
    for i in range(accepted):
        zh = (number + i) % 3 == 2
        draft = ExampleDraft(texts.instruction(zh), texts.context(), texts.answer())
        draft.language = "zh" if zh else "en"
        draft.meta = {"done_respond": 1, "done_critique": 1, "tags": rng.sample(SYLLABLES, 2)}
        kind = rng.random()
        if kind < 0.35:
            draft.source, draft.operation, draft.depth = "evolved", "deepen", rng.randint(1, 4)
            draft.parent_id = rng.choice(parents)
        elif kind < 0.5:
            original = ExampleDraft(draft.instruction, draft.input, texts.answer(), meta=draft.meta)
            by_status["superseded"].append(original)
            draft.source = "rewritten"
        by_status["accepted"].append(draft)
    for _ in range(accepted // 2):
        draft = ExampleDraft(texts.instruction(rng.random() < 1 / 3), "", texts.answer())
        draft.meta = {"done_respond": 1, "done_critique": 1}
        by_status["rejected"].append(draft)
    ids: dict[str, list[str]] = {}
    for status, drafts in by_status.items():
        ids[status] = store.add_candidates(drafts, round=number, status=status).ids
    parents.extend(ids["accepted"][:5])
    reasons = ["too_similar", "near_duplicate", "below_threshold:quality", "not_diverse"]
    store.record_rejections(
        [
            Rejection(Stage.SELECT, rng.choice(reasons), {"n": k}, example_id=eid)
            for k, eid in enumerate(ids["rejected"])
        ]
        + [Rejection(Stage.RESPOND, "model_failure:timeout", {"round": number}, raw_output="")],
        round=number,
    )
    scored = ids["accepted"] + ids["rejected"]
    store.record_scores(
        [Score(eid, "judge", "quality", float(rng.randint(3, 5))) for eid in scored]
        + [Score(eid, "deita", "complexity", rng.uniform(1, 6)) for eid in scored],
        round=number,
    )
    created = {k: len(v) for k, v in by_status.items()}
    counts = {**template["counts"], "created": sum(created.values()), "by_status": created}
    store.start_round(number, template["config"], None)
    store.finish_round(number, counts)
    return counts


def measure_seed_import(n: int, seed: int) -> dict[str, float]:
    """`add_seed_file` on an Alpaca file of `n` rows like the seeds: rows per second."""
    import tempfile

    from evoinstruct.store.seeds import add_seed_file

    texts = Texts(random.Random(seed + 1))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "seeds.jsonl"
        with data.open("w", encoding="utf-8") as fh:
            for i in range(n):
                row = {
                    "instruction": texts.instruction(zh=i % 3 == 2),
                    "input": texts.context(),
                    "output": texts.answer(),
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        started = time.perf_counter()
        with project_store(Path(tmp)) as store:
            report = add_seed_file(store, data)
        seconds = time.perf_counter() - started
    return {"rows": report.inserted, "seconds": seconds, "rows_per_s": report.inserted / seconds}


def project_store(project: Path):
    from evoinstruct.store import open_store

    return open_store(project / "pool.db")


# --- phase: opening the selector indexes once (a first start on a pool) ----------------
def warm_indexes(project: Path) -> dict[str, float]:
    """Open the selector's indexes as a round would, the first time on this pool."""
    from evoinstruct.graph.project import Project
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.graph.round.indexes import selection_indexes

    proj = Project(project)
    started = time.perf_counter()
    deps = deps_for_project(proj, proj.load_config(), models=object())
    try:
        selection_indexes(deps)
        seconds = time.perf_counter() - started
    finally:
        deps.store.checkpoint_wal()
        deps.store.close()
    return {"seconds": seconds, "rss_mb": psutil.Process().memory_info().rss / 2**20}


# --- phase: rounds in process -----------------------------------------------------------
class TimedTeacher:
    """The deterministic teacher double, timing every `generate` call.

    The call log of the scripted double is emptied after each call: it would
    otherwise grow with every request and hide the daemon's own memory profile.
    """

    def __init__(self) -> None:
        from tests.fake_teacher import scripted_teacher

        self.inner = scripted_teacher()
        self.seconds = 0.0
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def generate(self, requests: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self.inner.generate(requests)
        finally:
            self.seconds += time.perf_counter() - started
            self.requests += len(requests)
            self.inner.calls.clear()


def run_rounds(project: Path, rounds: int) -> dict[str, Any]:
    """`rounds` rounds with `Daemon`; per-round wall time, model time and RSS."""
    from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
    from evoinstruct.graph.project import Project
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.models.cache import CachedModel
    from evoinstruct.models.factory import ModelSet

    proj = Project(project)
    config = proj.load_config()
    teacher = TimedTeacher()
    deps = deps_for_project(proj, config, models=object())
    deps.models = ModelSet(
        config.models,
        config.roles,
        cache=deps.store,
        builder=lambda cfg, cache=None: CachedModel(teacher, cache) if cache else teacher,
    )
    process = psutil.Process()
    marks: list[tuple[float, float]] = []  # (wall clock, model seconds) at each boundary
    rss: list[float] = []
    node_orch: dict[str, list[float]] = {}
    last_node = [0.0, 0.0]

    def progress(kind: str, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if kind == "node_done":
            # A node's time outside model calls, since the previous node (or round) ended.
            orch = (now - last_node[0]) - (teacher.seconds - last_node[1])
            node_orch.setdefault(event["node"], []).append(orch)
            last_node[:] = [now, teacher.seconds]
        elif kind == "round_done":
            marks.append((now, teacher.seconds))
            rss.append(process.memory_info().rss / 2**20)

    async def main() -> Any:
        daemon = Daemon(proj, deps, DaemonOptions(rounds=rounds), progress)
        marks.append((time.perf_counter(), teacher.seconds))
        last_node[:] = [marks[0][0], 0.0]
        rss.append(process.memory_info().rss / 2**20)
        try:
            return await daemon.run()
        finally:
            await deps.models.aclose()
            deps.store.close()

    result = asyncio.run(main())
    assert len(result.rounds_run) == rounds, result
    walls = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    models = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return {
        "wall": walls,
        "model": models,
        "orch": [w - m for w, m in zip(walls, models, strict=True)],
        "rss": rss,
        "requests": teacher.requests,
        "nodes": node_orch,
    }


def slope(values: list[float]) -> float:
    """Least-squares slope per step."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


# --- phase: the selector against exhaustive references ---------------------------------
def planted_candidates(project: Path, n: int, seed: int) -> list[Any]:
    """`n` candidates: a quarter each exact-hash copies, near copies (one or two tokens
    changed) and neighbour-swapped copies of random accepted examples, and fresh texts."""
    from evoinstruct.store.ids import example_id
    from evoinstruct.store.records import Example

    rng = random.Random(seed + 99)
    texts = Texts(rng)
    conn = sqlite3.connect(project / "pool.db")
    top = conn.execute("SELECT max(rowid) FROM examples").fetchone()[0]
    makers: list[Callable[[str], str]] = [
        texts.exact_copy,
        lambda t: texts.near_copy(t, rng.choice([1, 1, 2])),
        texts.shuffled_copy,
    ]
    out: list[Any] = []
    i = -1
    while len(out) < n:
        i += 1
        if i % 4 == 3:
            instruction = texts.instruction(zh=i % 3 == 2)
        else:
            row = None
            while row is None:
                row = conn.execute(
                    "SELECT instruction, input FROM examples WHERE rowid >= ? AND "
                    "status = 'accepted' AND input = '' LIMIT 1",
                    [rng.randint(1, top)],
                ).fetchone()
            instruction = makers[i % 4](row[0])
        eid = example_id(instruction, "", None, source="generated")
        # A text with a pool example's own id never reaches the selector: the store keeps
        # the example it has and counts the draft as a duplicate.
        if conn.execute("SELECT 1 FROM examples WHERE id = ?", [eid]).fetchone():
            continue
        out.append(Example(id=eid, instruction=instruction, output="An answer."))
    conn.close()
    rng.shuffle(out)
    return out


async def selector_decisions(project: Path, candidates: list[Any]) -> dict[str, Any]:
    """What the wired selector decides for each candidate, one duplicate/novelty step at a time."""
    from evoinstruct.agents import selector
    from evoinstruct.graph.project import Project
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.graph.round.indexes import selection_indexes

    proj = Project(project)
    deps = deps_for_project(proj, proj.load_config(), models=object())
    try:
        indexes = selection_indexes(deps)
        out: dict[str, Any] = {}
        for step in ("exact_dedup", "near_dedup", "novelty"):
            config = deps.config.selector.model_copy(
                update={"steps": [step], "constraints": "off", "budget": None}
            )
            started = time.perf_counter()
            outcome = await selector.select(candidates, {}, indexes, config, commit=False)
            rejected = {r.example_id: (r.reason, r.evidence) for r in outcome.rejections}
            out[step] = {
                "seconds": time.perf_counter() - started,
                "rejected": {k: v for k, v in rejected.items() if k is not None},
            }
        out["config"] = deps.config.selector.model_dump(mode="json")
        return out
    finally:
        deps.store.close()


def _pool_rows(project: Path, batch: int = 50_000) -> Iterator[list[tuple[str, str, str]]]:
    """(id, instruction, input) of the accepted pool in the indexes' order (rowid)."""
    conn = sqlite3.connect(project / "pool.db")
    try:
        cursor = conn.execute(
            "SELECT id, instruction, input FROM examples WHERE status = 'accepted' ORDER BY rowid"
        )
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        conn.close()


def reference_decisions(project: Path, candidates: list[Any], config: Any) -> dict[str, Any]:
    """Exhaustive decisions over every accepted example, with Self-Instruct's sequential order.

    exact: agents.text.text_hash of each pool text against the candidate's;
    near: the estimated Jaccard of the same MinHash signatures (DedupIndex.signature)
      against every pool signature, by brute force instead of LSH;
    novelty: agents.selection.novelty.novelty_exhaustive (rouge_score) on every pool instruction
      that passes the necessary conditions of agents/selection/novelty.py's proof (bounds 1 and 3:
      lengths and multiset overlap), which numpy checks for the whole pool at once.
    """
    from evoinstruct.agents.selector import field_text

    started = time.perf_counter()
    cand_dedup = [field_text(c, config.dedup_fields) for c in candidates]
    cand_nov = [field_text(c, config.novelty_fields) for c in candidates]
    exact, near, novelty = (
        _ExactRef(cand_dedup),
        _NearRef(cand_dedup, config),
        _NoveltyRef(cand_nov, config),
    )
    seen = 0
    for rows in _pool_rows(project):
        dedup_texts = ["\n".join(v for v in (i, x) if v) for _, i, x in rows]
        ids = [r[0] for r in rows]
        exact.scan(ids, dedup_texts)
        near.scan(ids, dedup_texts)
        novelty.scan(rows)
        seen += len(rows)
        note(f"  reference: {seen:,} pool examples")
    ids = [c.id for c in candidates]
    return {
        "pool": seen,
        "seconds": time.perf_counter() - started,
        "exact_dedup": exact.decide(ids),
        "near_dedup": near.decide(ids),
        "novelty": novelty.decide(ids, cand_nov),
    }


class _ExactRef:
    def __init__(self, texts: list[str]) -> None:
        from evoinstruct.agents.text import text_hash

        self.hashes = [text_hash(t) for t in texts]
        self.wanted = set(self.hashes)
        self.found: dict[str, str] = {}

    def scan(self, ids: list[str], texts: list[str]) -> None:
        from evoinstruct.agents.text import text_hash

        for eid, text in zip(ids, texts, strict=True):
            key = text_hash(text)
            if key in self.wanted:
                self.found.setdefault(key, eid)

    def decide(self, ids: list[str]) -> dict[str, Any]:
        rejected, local = {}, {}
        for eid, key in zip(ids, self.hashes, strict=True):
            twin = self.found.get(key) or local.get(key)
            if twin is not None:
                rejected[eid] = twin
            else:
                local[key] = eid
        return rejected


class _NearRef:
    def __init__(self, texts: list[str], config: Any) -> None:
        import numpy as np

        from evoinstruct.agents.selection.dedup import DedupIndex

        self.np = np
        self.index = DedupIndex(config.dedup)
        self.threshold = config.dedup.jaccard_threshold
        sigs = [self.index.signature(t) for t in texts]
        self.present = [s is not None for s in sigs]
        width = config.dedup.num_perm
        self.sigs = np.stack([s if s is not None else np.zeros(width, np.uint32) for s in sigs])
        self.best = [(-1.0, "")] * len(texts)

    def scan(self, ids: list[str], texts: list[str]) -> None:
        np = self.np
        pool_sigs, pool_ids = [], []
        for eid, text in zip(ids, texts, strict=True):
            sig = self.index.signature(text)
            if sig is not None:
                pool_sigs.append(sig)
                pool_ids.append(eid)
        if not pool_sigs:
            return
        block = np.stack(pool_sigs)
        for c, sig in enumerate(self.sigs):
            if not self.present[c]:
                continue
            sims = np.count_nonzero(block == sig, axis=1) / sig.size
            k = int(np.argmax(sims))
            # Ties: the smallest id, as DedupIndex.near sorts the LSH candidates by id.
            top = [pool_ids[j] for j in np.flatnonzero(sims == sims[k])]
            if sims[k] > self.best[c][0] or (
                sims[k] == self.best[c][0] and min(top) < self.best[c][1]
            ):
                self.best[c] = (float(sims[k]), min(top))

    def decide(self, ids: list[str]) -> dict[str, Any]:
        np = self.np
        rejected: dict[str, Any] = {}
        accepted: list[int] = []
        for c, eid in enumerate(ids):
            sim, twin = self.best[c]
            for a in accepted:  # earlier accepted candidates of the same batch
                s = float(np.count_nonzero(self.sigs[a] == self.sigs[c])) / self.sigs.shape[1]
                if self.present[c] and s > sim:
                    sim, twin = s, ids[a]
            if self.present[c] and sim >= self.threshold:
                rejected[eid] = [twin, round(sim, 4)]
            else:
                accepted.append(c)
        return rejected


class _NoveltyRef:
    """Pool instructions that may reach the ROUGE-L threshold with a candidate, by numpy.

    Kept for a candidate: lengths with 2·min(m, n) ≥ τ(m+n), and an overlap bound
    (distinct shared tokens + the smaller repeat count) of at least ⌈α·max(m, n)⌉,
    α = τ/(2−τ): both necessary for F ≥ τ (agents/selection/novelty.py, "Why the shortlist is exact").
    Distinct shared tokens of every (pool text, candidate) pair are one sparse product.
    """

    def __init__(self, texts: list[str], config: Any) -> None:
        import numpy as np

        from evoinstruct.agents.text import tokenize

        self.np = np
        self.tokenize = tokenize
        self.tau = config.novelty.threshold
        self.alpha = self.tau / (2 - self.tau)
        self.vocab: dict[str, int] = {}
        cands = [tokenize(t) for t in texts]
        sets = [sorted({self._id(t) for t in c}) for c in cands]
        # Candidate tokens take the first ids: a pool token with a later id matches none.
        self.indicator = np.zeros((len(self.vocab), len(cands)), np.float32)
        for c, ids in enumerate(sets):
            self.indicator[ids, c] = 1
        self.m = np.array([len(c) for c in cands])
        self.m_repeats = self.m - np.array([len(s) for s in sets])
        self.shortlist: list[list[tuple[str, str]]] = [[] for _ in texts]

    def _id(self, token: str) -> int:
        return self.vocab.setdefault(token, len(self.vocab))

    def scan(self, rows: list[tuple[str, str, str]]) -> None:
        from scipy import sparse

        np = self.np
        distinct_lists = []
        lengths = np.empty(len(rows), np.int64)
        for j, row in enumerate(rows):
            tokens = self.tokenize(row[1])
            lengths[j] = len(tokens)
            distinct_lists.append({self._id(t) for t in tokens})
        distinct = np.array([len(d) for d in distinct_lists])
        cols = np.fromiter(itertools.chain.from_iterable(distinct_lists), np.int64)
        owner = np.repeat(np.arange(len(rows)), distinct)
        known = cols < self.indicator.shape[0]
        pool = sparse.csr_matrix(
            (np.ones(int(known.sum()), np.float32), (owner[known], cols[known])),
            shape=(len(rows), self.indicator.shape[0]),
        )
        shared = np.asarray(pool @ self.indicator)  # (pool texts, candidates)
        n, m = lengths[:, None], self.m[None, :]
        bound = shared + np.minimum((lengths - distinct)[:, None], self.m_repeats[None, :])
        need = np.ceil(self.alpha * np.maximum(n, m) - 1e-9)
        ok = (2 * np.minimum(n, m) >= self.tau * (n + m) - 1e-9) & (bound >= need) & (n > 0)
        for j, c in zip(*np.nonzero(ok), strict=True):
            self.shortlist[c].append((rows[j][0], rows[j][1]))

    def decide(self, ids: list[str], texts: list[str]) -> dict[str, Any]:
        from evoinstruct.agents.selection.novelty import novelty_exhaustive

        rejected: dict[str, Any] = {}
        accepted: list[tuple[str, str]] = []
        for c, (eid, text) in enumerate(zip(ids, texts, strict=True)):
            decision = novelty_exhaustive(self.shortlist[c] + accepted, [(eid, text)], self.tau)[0]
            if decision.accepted:
                accepted.append((eid, text))
            else:
                rejected[eid] = [decision.most_similar, round(decision.score or 0.0, 4)]
        return rejected


def reference_check(project: Path, n: int, seed: int, cache: Path) -> dict[str, Any]:
    """The selector's decisions on planted candidates against the references (cached per pool)."""
    candidates = planted_candidates(project, n, seed)
    chosen = asyncio.run(selector_decisions(project, candidates))
    from evoinstruct.agents.selector import SelectorConfig

    config = SelectorConfig.model_validate(chosen.pop("config"))
    key = cache / f"reference-n{n}-s{seed}.json"
    if key.exists():
        reference = json.loads(key.read_text())
    else:
        reference = reference_decisions(project, candidates, config)
        key.write_text(json.dumps(reference))
    return {"candidates": len(candidates), "selector": chosen, "reference": reference}


def compare(check: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per step: agreements, the selector's extra rejections and the ones it missed."""
    out = {}
    for step in ("exact_dedup", "near_dedup", "novelty"):
        mine = check["selector"][step]["rejected"]
        ref = check["reference"][step]
        missed = sorted(set(ref) - set(mine))
        extra = sorted(set(mine) - set(ref))
        out[step] = {
            "selector_rejects": len(mine),
            "reference_rejects": len(ref),
            "agree": check["candidates"] - len(missed) - len(extra),
            "missed": {k: ref[k] for k in missed},
            "extra": {k: mine[k] for k in extra},
            "seconds": check["selector"][step]["seconds"],
        }
    return out


# --- checkpoints, status ----------------------------------------------------------------
def checkpoint_figures(project: Path) -> dict[str, Any]:
    db = project / "checkpoints.db"
    wal = project / "checkpoints.db-wal"
    conn = sqlite3.connect(db)
    try:
        threads = [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")]
        rows = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        writes = conn.execute("SELECT count(*) FROM writes").fetchone()[0]
    finally:
        conn.close()
    return {
        "db_mb": db.stat().st_size / 2**20,
        "wal_mb": wal.stat().st_size / 2**20 if wal.exists() else 0.0,
        "threads": sorted(threads),
        "checkpoints": rows,
        "writes": writes,
    }


def time_status(project: Path, runs: int) -> dict[str, Any]:
    """`evoinstruct -p DIR status --json` as a user runs it: wall ms per run, plus the floor.

    Timed twice: in this environment as it is, and with a bytecode cache (under
    bench/out/, never in the tree), as an installed package has one. Without one
    (PYTHONDONTWRITEBYTECODE here), every run compiles each project module it imports.
    """
    exe = Path(sys.executable).with_name("evoinstruct")
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    command = [str(exe), "-p", str(project), "status", "--json"]
    # cli.fast_status: what the console script runs (no typer).
    fast = [sys.executable, "-m", "evoinstruct.cli.fast_status", *command[1:]]
    for argv in (command, fast):  # fills the bytecode cache
        subprocess.run(argv, check=True, capture_output=True, env=cached)
    out: dict[str, list[float]] = {"ms": [], "ms_bytecode": [], "ms_fast": [], "python_ms": []}
    for _ in range(runs):
        for key, argv, env in (
            ("ms", command, None),
            ("ms_bytecode", command, cached),
            ("ms_fast", fast, cached),
            ("python_ms", [sys.executable, "-c", "pass"], None),
        ):
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, env=env)
            out[key].append((time.perf_counter() - started) * 1000)
    return out


# --- resume after a kill ----------------------------------------------------------------
class PeakRss:
    """Samples a child process's RSS until it exits; kills it past `limit_mb`."""

    def __init__(self, process: subprocess.Popen, limit_mb: float) -> None:
        self.peak = 0.0
        self.killed = False
        self._thread = threading.Thread(target=self._watch, args=(process, limit_mb), daemon=True)
        self._thread.start()

    def _watch(self, process: subprocess.Popen, limit_mb: float) -> None:
        try:
            handle = psutil.Process(process.pid)
            while process.poll() is None:
                rss = handle.memory_info().rss / 2**20
                self.peak = max(self.peak, rss)
                if rss > limit_mb:
                    self.killed = True
                    process.kill()
                time.sleep(0.1)
        except psutil.NoSuchProcess:
            pass


def resume_after_kills(
    project: Path, kills: int, delay: float, log: Path, limit_mb: float
) -> list[dict[str, float]]:
    """Start the daemon, kill a round after its first requests; time both starts."""
    from tests.fake_teacher import server_reply
    from tests.openai_server import OpenAITestServer

    results = []
    rng = random.Random(5)
    env = {**os.environ, "OPENAI_API_KEY": "bench-not-a-secret"}
    with OpenAITestServer(reply=server_reply, delay=delay) as server:
        overrides = [
            "--set",
            f"models.teacher.base_url={server.url}",
            "--set",
            "models.teacher.model=tiny",
        ]
        for attempt in range(kills):
            before = server.requests
            spawned = time.monotonic()
            victim = _daemon(project, "1", overrides, env, log)
            watch = PeakRss(victim, limit_mb)
            # Kill after a few requests of the new round: mid-generate, -respond or -critique.
            wanted = before + rng.randint(3, 40)
            if not _wait(_reached(server, wanted, victim), 900):
                raise RuntimeError("the daemon never reached the server")
            if victim.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited ({victim.returncode}, over the RSS limit: {watch.killed}) "
                    f"before the kill; see {log}"
                )
            fresh_first = server.arrivals[before] - spawned
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed_at = server.requests
            time.sleep(0.2)  # requests in flight at the kill have arrived by now
            seen = server.requests
            started = time.monotonic()
            resumed = _daemon(project, "0", overrides, env, log)
            watch_resumed = PeakRss(resumed, limit_mb)
            code = resumed.wait(timeout=900)
            finished = time.monotonic()
            if code != 0:
                raise RuntimeError(
                    f"the resumed daemon exited {code} (over the RSS limit: "
                    f"{watch_resumed.killed}); see {log}"
                )
            first = server.arrivals[seen] if server.requests > seen else None
            results.append(
                {
                    "attempt": attempt + 1,
                    "fresh_first_request_s": fresh_first,
                    "killed_after": killed_at - before,
                    "first_request_s": (first - started) if first is not None else float("nan"),
                    "round_done_s": finished - started,
                    "requests_after": server.requests - seen,
                    "peak_rss_mb": max(watch.peak, watch_resumed.peak),
                }
            )
    return results


def _reached(server: Any, wanted: int, process: subprocess.Popen) -> Any:
    return lambda: server.requests >= wanted or process.poll() is not None


def _daemon(project: Path, rounds: str, overrides: list[str], env: dict[str, str], log: Path):
    with log.open("ab") as out:
        return subprocess.Popen(
            cli_command("run", "--project", str(project), "--rounds", rounds, *overrides),
            cwd=str(ROOT),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# --- phases as child processes ----------------------------------------------------------
def rss_watchdog(limit_mb: float) -> None:
    """Stop this process when its RSS passes `limit_mb` (a shared machine must not swap)."""
    process = psutil.Process()

    def watch() -> None:
        while True:
            rss = process.memory_info().rss / 2**20
            if rss > limit_mb:
                sys.stderr.write(f"RSS {rss:.0f} MiB is over --rss-limit {limit_mb:.0f}: stopped\n")
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def run_phase(args: argparse.Namespace) -> Any:
    rss_watchdog(args.rss_limit)
    project = Path(args.project) if args.project else None
    if args.phase == "build":
        return build_pool(args)
    assert project is not None
    if args.phase == "warm":
        return warm_indexes(project)
    if args.phase == "reference":
        return reference_check(project, args.reference, args.seed, cache_dir(args))
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    result = run_rounds(project, args.rounds)
    if profiler:
        profiler.disable()
        for order, count in (("cumulative", 40), ("tottime", 25)):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(count)
            sys.stderr.write(out.getvalue())
    return result


def child(args: argparse.Namespace, phase: str, project: Path | None = None) -> Any:
    """Run one phase of this script in a fresh process; its JSON answer (None if it failed)."""
    argv = [sys.executable, __file__, "--phase", phase, *args.passthrough]
    if project is not None:
        argv += ["--project", str(project)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        note(f"phase {phase} failed with exit code {done.returncode} (3: over --rss-limit)")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report -----------------------------------------------------------------------------
def report(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    built = figures["built"]
    print(f"\n== bench/daemon.py: {args.examples:,} accepted examples, {args.rounds} rounds ==")
    sample = built["import_sample"]
    print(
        f"pool build (store API, cached)  {built['build_s']:8.1f} s, pool.db {built['pool_mb']:.0f} MiB; "
        f"{built['seeds']:,} seeds + {built['machine']['accepted']:,} machine accepted over "
        f"{built['history_rounds']:,} rounds"
    )
    print(
        f"seed importer                   {sample['rows_per_s']:8.0f} rows/s on {sample['rows']:,} rows "
        f"(≈{args.examples / sample['rows_per_s']:.0f} s for {args.examples:,})"
    )
    for key, label in (
        ("first_open", "indexes, first opening"),
        ("warm", "indexes, opening again"),
    ):
        opened = built.get(key) if key == "first_open" else figures.get(key, {})
        if opened and "seconds" in opened:
            print(f"{label:<32}{opened['seconds']:8.2f} s, RSS {opened['rss_mb']:.0f} MiB")
        elif opened is None or (key == "first_open" and opened):
            print(f"{label:<32}failed (over --rss-limit?)")
    if "rounds" in figures:
        _report_rounds(figures["rounds"], figures["checkpoints"])
    if "status" in figures:
        _report_status(figures["status"])
    if figures.get("resumes"):
        _report_resumes(figures["resumes"])
    if figures.get("reference"):
        _report_reference(figures["reference"])


def _report_rounds(rounds: dict[str, Any], ckpt: dict[str, Any]) -> None:
    orch, rss = rounds["orch"], rounds["rss"]
    rest = orch[1:] or orch
    print(
        f"round 1 wall / model / orch     {rounds['wall'][0]:8.2f} / {rounds['model'][0]:.2f} / {orch[0]:.2f} s"
    )
    print(f"rounds 2.. orch median / max    {statistics.median(rest):8.2f} / {max(rest):.2f} s")
    print(
        f"rounds 2.. wall median          {statistics.median(rounds['wall'][1:] or rounds['wall']):8.2f} s"
    )
    print(f"model requests (all rounds)     {rounds['requests']:8d}")
    nodes = sorted(rounds["nodes"].items(), key=lambda kv: -statistics.median(kv[1][1:] or kv[1]))
    per_node = ", ".join(f"{k} {1000 * statistics.median(v[1:] or v):.0f}" for k, v in nodes)
    print(f"orch per node, median ms (r2..) {per_node}")
    print("node orch, round 1 (s)          " + ", ".join(f"{k} {v[0]:.2f}" for k, v in nodes))
    print(
        f"RSS before r1/after r1/last/max {rss[0]:5.0f} / {rss[1]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} MiB, "
        f"{slope(rss[2:]) * 1024:+.0f} KiB/round over rounds 2..{len(rss) - 1}"
    )
    print(f"RSS per round (MiB)             {' '.join(f'{r:.0f}' for r in rss[1:])}")
    print(
        f"checkpoints.db + wal            {ckpt['db_mb']:8.2f} + {ckpt['wal_mb']:.2f} MiB, "
        f"{len(ckpt['threads'])} threads ({ckpt['threads'][0]}..{ckpt['threads'][-1]}), "
        f"{ckpt['checkpoints']} checkpoints, {ckpt['writes']} writes"
    )


def _report_status(status: dict[str, Any]) -> None:
    for key, label in (
        ("ms", "status --json"),
        ("ms_bytecode", "status --json, bytecode cache"),
        ("ms_fast", "same, cli.fast_status"),
    ):
        if key not in status:
            continue
        print(
            f"{label:<32}median {statistics.median(status[key]):.0f} ms, "
            f"max {max(status[key]):.0f} ms over {len(status[key])} runs"
        )
    print(f"{'python -c pass':<32}median {statistics.median(status['python_ms']):.0f} ms")


def _report_resumes(resumes: list[dict[str, float]]) -> None:
    for r in resumes:
        print(
            f"start #{r['attempt']}: fresh first request {r['fresh_first_request_s']:6.2f} s; "
            f"killed after {r['killed_after']:3d} req, resumed first request "
            f"{r['first_request_s']:6.2f} s, round done {r['round_done_s']:6.2f} s, "
            f"{r['requests_after']} requests; daemon peak RSS {r['peak_rss_mb']:.0f} MiB"
        )
    if resumes:
        for key, label in (
            ("fresh_first_request_s", "fresh start → first request"),
            ("first_request_s", "resume → first request"),
            ("round_done_s", "resume → round done"),
        ):
            values = [r[key] for r in resumes]
            print(f"{label:<32}median {statistics.median(values):.2f} s, max {max(values):.2f} s")


def _report_reference(check: dict[str, Any]) -> None:
    ref = check["reference"]
    print(
        f"selector vs exhaustive reference on {check['candidates']} planted candidates "
        f"(pool {ref['pool']:,}; reference computed in {ref['seconds']:.0f} s):"
    )
    for step, c in compare(check).items():
        print(
            f"  {step:<12} agree {c['agree']}/{check['candidates']}, rejects selector "
            f"{c['selector_rejects']} / reference {c['reference_rejects']}, "
            f"missed {len(c['missed'])}, extra {len(c['extra'])}, select {c['seconds']:.2f} s"
        )
        for kind in ("missed", "extra"):
            for eid, evidence in list(c[kind].items())[:5]:
                print(f"      {kind} {eid}: {evidence}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--examples", type=int, default=100_000, help="accepted examples in the pool")
    add("--history", type=int, default=None, help="finished rounds before the run (default N/500)")
    add("--seed", type=int, default=0, help="seed of the synthetic pool and candidates")
    add("--rounds", type=int, default=20, help="in-process rounds")
    add("--kills", type=int, default=3, help="kill-and-resume repetitions (0 skips)")
    add("--delay", type=float, default=0.02, help="loopback server seconds per answer")
    add("--status-runs", type=int, default=7, help="runs of `status --json` timed")
    add("--reference", type=int, default=200, help="planted candidates checked (0 skips)")
    add("--import-sample", type=int, default=100_000, help="rows the seed importer is timed on")
    add("--rss-limit", type=float, default=4096, help="MiB at which a phase is stopped")
    add("--build-only", action="store_true", help="build and cache the pool, measure nothing")
    add(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to measure, of {','.join(PARTS)} (default all)",
    )
    add("--profile", action="store_true", help="cProfile the in-process rounds (to stderr)")
    add("--keep", action="store_true", help="keep the working copy under bench/out/daemon/")
    add("--phase", choices=["build", "warm", "rounds", "reference"], help=argparse.SUPPRESS)
    add("--project", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.history = args.history or max(1, args.examples // 500)
    args.only = set(args.only.split(","))
    if not args.only <= set(PARTS):
        parser.error(f"--only takes {','.join(PARTS)}")
    args.passthrough = [
        f"--examples={args.examples}",
        f"--history={args.history}",
        f"--seed={args.seed}",
        f"--rounds={args.rounds}",
        f"--reference={args.reference}",
        f"--import-sample={args.import_sample}",
        f"--rss-limit={args.rss_limit}",
        *(["--profile"] if args.profile else []),
    ]
    return args


def prepare_pool(args: argparse.Namespace) -> dict[str, Any]:
    """The cached pool (built if missing) whose indexes a first start has already opened."""
    cache = cache_dir(args)
    if not (cache / "build.json").exists():
        note(f"building a pool of {args.examples:,} examples in {cache} ...")
        if child(args, "build") is None:
            raise SystemExit("the pool build failed")
    built = json.loads((cache / "build.json").read_text())
    if args.build_only:
        raise SystemExit(f"built: {json.dumps(built)}")
    if "seconds" not in built.get("first_open", {}):
        # Whatever a first start writes beside the pool (persistent indexes) is cached too.
        note("opening the selector indexes for the first time on this pool ...")
        built["first_open"] = child(args, "warm", cache / "proj") or {"failed": True}
        (cache / "build.json").write_text(json.dumps(built, indent=2))
    return built


PARTS = ("rounds", "status", "resume", "reference")


def measure(args: argparse.Namespace, work: Path, figures: dict[str, Any]) -> None:
    cache = cache_dir(args)
    project = work / "proj"
    if "rounds" in args.only:
        note("opening the selector indexes on a copy of the pool ...")
        figures["warm"] = child(args, "warm", project)
        note(f"running {args.rounds} rounds in process ...")
        figures["rounds"] = child(args, "rounds", project)
        if figures["rounds"] is None:
            raise SystemExit("the rounds failed; nothing more is measured")
        figures["checkpoints"] = checkpoint_figures(project)
    if "status" in args.only:
        note("timing status --json ...")
        figures["status"] = time_status(project, args.status_runs)
    if "resume" in args.only and args.kills:
        note(f"starting, killing and resuming the daemon {args.kills} times ...")
        figures["resumes"] = resume_after_kills(
            project, args.kills, args.delay, work / "bench-daemon.log", args.rss_limit
        )
    if "reference" in args.only and args.reference:
        note(f"checking the selector on {args.reference} planted candidates ...")
        copy_project(cache / "proj", work / "reference")
        figures["reference"] = child(args, "reference", work / "reference")


def main() -> None:
    args = parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"built": prepare_pool(args)}
    work = OUT / f"work-{cache_dir(args).name}"
    copy_project(cache_dir(args) / "proj", work / "proj")
    try:
        measure(args, work, figures)
        (work / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
        report(args, figures)
    finally:
        if not args.keep:
            for name in ("proj", "reference"):
                shutil.rmtree(work / name, ignore_errors=True)


if __name__ == "__main__":
    main()
