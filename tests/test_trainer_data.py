"""Training data: label masks token by token, templates, truncation, packing, the mix."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from evoinstruct.models.transformers_backend import PLAIN_CHAT_TEMPLATE
from evoinstruct.store.errors import ConfigError
from evoinstruct.store.records import Example
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.data import (
    IGNORE_INDEX,
    Collator,
    build_dataset,
    compose_mix,
    encode_example,
    is_heldout,
    lineage_trained_ids,
    pack_rows,
    render_prompt,
    resolve_template,
    select_mix,
    starting_version,
    tokenize_examples,
)

pytest_plugins = ["tests.conftest_trainer"]


def ex(i: int | str, instruction: str, output: str, **kw) -> Example:
    fields = {"round": 1, "status": "accepted", **kw}
    return Example(id=str(i), instruction=instruction, output=output, **fields)


CASES = [
    ex("en", "Write a short poem about the sea.", "The sea is blue and wide."),
    ex("zh", "请写一首关于春天的短诗。", "春天来了，花开了。"),
    ex(
        "sys",
        "Translate the sentence.",
        "J'aime lire.",
        system="You translate.",
        input="I like reading.",
    ),
    ex(
        "zh-in",
        "总结下面这段话。",
        "中国的首都是北京。",
        input="中国的首都是哪里？中国的首都是北京。",
    ),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def plain_tokenizer(tiny_model_dir: Path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    return tok


def _check_masks(tok, template: str, example: Example) -> None:
    rows, _ = tokenize_examples([example], tok, template, max_length=512)
    ids, labels = rows[0]["input_ids"], rows[0]["labels"]
    prompt = render_prompt(tok, template, example.system, example.instruction, example.input)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(labels)
    for position, (token, label) in enumerate(zip(ids, labels, strict=True)):
        if position < n_prompt:
            assert label == IGNORE_INDEX, (position, tok.decode([token]))
        else:
            assert label == token, (position, tok.decode([token]))
    learned = tok.decode(ids[n_prompt:])
    assert learned == example.output + tok.eos_token
    assert labels[-1] == tok.eos_token_id
    assert tok.decode(ids[:n_prompt]) == prompt


@pytest.mark.parametrize("example", CASES, ids=lambda e: e.id)
def test_chat_template_masks_exactly_the_response(tokenizer, example: Example) -> None:
    assert resolve_template(tokenizer, "auto") == "chat"
    _check_masks(tokenizer, "chat", example)


@pytest.mark.parametrize("example", CASES, ids=lambda e: e.id)
def test_alpaca_layout_for_tokenizers_without_template(plain_tokenizer, example: Example) -> None:
    assert resolve_template(plain_tokenizer, "auto") == "alpaca"
    _check_masks(plain_tokenizer, "alpaca", example)
    prompt = render_prompt(
        plain_tokenizer, "alpaca", example.system, example.instruction, example.input
    )
    assert (
        prompt.endswith("### Response:\n") and "### Instruction:\n" + example.instruction in prompt
    )


def test_alpaca_prompt_is_what_the_backend_serves(plain_tokenizer) -> None:
    messages = [{"role": "user", "content": "请写一首诗"}]
    served = plain_tokenizer.apply_chat_template(
        messages, chat_template=PLAIN_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    assert render_prompt(plain_tokenizer, "alpaca", "", "请写一首诗") == served


def test_chat_template_required_when_asked(plain_tokenizer) -> None:
    with pytest.raises(ConfigError):
        resolve_template(plain_tokenizer, "chat")


def test_truncation_is_counted_and_keeps_the_prompt(tokenizer) -> None:
    long = ex("long", "Write a short poem about the sea.", "The sea is blue and wide. " * 30)
    short = ex("short", "Say hi.", "Hi.")
    prompt_ids, _ = encode_example(tokenizer, "chat", long)
    rows, stats = tokenize_examples(
        [long, short], tokenizer, "chat", max_length=len(prompt_ids) + 5
    )
    assert stats.truncated == 1 and stats.truncated_ids == ["long"] and stats.dropped == 0
    cut = rows[0]
    assert len(cut["input_ids"]) == len(prompt_ids) + 5
    assert cut["input_ids"][: len(prompt_ids)] == prompt_ids
    assert sum(label != IGNORE_INDEX for label in cut["labels"]) == 5
    rows, stats = tokenize_examples([long], tokenizer, "chat", max_length=len(prompt_ids))
    assert rows == [] and stats.dropped == 1 and stats.dropped_ids == ["long"]


def test_packing_keeps_every_example_and_its_mask(tokenizer) -> None:
    examples = [
        ex(i, f"Explain topic {i}.", "Paris is the capital of France. " * (1 + (i * 7) % 9))
        for i in range(25)
    ]
    rows, _ = tokenize_examples(examples, tokenizer, "chat", max_length=160)
    blocks = pack_rows(rows, 160)
    assert len(blocks) < len(rows)
    by_id = {r["example_id"]: r for r in rows}
    seen = []
    for block in blocks:
        assert len(block["input_ids"]) <= 160
        start = 0
        for example_id in block["example_ids"]:
            row = by_id[example_id]
            end = start + len(row["input_ids"])
            assert block["input_ids"][start:end] == row["input_ids"]
            assert block["labels"][start:end] == row["labels"]
            assert block["position_ids"][start:end] == list(range(len(row["input_ids"])))
            start = end
        assert start == len(block["input_ids"])
        seen.extend(block["example_ids"])
    assert sorted(seen) == sorted(by_id)


def test_packed_examples_do_not_attend_to_each_other(tokenizer, tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows, _ = tokenize_examples(CASES[:3], tokenizer, "chat", max_length=512)
    [block] = pack_rows(rows, 512)
    collate = Collator(tokenizer.pad_token_id)
    inputs = {k: v for k, v in collate([block]).items() if k != "labels"}
    with torch.no_grad():
        # As in training (the Trainer sets use_cache=False): a cache hides the packing.
        packed = model(**inputs, use_cache=False).logits[0]
        start = 0
        for example_id in block["example_ids"]:
            row = next(r for r in rows if r["example_id"] == example_id)
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            n = len(row["input_ids"])
            assert torch.allclose(packed[start : start + n], alone, atol=1e-4)
            start += n


def test_collator_pads_right_and_masks_padding(tokenizer) -> None:
    rows, _ = tokenize_examples(CASES[:2], tokenizer, "chat", max_length=512)
    batch = Collator(tokenizer.pad_token_id)(rows)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (2, width) and "position_ids" not in batch
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert batch["labels"][i, n:].eq(IGNORE_INDEX).all()


def test_build_dataset_packs_when_configured(tokenizer, tiny_model_dir: Path) -> None:
    cfg = TrainerConfig(base_model=str(tiny_model_dir), packing=True, max_length=256)
    dataset, stats = build_dataset(CASES * 5, tokenizer, cfg)
    assert stats.blocks == len(dataset) < 20 and stats.examples == 20
    assert {"input_ids", "labels", "position_ids"} <= set(dataset.column_names)


# --- the mix ---------------------------------------------------------------------------
def _pools(n_seed: int, n_new: int, n_old: int):
    seeds = [ex(f"s{i}", f"seed {i}", "a", source="seed", round=0) for i in range(n_seed)]
    new = [ex(f"n{i}", f"new {i}", "b", round=3) for i in range(n_new)]
    old = [ex(f"o{i}", f"old {i}", "c", round=1) for i in range(n_old)]
    return seeds, new, old


def test_mix_takes_the_configured_shares() -> None:
    seeds, new, old = _pools(10, 30, 40)
    cfg = TrainerConfig(seed_share=0.1, replay_share=0.3)
    mix = compose_mix(seeds, new, old, [], cfg, random.Random(0))
    # 30 new are 60 % of a mix of 50: 5 seeds, 15 replayed.
    assert (len(mix.new), len(mix.seeds), len(mix.replay)) == (30, 5, 15)
    assert {e.id for e in mix.seeds} <= {e.id for e in seeds}
    assert {e.id for e in mix.replay} <= {e.id for e in old}
    again = compose_mix(seeds, new, old, [], cfg, random.Random(0))
    assert mix.manifest() == again.manifest()
    other = compose_mix(seeds, new, old, [], cfg, random.Random(1))
    assert other.manifest()["replay"] != mix.manifest()["replay"]


def test_mix_caps_new_and_takes_all_of_a_short_role() -> None:
    seeds, new, old = _pools(2, 100, 3)
    cfg = TrainerConfig(seed_share=0.2, replay_share=0.2, max_new_examples=60)
    mix = compose_mix(seeds, new, old, [], cfg, random.Random(0))
    assert (len(mix.new), len(mix.seeds), len(mix.replay)) == (60, 2, 3)
    assert mix.available == {"new": 100, "seed": 2, "replay": 3, "heldout": 0, "generation": 0}
    no_replay = compose_mix(seeds, new, old, [], TrainerConfig(replay_share=0.0), random.Random(0))
    assert no_replay.replay == []


def test_heldout_is_a_stable_share_of_ids() -> None:
    ids = [f"id-{i}" for i in range(4000)]
    held = [i for i in ids if is_heldout(i, 0.1)]
    assert 300 < len(held) < 500
    assert held == [i for i in ids if is_heldout(i, 0.1)]
    assert set(held) <= {i for i in ids if is_heldout(i, 0.2)}  # growing the share keeps them
    assert not any(is_heldout(i, 0.0) for i in ids)


def test_select_mix_from_the_pool(store) -> None:
    from tests.conftest_trainer import fill_pool

    first = fill_pool(store, n_new=30, n_seed=5, round=1)
    cfg = TrainerConfig(heldout_fraction=0.2, seed_share=0.1, replay_share=0.3)
    mix = select_mix(store, cfg, random.Random(0))
    assert {e.id for e in mix.new} | {e.id for e in mix.heldout} == set(first)
    assert all(not is_heldout(e.id, 0.2) for e in mix.new)  # seeds are never held out
    assert all(e.source == "seed" for e in mix.seeds) and mix.replay == []
    # Pretend v1 trained on this mix; continuing from v1, the next round's examples are
    # new and v1's are replay.
    trained = [e.id for e in mix.train]
    store.record_training_manifest("v1", trained)
    store.register_model_version(
        "v1", base="b", method="lora", path="p", round=1, metrics={}, config={}
    )
    second = fill_pool(store, n_new=60, n_seed=0, round=2)
    second = [i for i in second if i not in first]
    fresh = select_mix(store, cfg, random.Random(0), parent=None)
    assert {e.id for e in fresh.new} == (set(first) | set(second)) - {e.id for e in fresh.heldout}
    later = select_mix(store, cfg, random.Random(0), parent="v1")
    assert {e.id for e in later.new} <= set(second)
    assert {e.id for e in later.replay} <= set(trained) - {e.id for e in mix.seeds}
    assert later.replay and not {e.id for e in later.train} & {e.id for e in later.heldout}
    # Candidates and rejected examples never train.
    store.set_status(second[:3], "rejected")
    assert not {e.id for e in select_mix(store, cfg, random.Random(0)).train} & set(second[:3])


def test_lineage_and_starting_version(store) -> None:
    cfg = TrainerConfig(base_model="base")
    shape = cfg.model_dump(mode="json")
    for version, parent, ids in (
        ("v1", None, ["a", "b"]),
        ("v2", "v1", ["c"]),
        ("v3", None, ["d"]),
    ):
        store.record_training_manifest(version, ids)
        config = {**shape, "parent_version": parent}
        store.register_model_version(
            version, base="base", method="lora", path=version, round=1, metrics={}, config=config
        )
    assert lineage_trained_ids(store, "v2") == {"a", "b", "c"}
    assert lineage_trained_ids(store, "v3") == {"d"} and lineage_trained_ids(store, None) == set()
    assert starting_version(store, cfg) is None  # nothing promoted
    store.set_promoted("v2", "better")
    assert starting_version(store, cfg)["version"] == "v2"
    assert starting_version(store, cfg.model_copy(update={"init_from": "base"})) is None
    assert starting_version(store, cfg.model_copy(update={"lora_r": 8})) is None  # other shape


def test_count_new_resets_after_a_training_even_from_the_base(store) -> None:
    """The schedule's count: examples no training has seen, whatever the starting point."""
    from evoinstruct.trainer.data import count_new, is_heldout
    from tests.conftest_trainer import fill_pool

    cfg = TrainerConfig(base_model="tiny", init_from="base", heldout_fraction=0.1)
    ids = fill_pool(store, n_new=20, n_seed=2, round=1)
    trainable = [i for i in ids if not is_heldout(i, cfg.heldout_fraction)]
    assert count_new(store, cfg) == len(trainable)
    store.register_model_version(
        "v1", base="tiny", method="lora", path="/m/v1", round=1, metrics={}, config={}
    )
    store.record_training_manifest("v1", trainable)
    assert count_new(store, cfg) == 0  # nothing new since v1, though v1 was never promoted
