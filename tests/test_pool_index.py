"""The selector's persistent pool index decides exactly as the in-memory indexes rebuilt from the store.

Real SQLite in tmp_path throughout. The reference is always
`SelectorIndexes.build(store.iter_examples(status="accepted"))`: what a
daemon built at start before this index existed. Corpora are random,
English and Chinese, with planted exact copies (case, spacing, punctuation),
near copies (token edits) and repeated instructions (ROUGE-L ties).
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from evoinstruct.agents.selection.dedup import DedupIndex
from evoinstruct.agents.selection.novelty import novelty_exhaustive
from evoinstruct.agents.selection.pool_dedup import check_lsh, file_candidates
from evoinstruct.agents.selection.pool_index import PoolIndex
from evoinstruct.agents.selection.pool_indexes import open_pool_indexes
from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes, field_text, select
from evoinstruct.agents.text import tokenize
from evoinstruct.store import Store, open_store
from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.selector_index import sidecar_path

EN = (
    "write explain list compare summarize translate a the poem story about river city "
    "market garden train budget galaxy recipe protein for kids students in five ways why how"
).split()
ZH = list("请写一首关于春天的诗解释为什么天空是蓝色列出五种方法比较河流市场花园火车预算")
CONFIG = SelectorConfig(steps=["exact_dedup", "near_dedup", "novelty"], constraints="off")


def _fresh(rng: random.Random) -> str:
    n = rng.randint(4, 18)
    kind = rng.random()
    if kind < 0.45:
        return " ".join(rng.choice(EN) for _ in range(n)).capitalize() + "."
    if kind < 0.9:
        return "".join(rng.choice(ZH) for _ in range(n)) + "。"
    return " ".join(rng.choice(EN + ZH) for _ in range(n))


def _copy(rng: random.Random, text: str) -> str:
    """An exact copy up to normalization, or a near copy with one to three token edits."""
    if rng.random() < 0.3:
        return rng.choice([text.upper(), f"  {text}  ", text.rstrip(".。") + "!", text])
    tokens = tokenize(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(tokens))
        op = rng.randrange(3)
        if op == 0 and len(tokens) > 2:
            tokens.pop(i)
        elif op == 1:
            tokens[i] = rng.choice(EN + ZH)
        else:
            tokens.insert(i, rng.choice(EN + ZH))
    return " ".join(tokens)


def _texts(rng: random.Random, n: int, earlier: list[str]) -> list[str]:
    out: list[str] = []
    for _ in range(n):
        pool = earlier + out
        out.append(_copy(rng, rng.choice(pool)) if pool and rng.random() < 0.4 else _fresh(rng))
    return out


def _grow(store: Store, rng: random.Random, texts: list[str], round: int) -> list[str]:
    """Insert texts as candidates (some twice, with another answer: ties) and accept them
    in a shuffled order, so acceptance order differs from the store's rowid order."""
    drafts = [ExampleDraft(t, output=f"answer {round}-{i}") for i, t in enumerate(texts)]
    drafts += [ExampleDraft(t, output="another answer") for t in rng.sample(texts, len(texts) // 8)]
    ids = store.add_candidates(drafts, round=round).ids
    rng.shuffle(ids)
    for start in range(0, len(ids), 7):
        store.set_status(ids[start : start + 7], "accepted")
    return ids


def _memory(store: Store, config: SelectorConfig = CONFIG) -> SelectorIndexes:
    return SelectorIndexes.build(store.iter_examples(status="accepted"), config)


def _assert_same_answers(store: Store, persistent: SelectorIndexes, probes: list[str]) -> None:
    memory = _memory(store)
    pool_ids = [e.id for e in store.iter_examples(status="accepted", limit=20)]
    for k, text in enumerate(probes):
        exclude = pool_ids[k % len(pool_ids)] if pool_ids and k % 3 == 0 else None
        assert persistent.dedup.exact(text, exclude) == memory.dedup.exact(text, exclude)
        assert persistent.dedup.near(text, exclude) == memory.dedup.near(text, exclude)
        assert persistent.novelty.best_match(text, exclude) == memory.novelty.best_match(
            text, exclude
        )
    items = [(f"probe-{k}", t) for k, t in enumerate(probes)]
    assert persistent.novelty.filter(items, commit=False) == memory.novelty.filter(
        items, commit=False
    )


async def _assert_same_selection(store: Store, persistent: SelectorIndexes, round: int) -> None:
    """select() over fresh candidates plus re-run pool examples: same accepted, same evidence."""
    candidates = list(store.iter_examples(status="candidate", round=round))
    candidates += list(store.iter_examples(status="accepted", limit=15))
    mine = await select(candidates, {}, persistent, CONFIG, commit=False)
    reference = await select(candidates, {}, _memory(store), CONFIG, commit=False)
    assert mine.accepted == reference.accepted
    assert [(r.example_id, r.reason, r.evidence) for r in mine.rejections] == [
        (r.example_id, r.reason, r.evidence) for r in reference.rejections
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_decisions_match_the_in_memory_indexes_as_the_pool_grows_and_shrinks(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    store = open_store(tmp_path / "pool.db")
    texts = _texts(rng, 120, [])
    _grow(store, rng, texts, round=0)
    persistent = open_pool_indexes(store, CONFIG)
    index: PoolIndex = persistent.dedup.index  # type: ignore[attr-defined]
    ranks = dict(index.file.conn.execute("SELECT token, rank FROM vocab"))
    first_size = len(index)
    for round in (1, 2, 3):
        texts += _texts(rng, 60, texts)
        _grow(store, rng, texts[-60:], round=round)
        if round == 2:  # some leave the pool: rejected, superseded
            accepted = [e.id for e in store.iter_examples(status="accepted")]
            store.set_status(rng.sample(accepted, 25), "rejected")
            store.set_status(rng.sample(accepted, 10), "superseded")
        probes = _texts(rng, 40, texts)
        store.add_candidates([ExampleDraft(t, output="new") for t in probes], round=10 + round)
        _assert_same_answers(store, persistent, probes)
        await _assert_same_selection(store, persistent, 10 + round)
    # The pool grew past twice its size and was never re-ranked: every token keeps its rank.
    assert len(index) >= 2 * first_size
    now = dict(index.file.conn.execute("SELECT token, rank FROM vocab"))
    assert all(now[token] == rank for token, rank in ranks.items())
    assert index.work["rebuilds"] == 1  # only the first open built the file
    index.close()
    store.close()


def _pool(tmp_path: Path, seed: int = 5, n: int = 150) -> tuple[Store, list[str]]:
    rng = random.Random(seed)
    store = open_store(tmp_path / "pool.db")
    texts = _texts(rng, n, [])
    _grow(store, rng, texts, round=0)
    return store, texts


def test_reopening_over_the_same_file_rebuilds_nothing(tmp_path: Path) -> None:
    store, texts = _pool(tmp_path)
    first = PoolIndex(store, CONFIG)
    assert first.work["rebuilds"] == 1 and first.work["indexed"] == len(first)
    first.close()
    again = PoolIndex(store, CONFIG)
    assert again.work == {}  # nothing tokenized, hashed or posted
    assert again.rebuilt_because is None
    again.close()
    persistent = open_pool_indexes(store, CONFIG)
    _assert_same_answers(store, persistent, _texts(random.Random(9), 30, texts))
    store.close()


def test_a_new_process_opens_the_index_without_rebuilding(tmp_path: Path) -> None:
    store, _ = _pool(tmp_path, n=60)
    PoolIndex(store, CONFIG).close()
    store.close()
    code = (
        "import sys\n"
        "from evoinstruct.store import open_store\n"
        "from evoinstruct.agents.selection.pool_index import PoolIndex\n"
        "from evoinstruct.agents.selector import SelectorConfig\n"
        "store = open_store(sys.argv[1])\n"
        "index = PoolIndex(store, SelectorConfig())\n"
        "print(sum(index.work.values()), len(index))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pool.db")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out[0] == "0" and int(out[1]) > 0


def test_changes_made_while_the_index_is_closed_are_caught_up_not_rebuilt(
    tmp_path: Path,
) -> None:
    store, texts = _pool(tmp_path)
    PoolIndex(store, CONFIG).close()
    rng = random.Random(11)
    _grow(store, rng, _texts(rng, 30, texts), round=1)  # accepted with no index open
    gone = rng.sample([e.id for e in store.iter_examples(status="accepted")], 12)
    store.set_status(gone, "rejected")
    reopened = PoolIndex(store, CONFIG)
    assert reopened.work["rebuilds"] == 0
    assert 0 < reopened.work["indexed"] <= 30 + 30 // 8
    assert reopened.work["removed"] == sum(1 for i in gone if i in _old_ids(store, gone))
    assert len(reopened) == store.count_examples(status="accepted")
    reopened.close()
    persistent = open_pool_indexes(store, CONFIG)
    _assert_same_answers(store, persistent, _texts(rng, 30, texts))
    store.close()


def _old_ids(store: Store, ids: list[str]) -> set[str]:
    """Those of `ids` accepted before round 1 (the ones the closed index held)."""
    return {e.id for e in store.get_many(ids) if e.round == 0}


def test_a_crash_inside_the_index_update_is_caught_up_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, texts = _pool(tmp_path)
    index = PoolIndex(store, CONFIG)
    before = len(index)
    rng = random.Random(12)
    _grow(store, rng, _texts(rng, 20, texts), round=1)  # accepted: logged, not yet indexed
    calls = 0
    real_add = PoolIndex._add

    def dies_on_the_fifth(self: PoolIndex, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt  # the process stops mid-transaction
        real_add(self, *args)

    monkeypatch.setattr(PoolIndex, "_add", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        index.sync()
    monkeypatch.undo()
    assert len(index) == before  # the four applied rows were rolled back with the watermark
    index.close()
    after = PoolIndex(store, CONFIG)
    assert after.work["rebuilds"] == 0
    assert len(after) == store.count_examples(status="accepted")
    after.close()
    _assert_same_answers(store, open_pool_indexes(store, CONFIG), _texts(rng, 30, texts))
    store.close()


def test_a_process_killed_after_the_store_write_leaves_the_log_to_catch_up(
    tmp_path: Path,
) -> None:
    store, _ = _pool(tmp_path, n=80)
    PoolIndex(store, CONFIG).close()
    new = store.add_candidates([ExampleDraft("写一个关于火车和花园的故事", output="好")], 1).ids
    store.close()
    code = (
        "import os, sys\n"
        "from evoinstruct.store import open_store\n"
        "from evoinstruct.agents.selection.pool_index import PoolIndex\n"
        "from evoinstruct.agents.selector import SelectorConfig\n"
        "store = open_store(sys.argv[1])\n"
        "index = PoolIndex(store, SelectorConfig(steps=['exact_dedup'], constraints='off'))\n"
        "store.set_status([sys.argv[2]], 'accepted')\n"
        "os._exit(9)  # killed before the index saw the change\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pool.db"), new[0]])
    assert done.returncode == 9
    store = open_store(tmp_path / "pool.db")
    index = PoolIndex(store, CONFIG)
    assert index.work == {"indexed": 1} and index.has(new[0])
    index.close()
    store.close()


def test_leaving_accepted_removes_every_row_of_the_example(tmp_path: Path) -> None:
    store = open_store(tmp_path / "pool.db")
    poem = "请写一首关于春天的诗，描写花开、细雨和燕子归来的景象，要求押韵并且不少于八行。"
    story = (
        "Write a short story about a lighthouse keeper who finds a message in a bottle "
        "and decides to sail across the ocean to find the person who wrote it."
    )
    ids = store.add_candidates(
        [ExampleDraft(poem, output="诗"), ExampleDraft(story, output="story")], round=0
    ).ids
    store.set_status(ids, "accepted")
    persistent = open_pool_indexes(store, CONFIG)
    index: PoolIndex = persistent.dedup.index  # type: ignore[attr-defined]
    near_poem = poem.replace("八行", "十行")
    assert persistent.dedup.exact(poem.upper()) == ids[0]
    assert persistent.dedup.near(near_poem)[0] == ids[0]  # type: ignore[index]
    assert persistent.novelty.best_match(story + " Please.")[1] == ids[1]  # type: ignore[index]

    store.set_status([ids[0]], "rejected")
    store.add_rewrites([ExampleDraft(story + " Keep it short.", parent_id=ids[1])], round=1)
    assert persistent.dedup.exact(poem) is None
    assert persistent.dedup.near(near_poem) is None
    assert persistent.novelty.best_match(story + " Please.") is None
    conn = index.file.conn
    for table in ("items", "toks", "sigs", "bands", "postings"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert conn.execute("SELECT count(*) FROM vocab WHERE df != 0").fetchone()[0] == 0
    index.close()
    store.close()


def test_changing_the_index_settings_rebuilds_once(tmp_path: Path) -> None:
    store, _ = _pool(tmp_path, n=80)
    PoolIndex(store, CONFIG).close()
    shingles = CONFIG.model_copy(
        update={"dedup": CONFIG.dedup.model_copy(update={"shingle_size": 2})}
    )
    changed = PoolIndex(store, shingles)
    assert changed.work["rebuilds"] == 1 and changed.rebuilt_because == "index settings changed"
    changed.close()
    assert PoolIndex(store, shingles).work == {}  # persistently: the next start reuses it
    speed_only = shingles.model_copy(
        update={"novelty": shingles.novelty.model_copy(update={"reindex_growth": 3.0})}
    )
    assert PoolIndex(store, speed_only).work == {}
    fields = shingles.model_copy(update={"novelty_fields": ["instruction", "input"]})
    assert PoolIndex(store, fields).work["rebuilds"] == 1
    store.close()


def test_an_index_file_of_another_pool_is_rebuilt(tmp_path: Path) -> None:
    store, _ = _pool(tmp_path, n=40)
    PoolIndex(store, CONFIG).close()
    other = open_store(tmp_path / "other" / "pool.db")
    other.add_candidates([ExampleDraft("写一首诗", output="诗", source="seed")], round=0)
    sidecar_path(other.path).write_bytes(sidecar_path(store.path).read_bytes())
    moved = PoolIndex(other, CONFIG)
    assert moved.rebuilt_because == "index file of another pool" and len(moved) == 1
    moved.close()
    other.close()
    store.close()


async def test_commit_shows_accepted_examples_before_the_store_records_them(
    tmp_path: Path,
) -> None:
    store, _ = _pool(tmp_path, n=40)
    persistent = open_pool_indexes(store, CONFIG)
    index: PoolIndex = persistent.dedup.index  # type: ignore[attr-defined]
    fresh = ["Explain why the galaxy budget is a garden for students.", "比较火车和河流的预算。"]
    ids = store.add_candidates([ExampleDraft(t, output="x") for t in fresh], round=1).ids
    batch = store.get_many(ids)
    kept = await select(batch, {}, persistent, CONFIG, commit=False)
    assert kept.accepted == ids and len(index.overlay_dedup) == 0
    await select(batch, {}, persistent, CONFIG, commit=True)
    again = await select(batch, {}, persistent, CONFIG, commit=False)
    assert again.accepted == ids  # a candidate is never its own duplicate
    copies = [
        ExampleDraft(fresh[0][:-1] + " today.", output="y"),
        ExampleDraft("比较火车和河流的预算吧。"),
    ]
    twins = store.get_many(store.add_candidates(copies, round=1).ids)
    dropped = await select(twins, {}, persistent, CONFIG, commit=False)
    assert [r.evidence["duplicate_of"] for r in dropped.rejections] == ids
    store.set_status(ids, "accepted")
    persistent.dedup.exact("anything")  # the next query reads the log: the file answers now
    assert len(index.overlay_dedup) == 0 and len(index.overlay_novelty) == 0
    assert all(index.has(i) for i in ids)
    index.close()
    store.close()


def test_lsh_candidates_are_datasketch_candidates(tmp_path: Path) -> None:
    store, texts = _pool(tmp_path, seed=21, n=200)
    index = PoolIndex(store, CONFIG)
    accepted = list(store.iter_examples(status="accepted"))
    memory = DedupIndex.build((e.id, field_text(e, CONFIG.dedup_fields)) for e in accepted)
    probes = _texts(random.Random(22), 60, texts)
    for text in probes:
        sig = memory.signature(text)
        if sig is None:
            continue
        assert file_candidates(index, sig) == set(memory._lsh.query(memory._as_minhash(sig)))
    check = check_lsh(index, probes)
    assert check.mismatches == 0 and check.candidates > 0 and check.probes == len(probes)
    index.close()
    store.close()


def test_novelty_from_the_file_equals_the_exhaustive_rouge_score_filter(tmp_path: Path) -> None:
    store, texts = _pool(tmp_path, seed=31, n=150)
    persistent = open_pool_indexes(store, CONFIG)
    pool = [(e.id, e.instruction) for e in store.iter_examples(status="accepted")]
    candidates = [(f"c{k}", t) for k, t in enumerate(_texts(random.Random(32), 60, texts))]
    assert persistent.novelty.filter(candidates, commit=False) == novelty_exhaustive(
        pool, candidates
    )
    store.close()
