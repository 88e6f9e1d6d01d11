"""The store: idempotent writes, lineage, demos, rounds, versions, cache, consistent reads."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from evoinstruct.store import open_store
from evoinstruct.store.db import migrations
from evoinstruct.store.errors import InputError
from evoinstruct.store.ids import example_id
from evoinstruct.store.records import ExampleDraft, Rejection, Score


def test_open_store_uses_wal_and_migrations(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = [r["name"] for r in store.db["_sqlite_migrations"].rows]
    # In order, every one registered (modules beside db.py register theirs too).
    assert applied[:2] == ["m001_initial", "m002_eval_suites"]
    assert applied == sorted(applied) and not migrations.pending(store.db)
    store.close()
    again = open_store(tmp_path / "p.db")  # re-opening applies nothing twice
    assert [r["name"] for r in again.db["_sqlite_migrations"].rows] == applied
    again.close()


def test_content_ids_are_stable_and_normalized() -> None:
    assert example_id("Hello  World ") == example_id("hello world")
    assert example_id("写一首诗") == example_id(" 写一首诗 ")
    assert example_id("a", "b") == example_id("a\n\nb")
    assert example_id("a") != example_id("b")
    assert example_id("a", output="x", source="rewritten") != example_id(
        "a", output="y", source="rewritten"
    )


def test_add_candidates_is_idempotent(store) -> None:
    drafts = [
        ExampleDraft("Write a poem."),
        ExampleDraft("写一首诗。", output="春天", source="seed"),
    ]
    first = store.add_candidates(drafts, round=1)
    second = store.add_candidates(drafts, round=2)
    assert first.inserted == 2 and second.inserted == 0 and second.duplicates == 2
    assert first.ids == second.ids
    seed = store.get(first.ids[1])
    assert seed.status == "accepted" and seed.round == 1
    assert store.get(first.ids[0]).status == "candidate"


def test_scores_and_rejections_upsert_once(store) -> None:
    ids = store.add_candidates([ExampleDraft("Explain gravity.")], round=1).ids
    # Two failed calls of one stage with no example yet are two rows, not one.
    store.record_rejections(
        [Rejection("generate", "model_failure:timeout", raw_output=f"call {i}") for i in range(2)],
        round=1,
    )
    assert len(store.rejections(reason="model_failure:timeout")) == 2
    for _ in range(2):
        store.record_scores([Score(ids[0], "judge", "accuracy", 4.5, "4.5\nGood.")], round=1)
        store.record_rejections(
            [Rejection("select", "too_similar", {"rouge": 0.8}, example_id=ids[0])], round=1
        )
    store.record_scores([Score(ids[0], "judge", "accuracy", 3.0, "3")], round=2)
    assert [s.value for s in store.scores_for(ids)[ids[0]]] == [3.0]
    rejections = store.rejections(example_id=ids[0])
    assert len(rejections) == 1 and rejections[0]["evidence"] == {"rouge": 0.8}


def test_lineage_walks_ancestors_and_descendants(store) -> None:
    seed = store.add_candidates([ExampleDraft("Plan a trip.", output="Go.", source="seed")], 0).ids[
        0
    ]
    child = store.add_candidates(
        [
            ExampleDraft(
                "Plan a trip to Kyoto in autumn.",
                source="evolved",
                parent_id=seed,
                operation="concretize",
                depth=1,
            )
        ],
        1,
    ).ids[0]
    grandchild = store.add_candidates(
        [
            ExampleDraft(
                "Plan a 3-day trip to Kyoto in autumn under $500.",
                source="evolved",
                parent_id=child,
                operation="add_constraints",
                depth=2,
            )
        ],
        2,
    ).ids[0]
    store.record_rejections([Rejection("evolve", "no_information_gain", example_id=grandchild)], 2)
    tree = store.lineage(grandchild)
    assert [a["id"] for a in tree["ancestors"]] == [child, seed]
    assert tree["example"]["rejections"][0]["reason"] == "no_information_gain"
    down = store.lineage(seed)["descendants"]
    assert down[0]["id"] == child and down[0]["children"][0]["id"] == grandchild
    with pytest.raises(InputError):
        store.lineage("nope")


def test_sample_demos_mixes_human_and_machine(store) -> None:
    seeds = [ExampleDraft(f"Seed task {i}", output="ok", source="seed") for i in range(10)]
    machine = [ExampleDraft(f"Machine task {i}", output="ok") for i in range(5)]
    store.add_candidates(seeds, 0)
    # No machine examples yet: human seeds fill all eight places (Self-Instruct's 8 demos).
    assert [d.source for d in store.sample_demos(6, 2, random.Random(0))] == ["seed"] * 8
    ids = store.add_candidates(machine, 1).ids
    store.set_status(ids, "accepted")
    demos = store.sample_demos(6, 2, random.Random(0))
    assert (
        sum(d.source == "seed" for d in demos) == 6 and sum(d.source != "seed" for d in demos) == 2
    )
    assert [d.id for d in demos] == [d.id for d in store.sample_demos(6, 2, random.Random(0))]


@pytest.mark.parametrize("probing", [False, True])
def test_sampling_is_uniform_over_matching_rows_by_scan_or_probe(
    store, monkeypatch, probing: bool
) -> None:
    import evoinstruct.store.pool as pool

    if probing:  # the path pools past SAMPLE_SCAN_ROWS take, on a pool this test can hold
        monkeypatch.setattr(pool, "SAMPLE_SCAN_ROWS", 0)
    ids = store.add_candidates([ExampleDraft(f"Task {i}", output="ok") for i in range(90)], 1).ids
    accepted = ids[::3]  # 30 of 90 rows match
    store.set_status(accepted, "accepted")
    rng = random.Random(7)
    hits = dict.fromkeys(accepted, 0)
    for _ in range(600):
        drawn = store.sample_accepted(5, rng)
        assert len(drawn) == 5 == len(set(drawn)) and set(drawn) <= set(accepted)
        for i in drawn:
            hits[i] += 1
    # 3,000 draws over 30 rows: 100 each expected; a skew toward rowid order would show.
    assert min(hits.values()) > 60 and max(hits.values()) < 140
    assert store.sample_accepted(5, random.Random(1)) == store.sample_accepted(5, random.Random(1))
    assert sorted(store.sample_accepted(50, random.Random(2))) == sorted(accepted)  # all of them
    # More wanted than one statement may hold variables for (32,766 by default): all 30.
    assert len(store.sample_accepted(40_000, random.Random(3))) == 30


def test_probing_gives_way_to_a_read_when_matches_are_rare(store, monkeypatch) -> None:
    import evoinstruct.store.pool as pool

    monkeypatch.setattr(pool, "SAMPLE_SCAN_ROWS", 0)
    ids = store.add_candidates([ExampleDraft(f"Job {i}", output="ok") for i in range(400)], 1).ids
    store.set_status([ids[123]], "accepted")  # one row in 400: probing would rarely find it
    assert store.sample_accepted(1, random.Random(0)) == [ids[123]]
    assert store.sample_evolvable(3, 4, random.Random(0)) == [ids[123]]


def test_tag_counts_count_the_accepted_pool_only(store) -> None:
    drafts = [
        ExampleDraft("Write a poem.", output="ok", meta={"tags": ["poem", "creat writ"]}),
        ExampleDraft("Write a haiku.", output="ok", meta={"tags": ["poem"]}),
        ExampleDraft("写一首诗。", output="好", meta={"tags": ["诗歌"]}),
        ExampleDraft("Odd tags.", output="ok", meta={"tags": "poem"}),  # not a list: no tags
        ExampleDraft("Untagged.", output="ok"),
        ExampleDraft("Still a candidate.", output="ok", meta={"tags": ["poem"]}),
    ]
    ids = store.add_candidates(drafts, 1).ids
    store.set_status(ids[:5], "accepted")
    assert store.tag_counts() == {"poem": 2, "creat writ": 1, "诗歌": 1}
    store.update_meta(ids[1], tags=["poem", "haiku"])  # tags the critic writes later count too
    assert store.tag_counts()["haiku"] == 1
    assert store.tag_counts("candidate") == {"poem": 1}


def test_rounds_versions_and_rollback(store) -> None:
    store.start_round(1, {"loop": {"generate_calls": 2}})
    store.start_round(1, {"other": True})  # a resume keeps the first record
    store.finish_round(1, {"accepted": 3})
    assert (
        store.round(1)["config"] == {"loop": {"generate_calls": 2}}
        and store.round(1)["counts"]["accepted"] == 3
    )
    for v in ("v1", "v2"):
        store.register_model_version(
            v, base="tiny", method="lora", path=f"/m/{v}", round=1, metrics={}, config={}
        )
    assert store.next_model_version() == "v3"
    store.set_promoted("v1", "first")
    store.set_promoted("v2", "better loss")
    store.set_promoted("v2", "a re-run of the promote node")  # already active: no second entry
    assert store.active_model()["version"] == "v2"
    assert store.rollback() == "v1" and store.active_model()["version"] == "v1"
    assert store.rollback() is None and store.active_model() is None
    with pytest.raises(InputError):
        store.set_promoted("v9", "nope")


def test_response_cache(store) -> None:
    assert store.cache_get("k") is None
    store.cache_put("k", {"text": "答案"})
    assert store.cache_get("k") == {"text": "答案"}


def test_readers_see_consistent_counts_while_a_writer_writes(tmp_path: Path) -> None:
    """Each writer transaction adds 10 candidates with 10 rejections and accepts the 10
    before them: a consistent snapshot agrees across its separate count queries."""
    path = tmp_path / "pool.db"
    open_store(path).close()
    stop = threading.Event()
    errors: list[str] = []

    def write() -> None:
        with open_store(path) as writer:
            pending: list[str] = []
            for batch in range(60):
                with writer.transaction():
                    ids = writer.add_candidates(
                        [ExampleDraft(f"task {batch}-{i}") for i in range(10)], 1
                    ).ids
                    writer.set_status(pending, "accepted")
                    writer.record_rejections(
                        [Rejection("select", "x", example_id=i) for i in ids], 1
                    )
                pending = ids
        stop.set()

    def read() -> None:
        with open_store(path) as reader:
            while not stop.is_set():
                stats = reader.pool_stats()
                by_source = sum(stats["by_source"].values())
                if by_source != stats["total"] or stats["rejections"] != stats["total"]:
                    errors.append(repr(stats))

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    with open_store(path) as s:
        assert s.pool_stats()["total"] == 600
