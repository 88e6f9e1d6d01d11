"""The in-process transformers backend on a tiny random llama built for this session."""

from __future__ import annotations

import asyncio
import math
import shutil
import threading
from pathlib import Path

import pytest

from evoinstruct.models.base import ChatModel, ChatRequest, Generation
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.fingerprint import adapter_digest
from evoinstruct.models.tiny import build_tiny_llama
from evoinstruct.models.transformers_backend import PLAIN_CHAT_TEMPLATE, TransformersModel
from evoinstruct.store.errors import ModelError, UnsupportedError

PROMPTS = [
    "Write a short poem about the sea.",
    "请写一首关于春天的短诗。",
    "List three ways to save water at home, please, in simple words.",
    "中国的首都是哪里？",
]


def _make_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, config)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # nonzero B: the adapter really changes the outputs
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def adapters(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return _make_adapter(tiny_dir, root / "a", 1), _make_adapter(tiny_dir, root / "b", 2)


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> TransformersModel:
    return TransformersModel(
        ModelConfig(backend="transformers", path=str(tiny_dir), device="auto", batch_size=4)
    )


def _greedy(prompt: str, max_tokens: int = 12, **kw) -> ChatRequest:
    return ChatRequest(
        [{"role": "user", "content": prompt}], temperature=0.0, max_tokens=max_tokens, **kw
    )


async def _texts(model: TransformersModel, requests: list[ChatRequest]) -> list[str]:
    results = await model.generate(requests)
    assert all(isinstance(r, Generation) for r in results), results
    return [r.text for r in results]


def test_is_a_chat_model(model: TransformersModel) -> None:
    assert isinstance(model, ChatModel)
    assert model.device == "cpu"
    assert model.adapter_version is None


async def test_batched_and_one_by_one_greedy_agree(model: TransformersModel) -> None:
    requests = [_greedy(p) for p in PROMPTS]
    batched = await model.generate(requests)
    single = [(await model.generate([r]))[0] for r in requests]
    assert len({b.prompt_tokens for b in batched}) > 1  # different lengths: left padding in use
    for b, s in zip(batched, single, strict=True):
        assert isinstance(b, Generation) and isinstance(s, Generation)
        assert b.text == s.text and b.finish_reason == s.finish_reason
        assert b.completion_tokens == s.completion_tokens > 0


async def test_length_and_stop_finish_reasons(model: TransformersModel) -> None:
    (short,) = await model.generate([_greedy(PROMPTS[0], max_tokens=3)])
    assert isinstance(short, Generation) and short.truncated and short.completion_tokens == 3
    (full,) = await model.generate([_greedy(PROMPTS[0], max_tokens=16)])
    assert isinstance(full, Generation)
    marker = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    assert marker.strip(), full.text
    (stopped,) = await model.generate([_greedy(PROMPTS[0], max_tokens=16, stop=(marker,))])
    assert isinstance(stopped, Generation)
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.find(marker)]


async def test_seeded_sampling_is_reproducible(model: TransformersModel) -> None:
    def sample(seed: int) -> ChatRequest:
        return ChatRequest(
            [{"role": "user", "content": PROMPTS[1]}],
            temperature=1.0,
            max_tokens=12,
            n=3,
            seed=seed,
        )

    first = await model.generate([sample(7)])
    again = await model.generate([sample(7)])
    other = await model.generate([sample(8)])
    assert isinstance(first[0], Generation) and len(first[0].choices) == 3
    assert [c.text for c in first[0].choices] == [c.text for c in again[0].choices]
    assert [c.text for c in first[0].choices] != [c.text for c in other[0].choices]


async def test_greedy_n_copies(model: TransformersModel) -> None:
    (result,) = await model.generate([_greedy(PROMPTS[2], n=2)])
    assert isinstance(result, Generation)
    assert len(result.choices) == 2 and result.choices[0] == result.choices[1]


async def test_adapter_load_swap_remove(
    model: TransformersModel, adapters: tuple[Path, Path]
) -> None:
    requests = [_greedy(p) for p in PROMPTS[:2]]
    base_model = model.model
    weight = model.model.get_input_embeddings().weight.detach().clone()
    base = await _texts(model, requests)
    try:
        assert model.load_adapter(adapters[0], "student-0.1") == "student-0.1"
        assert model.adapter_version == "student-0.1"
        with_a = await _texts(model, requests)
        model.load_adapter(adapters[1], "student-0.2")
        with_b = await _texts(model, requests)
        assert with_a != base and with_b != base and with_a != with_b
        model.set_adapter("student-0.1")
        assert await _texts(model, requests) == with_a
        model.remove_adapter()
        assert model.adapter_version is None
        assert await _texts(model, requests) == base
        model.set_adapter("student-0.2")  # still loaded after a remove: swapping back is cheap
        assert await _texts(model, requests) == with_b
        assert model.model is base_model  # never reloaded the base
        assert model.model.get_input_embeddings().weight.equal(weight)
        with pytest.raises(ModelError, match="not loaded"):
            model.set_adapter("student-9")
    finally:
        model.remove_adapter(unload=True)
    assert model.loaded_adapters == [] and await _texts(model, requests) == base


