"""Exact and MinHash near-duplicate detection, incremental and rebuildable."""

from __future__ import annotations

import pytest

from evoinstruct.agents.selection.dedup import DedupConfig, DedupIndex
from evoinstruct.store.errors import ConfigError

POEM_ZH = "请写一首关于春天的诗，描写花开、细雨和燕子归来的景象，要求押韵并且不少于八行。"
POEM_ZH_NEAR = "请写一首关于春天的诗，描写花开、细雨和燕子归来的景象，要求押韵并且不少于十行。"
OTHER_ZH = "解释一下光合作用的原理，并说明植物为什么需要阳光、水和二氧化碳才能生长。"
LONG_EN = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle "
    "and decides to sail across the ocean to find the person who wrote it."
)
LONG_EN_NEAR = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle "
    "and decides to sail across the sea to find the person who wrote it."
)


def test_exact_duplicate_after_normalization() -> None:
    index = DedupIndex.build([("a", "Write a poem."), ("b", "写一首诗。")])
    assert index.exact("  WRITE a poem ") == "a"
    assert index.exact("写一首诗") == "b"
    assert index.exact("Write a song.") is None
    assert index.query("write a poem!").kind == "exact"


def test_chinese_near_duplicate_is_caught_and_other_text_is_not() -> None:
    index = DedupIndex.build([("p", POEM_ZH), ("o", OTHER_ZH)])
    match = index.near(POEM_ZH_NEAR)
    assert match is not None and match[0] == "p" and match[1] >= 0.8
    assert index.near("写一个Python函数，计算列表中所有偶数的和，并给出三个测试用例。") is None
    found = index.query(POEM_ZH_NEAR)
    assert found is not None and found.kind == "near" and found.duplicate_of == "p"


def test_english_near_duplicate() -> None:
    index = DedupIndex.build([("s", LONG_EN)])
    match = index.near(LONG_EN_NEAR)
    assert match is not None and match[0] == "s"
    assert (
        index.near("Explain the difference between a list and a tuple in Python with examples.")
        is None
    )


def test_incremental_add_remove_and_rebuild_agree() -> None:
    items = [("p", POEM_ZH), ("o", OTHER_ZH), ("s", LONG_EN)]
    grown = DedupIndex()
    assert grown.near(POEM_ZH_NEAR) is None
    for item_id, text in items:
        grown.add(item_id, text)
    grown.add("p", "ignored: the id is already indexed")
    rebuilt = DedupIndex.build(items)
    for probe in (POEM_ZH_NEAR, LONG_EN_NEAR, OTHER_ZH):
        assert grown.query(probe) == rebuilt.query(probe)
    assert len(grown) == 3 and "p" in grown
    grown.remove("p")
    assert grown.near(POEM_ZH_NEAR) is None and grown.exact(POEM_ZH) is None
    assert "p" not in grown and len(grown) == 2


def test_remove_keeps_other_exact_copy_and_exclude_skips_self() -> None:
    index = DedupIndex.build([("a", "Write a poem."), ("b", "write a poem")])
    assert index.exact("Write a poem") == "a"
    index.remove("a")
    assert index.exact("Write a poem") == "b"
    assert index.exact("Write a poem", exclude="b") is None
    assert index.near(LONG_EN) is None
    index.add("s", LONG_EN)
    assert index.near(LONG_EN, exclude="s") is None


def test_threshold_is_configurable_and_empty_text_never_near() -> None:
    strict = DedupIndex.build([("p", POEM_ZH)], DedupConfig(jaccard_threshold=0.95))
    assert strict.near(POEM_ZH_NEAR) is None
    index = DedupIndex.build([("e", "...")])
    assert index.near("!!!") is None
    assert index.signature("") is None


def test_unusable_lsh_settings_are_a_config_error() -> None:
    with pytest.raises(ConfigError):
        DedupIndex(DedupConfig(jaccard_threshold=0.95, recall_weight=0.05))
