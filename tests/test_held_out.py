"""The split between training and the suite, honoured everywhere: the evolver never draws a
held-out type or a suite-only phrasing, the trainer's guard drops any example that carries
one (whatever its source), export withholds them, and the suite's parts are what they say."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from random import Random

import pytest

from evoinstruct.agents.constraints import Constraint, dump_constraints, load_constraints
from evoinstruct.agents.constraints.phrasing import (
    LAYOUT_KEY,
    get_phrasing,
    phrasings_for,
)
from evoinstruct.agents.constraints.split import ConstraintSplit, HeldOutConfig, default_split
from evoinstruct.agents.evolver import EvolverConfig, evolve
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store import Store, open_store
from evoinstruct.store.records import Example, ExampleDraft
from evoinstruct.trainer.config import SuiteConfig, TrainerConfig
from evoinstruct.trainer.data import select_mix
from evoinstruct.trainer.suite import ensure_suite, packaged_tasks, task_item, training_guard
from tests.cli_helpers import run_cli
from tests.doubles import ScriptedModel

PARENTS = {
    "en": "I teach a class of twelve-year-olds. Explain how tides work in a way they will remember.",
    "zh": "我教一个十二岁孩子的班级。请用他们记得住的方式解释潮汐是怎样形成的。",
}
CAPITAL = Constraint("change_case:english_capital")  # held out by default
NO_COMMA = Constraint("punctuation:no_comma")


def parent(i: int, language: str, constraints: list[Constraint] = ()) -> Example:
    meta = {"constraints": dump_constraints(constraints)} if constraints else {}
    return Example(
        id=f"p{i}", instruction=PARENTS[language], output="An answer.", source="seed",
        round=0, language=language, depth=0, meta=meta,
    )  # fmt: skip


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("op", ["add_verifiable", "add_constraints"])
async def test_the_evolver_never_draws_a_held_out_type_or_a_suite_phrasing(
    language: str, op: str
) -> None:
    split = default_split()
    # Some parents come from before the split and carry a held-out type already.
    parents = [parent(i, language, [CAPITAL] if i % 3 == 0 else []) for i in range(120)]
    model = ScriptedModel(
        default=PARENTS[language]
        + (" Use one beach." if language == "en" else "举一个海滩的例子。")
    )
    config = EvolverConfig(operations=[op], verifiable={"min_count": 2, "max_count": 3})
    outcome = await evolve(parents, model, PromptLibrary(language), config, Random(4), split)
    assert len(outcome.drafts) == 120
    types: Counter[str] = Counter()
    used: set[str] = set()
    for draft in outcome.drafts:
        constraints = load_constraints(draft.meta["constraints"])
        types.update(c.id for c in constraints)
        used.update(draft.meta[LAYOUT_KEY]["phrasings"])
        assert split.violation([draft.instruction], constraints, draft.meta[LAYOUT_KEY]) is None
    assert not set(types) & split.held_out_types
    assert all(split.is_training_phrasing(get_phrasing(i)) for i in used)
    assert outcome.verifiable["constraints_held_out"] == 40
    # The draw still covers the trainable types and varies their sentences.
    assert len(types) >= 15 and len(used) >= 40


def _guarded_pool(store: Store) -> dict[str, str]:
    """One example of each kind; the name says whether it may train."""
    split = default_split()
    suite_only = next(p for p in phrasings_for(NO_COMMA.id, "en") if p.id in split.suite_only)
    training = phrasings_for(NO_COMMA.id, "en")[0]
    task = "Describe the harbour at dawn for a travel magazine."
    drafts = {
        # A user's seed file that happens to ask in a suite-only sentence.
        "seed_suite_phrasing": ExampleDraft(
            instruction=f"{task} {suite_only.render({})}", output="ok", source="seed"
        ),
        # A pool example from before the split: a held-out type in its constraints.
        "old_held_out_type": ExampleDraft(
            instruction=f"{task} Write it all in capitals.",
            output="OK",
            source="evolved",
            meta={"constraints": dump_constraints([CAPITAL])},
        ),
        # A held-out type asked in one of its own sentences by a model's rewrite.
        "text_held_out_type": ExampleDraft(
            instruction=f"{task} Please write everything in capital letters.",
            output="OK",
            source="evolved",
        ),
        # A stored layout naming a suite-only phrasing, whatever the text says now.
        "layout_suite_phrasing": ExampleDraft(
            instruction=f"{task} (rewritten)",
            output="ok",
            source="rewritten",
            meta={
                "constraints": dump_constraints([NO_COMMA]),
                LAYOUT_KEY: {"task": task, "phrasings": [suite_only.id], "at": ["after"]},
            },
        ),
        "trains_constrained": ExampleDraft(
            instruction=f"{task} {training.render({})}",
            output="ok",
            source="evolved",
            meta={
                "constraints": dump_constraints([NO_COMMA]),
                LAYOUT_KEY: {"task": task, "phrasings": [training.id], "at": ["after"]},
            },
        ),
        "trains_plain": ExampleDraft(instruction="Name three rivers in Germany.", output="ok"),
    }
    ids = store.add_candidates(list(drafts.values()), 1).ids
    store.set_status(ids, "accepted")
    return dict(zip(drafts, ids, strict=True))


def test_training_never_carries_a_held_out_type_or_a_suite_phrasing(store: Store) -> None:
    ids = _guarded_pool(store)
    cfg = TrainerConfig(heldout_fraction=0.0, seed_share=0.5)
    mix = select_mix(store, cfg, random.Random(0))
    trained = {e.id for e in mix.train}
    assert trained == {ids["trains_constrained"], ids["trains_plain"]}
    assert mix.available["held_out"] == 4 and mix.available["suite_overlap"] == 0
    guard = training_guard(store, cfg.suite)
    reasons = {name: guard.hit(store.get(i)) for name, i in ids.items()}
    assert (
        reasons["old_held_out_type"]
        == reasons["text_held_out_type"]
        == ("held_out_type:change_case:english_capital")
    )
    assert reasons["seed_suite_phrasing"].startswith("suite_phrasing:punctuation:no_comma/en/")
    assert reasons["trains_plain"] is None
    # The split is config: with nothing held out, all of them train.
    open_cfg = TrainerConfig(
        heldout_fraction=0.0,
        seed_share=0.5,
        suite=SuiteConfig(held_out=HeldOutConfig(types=[], suite_phrasings=[])),
    )
    assert len(select_mix(store, open_cfg, random.Random(0)).train) == 6


def test_export_withholds_what_the_suite_measures(
    project_dir: Path, tmp_path: Path, capsys
) -> None:
    with open_store(project_dir / "pool.db") as store:
        ids = _guarded_pool(store)
    out = tmp_path / "data.jsonl"
    result = run_cli(capsys, "export", "-o", out, "-p", project_dir)
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and "Withheld 4 examples" in result.out
    exported = "\n".join(r["instruction"] for r in rows)
    split = default_split()
    assert split.violation([exported]) is None
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "Withheld: 4 examples" in card and "carry a held-out constraint type" in card
    assert ids  # the pool still holds them: only the export leaves them out


# --- the suite's parts ---------------------------------------------------------------------
def test_each_part_is_what_it_says(store: Store) -> None:
    split = default_split()
    build = ensure_suite(store, SuiteConfig())
    counts = build.suite.part_counts()
    total = sum(counts.values())
    # Shares 0.2 / 0.4 / 0.4 of the tasks, drawn per task.
    assert abs(counts["in_distribution"] / total - 0.2) < 0.06
    assert abs(counts["held_out_phrasing"] / total - 0.4) < 0.08
    assert abs(counts["held_out_type"] / total - 0.4) < 0.08
    for item in build.suite.items:
        phrasings = [get_phrasing(i) for i in item.phrasings]
        assert [p.type_id for p in phrasings] == [c.id for c in item.constraints]
        assert {p.language for p in phrasings} == {item.language}
        held = [c.id in split.held_out_types for c in item.constraints]
        if item.part == "in_distribution":
            assert not any(held) and all(split.is_training_phrasing(p) for p in phrasings)
        elif item.part == "held_out_phrasing":
            assert not any(held) and all(p.id in split.suite_only for p in phrasings)
        else:
            assert item.part == "held_out_type" and held[0]
            # The held-out type is the one novelty: the others read as training does.
            assert not any(held[1:]) and all(split.is_training_phrasing(p) for p in phrasings[1:])
        # Whatever the part, the guard recognises a suite item's sentences but the
        # in-distribution ones: training may say exactly those.
        assert (split.violation([item.prompt]) is None) == (item.part == "in_distribution")


def test_a_tasks_draw_depends_on_itself_only() -> None:
    cfg = SuiteConfig()
    tasks = packaged_tasks()
    alone = task_item(tasks[7], cfg)
    assert task_item(tasks[7], cfg) == alone
    # Another seed draws again; another split changes what may be drawn.
    assert task_item(tasks[7], SuiteConfig(seed=1)) != alone
    parts = Counter(task_item(t, cfg).part for t in tasks[:60])
    assert len(parts) == 3
    only_id = SuiteConfig(parts={"in_distribution": 1.0})
    assert {task_item(t, only_id).part for t in tasks[:20]} == {"in_distribution"}
    none_held = SuiteConfig(held_out=HeldOutConfig(types=[]))
    assert "held_out_type" not in {task_item(t, none_held).part for t in tasks[:40]}


def test_parts_and_phrasings_are_stored_with_the_suite(store: Store) -> None:
    build = ensure_suite(store, SuiteConfig(tasks_per_language=8))
    again = open_store(Path(store.path))
    from evoinstruct.trainer.suite import load_suite

    loaded = load_suite(again, build.suite.hash)
    again.close()
    assert loaded is not None and loaded.items == build.suite.items
    assert all(i.part and i.phrasings for i in loaded.items)


def test_a_held_out_type_needs_a_sibling_in_training_config() -> None:
    # Every type can be held out; an unknown one is refused with its name.
    with pytest.raises(ValueError, match="keywords:nope"):
        SuiteConfig(held_out={"types": ["keywords:nope"]})
    split = ConstraintSplit.from_config(HeldOutConfig(types=["punctuation:no_comma"]))
    assert split.training_phrasings("punctuation:no_comma", "en") == ()
