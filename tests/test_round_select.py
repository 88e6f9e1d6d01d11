"""The round's select node with the selector's pool-aware settings: IFD's top fraction, InsTag
rarity counted over the accepted pool (the store's counts reach it through selection_indexes)."""

from __future__ import annotations

import pytest
from langgraph.runtime import Runtime

from evoinstruct.graph.round import nodes
from evoinstruct.store.records import ExampleDraft, Score

TASKS = {
    "seed": "Name three rivers in Africa.",
    "best": "Prove that the square root of two is irrational.",
    "good": "Translate 'good morning' into French, German and Italian.",
    "weak": "List the primary colors of paint.",
    "weakest": "Count the vowels in the word 'banana'.",
}


@pytest.fixture
def deps(scripted_deps):
    return scripted_deps


def _candidates(deps, drafts: dict[str, ExampleDraft], n: int) -> dict[str, str]:
    """Candidates of round `n` that critique and rewrite are done with, by name."""
    ids = deps.store.add_candidates(list(drafts.values()), n).ids
    deps.store.mark_done(ids, f"critique_r{n}")
    deps.store.mark_done(ids, f"rewrite_r{n}")  # select waits for what rewrite has not finished
    return dict(zip(drafts, ids, strict=True))


async def test_ifd_top_fraction_cuts_machine_examples_and_never_a_seed(deps) -> None:
    deps.config.selector.ifd_top_fraction = 0.5
    drafts = {
        name: ExampleDraft(text, output=f"An answer to: {text}", source="seed")
        if name == "seed"
        else ExampleDraft(text, output=f"An answer to: {text}")
        for name, text in TASKS.items()
    }
    ids = _candidates(deps, drafts, 2)
    ifd = {"seed": 0.05, "best": 0.9, "good": 0.7, "weak": 0.3, "weakest": 0.2}
    deps.store.record_scores([Score(ids[k], "ifd", "ifd", v) for k, v in ifd.items()], 2)

    update = await nodes.select({"round": 2}, Runtime(context=deps))

    status = {name: deps.store.get(i).status for name, i in ids.items()}
    assert status == {
        "seed": "accepted",  # the lowest IFD of all, but a human seed is never cut
        "best": "accepted",
        "good": "accepted",
        "weak": "rejected",
        "weakest": "rejected",
    }
    (why,) = deps.store.rejections(example_id=ids["weak"])
    assert why["reason"] == "ifd_below_top_fraction"
    assert why["evidence"] == {
        "ifd": 0.3,
        "cutoff": 0.7,
        "top_fraction": 0.5,
        "kept": 2,
        "ranked": 4,
    }
    assert update["counts"]["select"]["ifd_below_top_fraction"] == 2


async def test_instag_rarity_is_counted_over_the_accepted_pool(deps) -> None:
    selector = deps.config.selector
    selector.diversity = selector.diversity.model_copy(
        update={"method": "instag", "rare_policy": "drop"}
    )
    old = deps.store.add_candidates(
        [ExampleDraft("Write a poem about rain.", output="Rain.", meta={"tags": ["poem"]})], 1
    ).ids
    deps.store.set_status(old, "accepted")
    drafts = {
        "poem": ExampleDraft(TASKS["best"], output="Proof.", meta={"tags": ["poem"]}),
        "once": ExampleDraft(TASKS["weak"], output="Red.", meta={"tags": ["colour"]}),
    }
    ids = _candidates(deps, drafts, 2)

    await nodes.select({"round": 2}, Runtime(context=deps))

    # "poem" is seen twice (the pool's once, this batch's once), so it is not rare; "colour"
    # is seen once and dropped, leaving its example no tag to add.
    assert deps.store.get(ids["poem"]).status == "accepted"
    (why,) = deps.store.rejections(example_id=ids["once"])
    assert why["reason"] == "not_diverse" and why["evidence"]["tags"] == []
