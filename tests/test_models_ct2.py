"""The ctranslate2 generation engine against the torch path, on a tiny random llama.

The reference is the torch path in float32: the engine in float32 must give the same
greedy answers, with and without an adapter, and keep the backend's request semantics
(order, n answers, per-request max_tokens, stop strings, seeds, stopping on request).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from evoinstruct.models.base import ChatRequest, Generation
from evoinstruct.models.cancel import Cancelled
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.ct2_engine import CACHE_SUBDIR
from evoinstruct.models.smollm2 import CACHE_ENV
from evoinstruct.models.transformers_backend import TransformersModel
from tests.test_models_transformers import PROMPTS, _make_adapter

pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ct2cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root


def _model(path: Path, engine: str, **kw) -> TransformersModel:
    return TransformersModel(
        ModelConfig(
            backend="transformers",
            path=str(path),
            device="cpu",
            dtype="float32",
            batch_size=3,
            engine=engine,
            **kw,
        )
    )


@pytest.fixture(scope="module")
def pair(tiny_model_dir: Path, cache: Path) -> tuple[TransformersModel, TransformersModel]:
    return _model(tiny_model_dir, "torch"), _model(tiny_model_dir, "ctranslate2")


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_adapter(tiny_model_dir, tmp_path_factory.mktemp("ad") / "v1", 3)


def _greedy(prompt: str, max_tokens: int = 20, **kw) -> ChatRequest:
    return ChatRequest(
        [{"role": "user", "content": prompt}], temperature=0.0, max_tokens=max_tokens, **kw
    )


def _sampled(prompt: str, n: int = 3, max_tokens: int = 16, **kw) -> ChatRequest:
    return ChatRequest(
        [{"role": "user", "content": prompt}],
        temperature=1.0,
        max_tokens=max_tokens,
        n=n,
        **kw,
    )


def _choices(results: list) -> list[list[tuple[str, str]]]:
    assert all(isinstance(r, Generation) for r in results), results
    return [[(c.text, c.finish_reason) for c in r.choices] for r in results]


async def test_greedy_answers_equal_the_torch_path(pair) -> None:
    torch_model, ct2_model = pair
    # Mixed max_tokens: two sampling groups, batches of 3, results back in request order.
    requests = [_greedy(p, 20 if i % 2 else 7) for i, p in enumerate(PROMPTS * 2)]
    want = await torch_model.generate(requests)
    got = await ct2_model.generate(requests)
    assert _choices(got) == _choices(want)
    assert [g.completion_tokens for g in got] == [w.completion_tokens for w in want]
    assert [g.prompt_tokens for g in got] == [w.prompt_tokens for w in want]
    assert all(g.completion_tokens <= r.max_tokens for g, r in zip(got, requests, strict=True))


async def test_stop_strings_cut_as_the_torch_path_does(pair) -> None:
    torch_model, ct2_model = pair
    (full,) = await torch_model.generate([_greedy(PROMPTS[0], 24)])
    assert isinstance(full, Generation)
    marker = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    assert marker.strip(), full.text
    request = _greedy(PROMPTS[0], 24, stop=(marker,))
    (want,) = await torch_model.generate([request])
    (got,) = await ct2_model.generate([request])
    assert _choices([got]) == _choices([want])
    assert got.finish_reason == "stop" and got.text == full.text[: full.text.find(marker)]


@pytest.mark.slow  # merges and converts an adapter version: seconds of torch and CTranslate2
async def test_adapter_versions_merge_and_match_torch(
    tiny_model_dir: Path, adapter: Path, cache: Path
) -> None:
    torch_model, ct2_model = _model(tiny_model_dir, "torch"), _model(tiny_model_dir, "ctranslate2")
    requests = [_greedy(p) for p in PROMPTS]
    base = _choices(await ct2_model.generate(requests))
    for m in (torch_model, ct2_model):
        m.load_adapter(adapter, "v1")
    tuned = _choices(await ct2_model.generate(requests))
    assert tuned == _choices(await torch_model.generate(requests))
    assert tuned != base  # the merged adapter changes the answers
    ct2_model.remove_adapter()
    assert _choices(await ct2_model.generate(requests)) == base
    # Converted once per version: a second model reuses the cached folders.
    folders = sorted((cache / CACHE_SUBDIR).iterdir())
    again = _model(tiny_model_dir, "ctranslate2")
    again.load_adapter(adapter, "v1")
    assert _choices(await again.generate(requests)) == tuned
    assert sorted((cache / CACHE_SUBDIR).iterdir()) == folders


async def test_a_version_folder_refilled_with_other_weights_is_served_anew(
    tiny_model_dir: Path, adapter: Path, cache: Path, tmp_path: Path
) -> None:
    """The engine keeps loaded generators by the adapter's files, not its path: the same
    folder and version name with other weights answer as the torch path does with them."""
    torch_model, ct2_model = _model(tiny_model_dir, "torch"), _model(tiny_model_dir, "ctranslate2")
    requests = [_greedy(p) for p in PROMPTS]
    folder = tmp_path / "v1"
    shutil.copytree(adapter, folder)
    ct2_model.load_adapter(folder, "v1")
    first = _choices(await ct2_model.generate(requests))
    shutil.rmtree(folder)
    _make_adapter(tiny_model_dir, folder, 5)
    for m in (torch_model, ct2_model):
        m.load_adapter(folder, "v1")
    refilled = _choices(await ct2_model.generate(requests))
    assert refilled != first
    assert refilled == _choices(await torch_model.generate(requests))


async def test_n_samples_per_request_in_order(pair) -> None:
    _, ct2_model = pair
    requests = [_sampled(PROMPTS[0], n=4), _greedy(PROMPTS[1], n=2), _sampled(PROMPTS[2], n=1)]
    results = await ct2_model.generate(requests)
    assert [len(r.choices) for r in results] == [4, 2, 1]
    assert len({c.text for c in results[0].choices}) > 1  # samples, not copies
    assert results[1].choices[0] == results[1].choices[1]
    (alone,) = await ct2_model.generate([requests[1]])
    assert alone.choices == results[1].choices  # greedy is the same in any batch


async def test_seeds(tiny_model_dir: Path, cache: Path) -> None:
    seeded = _model(tiny_model_dir, "ctranslate2")
    first = _choices(await seeded.generate([_sampled(PROMPTS[1], seed=7)]))
    assert first == _choices(await seeded.generate([_sampled(PROMPTS[1], seed=7)]))
    assert first != _choices(await seeded.generate([_sampled(PROMPTS[1], seed=8)]))
    # Without a request seed, the model's seed makes a process's sequence of calls repeat.
    runs = []
    for _ in range(2):
        model = _model(tiny_model_dir, "ctranslate2", seed=5)
        runs.append([_choices(await model.generate([_sampled(p)])) for p in PROMPTS[:2]])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]


async def test_a_cancelled_call_stops_within_a_step(pair) -> None:
    _, ct2_model = pair
    engine = ct2_model._engine
    assert engine is not None
    rows, limit = 6, 2000
    before = engine.tokens
    task = asyncio.create_task(ct2_model.generate([_sampled(PROMPTS[0], n=rows, max_tokens=limit)]))
    while engine.tokens == before:  # generation has started
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker thread ends and frees the model: the next call runs.
    (after,) = await asyncio.wait_for(ct2_model.generate([_greedy(PROMPTS[1], 4)]), 30)
    assert isinstance(after, Generation)
    assert engine.tokens - before < rows * limit


def test_the_engine_stops_the_batch_at_the_next_step(pair) -> None:
    _, ct2_model = pair
    engine = ct2_model._engine
    assert engine is not None
    rows, start = 4, engine.tokens
    counter = engine._counter  # not the engine: a callback must not keep it alive

    def stop_after_two_steps() -> bool:
        return counter.tokens - start > 2 * rows

    request = _sampled(PROMPTS[0], n=rows, max_tokens=500)
    text = ct2_model._prompt_text(request.messages)
    with pytest.raises(Cancelled):
        engine.generate(
            [request],
            [text],
            seed=1,
            decode=ct2_model._decode,
            stop_requested=stop_after_two_steps,
        )
    # Every row ends at the step the request was seen: at most one more token a row.
    assert engine.tokens - start <= 3 * rows + rows


def test_prune_keeps_the_folders_used_last(tmp_path: Path) -> None:
    import os

    from evoinstruct.models.ct2_engine import prune

    for i in range(5):
        folder = tmp_path / f"v{i}"
        folder.mkdir()
        os.utime(folder, (1000 + i, 1000 + i))
    os.utime(tmp_path / "v0", (5000, 5000))  # used again lately
    (tmp_path / ".v9.tmp").mkdir()  # a conversion in progress is not a folder to prune
    removed = prune(tmp_path, 3)
    assert sorted(p.name for p in removed) == ["v1", "v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v9.tmp", "v0", "v3", "v4"]