async def test_other_weights_under_a_loaded_name_are_loaded_and_served(
    model: TransformersModel, adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    """A version name seen before with other files (a project copied and trained again):
    the new weights answer, and the digest the response cache keys on changes with them."""
    requests = [_greedy(p) for p in PROMPTS[:2]]
    renamed = tmp_path / "v1"
    shutil.copytree(adapters[1], renamed)
    try:
        model.load_adapter(renamed, "v1")
        first_digest, with_b = model.adapter_digest, await _texts(model, requests)
        assert first_digest == adapter_digest(adapters[1])
        shutil.rmtree(renamed)
        shutil.copytree(adapters[0], renamed)
        model.load_adapter(renamed, "v1")  # while the old v1 is active
        assert model.adapter_version == "v1" and model.adapter_digest != first_digest
        assert model.adapter_digest == adapter_digest(adapters[0])
        with_a = await _texts(model, requests)
        assert with_a != with_b
        model.load_adapter(adapters[0], "other")
        assert await _texts(model, requests) == with_a  # the same files answer alike
        # Refilled with files that do not load: an error, and the old weights are gone.
        model.set_adapter("v1")
        (renamed / "adapter_model.safetensors").write_bytes(b"not a tensor file")
        with pytest.raises(ModelError, match="cannot load the adapter"):
            model.load_adapter(renamed, "v1")
        assert model.adapter_version is None and model.adapter_digest is None
        assert model.loaded_adapters == ["other"]
        assert await _texts(model, requests) == await _base_texts(model, requests)
    finally:
        model.remove_adapter(unload=True)
    assert model.adapter_digest is None and model.loaded_adapters == []


async def _base_texts(model: TransformersModel, requests: list[ChatRequest]) -> list[str]:
    """The plain base's answers, whatever adapter was active (it stays active after)."""
    active = model.adapter_version
    model.remove_adapter()
    try:
        return await _texts(model, requests)
    finally:
        if active is not None:
            model.set_adapter(active)


def test_missing_adapter_is_a_model_error(model: TransformersModel, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load the adapter"):
        model.load_adapter(tmp_path / "nothing-here")
    assert model.adapter_version is None


def _hand_nll(model: TransformersModel, context: list[int], answer: list[int]) -> list[float]:
    import torch

    ids = torch.tensor([context + answer])
    with torch.no_grad():
        logits = model.model(input_ids=ids).logits[0]
    out = []
    for j in range(len(context), len(context) + len(answer)):
        row = logits[j - 1]
        out.append(float(torch.logsumexp(row, dim=0) - row[ids[0, j]]))
    return out


async def test_loss_matches_a_hand_computation(model: TransformersModel) -> None:
    tok = model.tokenizer
    pairs = [
        ([{"role": "user", "content": PROMPTS[3]}], "中国的首都是北京。"),
        ([{"role": "user", "content": PROMPTS[0]}], "The sea is wide and blue, and it sings."),
        ([], "中国的首都是北京。"),
    ]
    losses = await model.loss(pairs)
    for (prompt, answer), got in zip(pairs, losses, strict=True):
        context = (
            tok(
                tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )["input_ids"]
            if prompt
            else [tok.bos_token_id]
        )
        expected = _hand_nll(model, context, tok(answer, add_special_tokens=False)["input_ids"])
        assert got == pytest.approx(expected, abs=1e-4)
    # IFD divides the two: the answer span must be the same tokens with and without a prompt.
    assert len(losses[0]) == len(losses[2]) > 0
    assert losses[0] != pytest.approx(losses[2], abs=1e-6)
    assert (await model.loss([([], "")])) == [[]]


async def test_embed_returns_vectors(model: TransformersModel) -> None:
    texts = ["The capital of France is Paris.", "中国的首都是北京。", "a"]
    vectors = await model.embed(texts)
    hidden = model.model.config.hidden_size
    assert [len(v) for v in vectors] == [hidden] * 3
    assert all(math.isfinite(x) for v in vectors for x in v)
    assert vectors[0] != vectors[1]
    (alone,) = await model.embed(["a"])  # padding in a batch does not change a vector
    assert alone == pytest.approx(vectors[2], abs=1e-4)


async def test_option_probs_sum_to_one(model: TransformersModel) -> None:
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    options = ["1", "2", "3", "4", "5", "6"]
    probs = await model.option_probs(prompts, options)
    assert len(probs) == 4
    for row in probs:
        assert len(row) == 6 and sum(row) == pytest.approx(1.0, abs=1e-5)
        assert all(0 < p < 1 for p in row)
    (single,) = await model.option_probs(prompts[:1], options)
    assert single == pytest.approx(probs[0], abs=1e-4)
    with pytest.raises(UnsupportedError):
        await model.option_probs(prompts[:1], ["12", "1"])


async def test_event_loop_stays_responsive(
    model: TransformersModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each forward pass first asks the event loop to run a callback and waits for it. Off the
    # loop (a worker thread) the callback runs at once; on the loop it could not run until
    # the pass returned, so the wait would give up and the pass would note False.
    loop = asyncio.get_running_loop()
    answered: list[bool] = []
    real_generate = model.model.generate

    def generate(*args, **kwargs):
        on_loop = threading.Event()
        loop.call_soon_threadsafe(on_loop.set)
        answered.append(on_loop.wait(timeout=60))  # a hang guard; set at once when it works
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model.model, "generate", generate)
    results = await model.generate([_greedy(p, max_tokens=48) for p in PROMPTS])
    assert all(isinstance(r, Generation) for r in results)
    assert answered == [True]  # one batch of four, and the loop ran while it was generating


async def test_plain_template_for_a_base_model(tiny_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir, bare)
    (bare / "chat_template.jinja").unlink()
    base = TransformersModel(ModelConfig(backend="transformers", path=str(bare)))
    assert base.tokenizer.chat_template == PLAIN_CHAT_TEMPLATE
    text = base._prompt_text(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]
    )
    assert text == "Be brief.\n\n### Instruction:\n你好\n\n### Response:\n"
    (result,) = await base.generate([_greedy("你好", max_tokens=4)])
    assert isinstance(result, Generation)


def test_an_empty_model_directory_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load the model"):
        TransformersModel(ModelConfig(backend="transformers", path=str(tmp_path)))
