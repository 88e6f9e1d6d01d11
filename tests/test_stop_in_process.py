"""In-process models stop within a token: a cancelled generate ends its worker thread at the
next decoding step, keeps nothing it decoded, and frees the model; the live activity counts
the tokens as they are decoded. The tiny model is slowed to one token per 100 ms, so the
bounds below are a few tokens, whatever the machine's speed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from evoinstruct.models.activity import Activity, MeteredModel
from evoinstruct.models.base import ChatRequest, Generation
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.transformers_backend import TransformersModel

TOKEN_S = 0.1


def slowed(model: TransformersModel, seconds: float = TOKEN_S) -> TransformersModel:
    """Every forward pass (one decoding step) takes at least `seconds`."""
    forward = model.model.forward

    def slow_forward(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return forward(*args, **kwargs)

    model.model.forward = slow_forward
    return model


@pytest.fixture
def slow_model(tiny_model_dir: Path) -> TransformersModel:
    config = ModelConfig(backend="transformers", path=str(tiny_model_dir), device="cpu")
    return slowed(TransformersModel(config))


async def until(
    predicate: Any, what: str, hang_guard_s: float = 60.0, detail: Any = lambda: ""
) -> None:
    """Wait on observed progress; the bound only guards a hang (`detail()` says where it was)."""
    deadline = time.monotonic() + hang_guard_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {detail()}"
        await asyncio.sleep(0.01)


def _long_request(n: int = 1) -> ChatRequest:
    # 400 tokens at 100 ms each: 40 s if nothing stopped it.
    return ChatRequest(
        [{"role": "user", "content": "Write a short poem about the sea."}],
        temperature=0.8,
        max_tokens=400,
        n=n,
        seed=1,
    )


async def test_a_cancelled_generate_stops_within_a_token_and_frees_the_model(
    slow_model: TransformersModel,
) -> None:
    activity = Activity()
    model = MeteredModel(slow_model, activity)
    call = asyncio.create_task(model.generate([_long_request(n=2)] * 3))
    await until(lambda: activity.snapshot().tokens >= 12, "tokens decoded")
    assert activity.snapshot().in_flight == 3
    at_cancel = activity.snapshot().tokens
    cancelled_at = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The call returns once its thread has stopped, within a decoding step or two of the
    # cancel (six rows decode per step), not after its 400 tokens.
    tokens = activity.snapshot().tokens
    assert tokens - at_cancel <= 2 * 6, (at_cancel, tokens)
    assert time.monotonic() - cancelled_at < 30  # a hang guard, not the machine's speed
    assert slow_model._lock.acquire(blocking=False), "the worker thread still holds the model"
    slow_model._lock.release()
    await asyncio.sleep(3 * TOKEN_S)
    after = activity.snapshot()
    assert after.tokens == tokens, "the thread kept decoding after the call was cancelled"
    assert (after.in_flight, after.done) == (0, 0)  # a cancelled call answered nothing

    # The model serves the next call as usual.
    short = ChatRequest([{"role": "user", "content": "Hi"}], temperature=0.0, max_tokens=3)
    (answer,) = await model.generate([short])
    assert isinstance(answer, Generation)
    snapshot = activity.snapshot()
    assert snapshot.done == 1 and snapshot.tokens == tokens + answer.completion_tokens


async def test_the_live_count_gives_way_to_the_answers_count(
    slow_model: TransformersModel,
) -> None:
    """While decoding, tokens are counted step by step; when the call returns, the count is
    its answers' completion tokens (no double counting)."""
    activity = Activity()
    model = MeteredModel(slow_model, activity)
    request = ChatRequest(
        [{"role": "user", "content": "List three ways to save water."}],
        temperature=0.0,
        max_tokens=12,
    )
    seen: list[int] = []
    call = asyncio.create_task(model.generate([request, request]))
    while not call.done():
        seen.append(activity.snapshot().tokens)
        await asyncio.sleep(TOKEN_S / 2)
    answers = await call
    assert any(n > 0 for n in seen), seen  # counted while it ran
    total = sum(a.completion_tokens for a in answers if isinstance(a, Generation))
    snapshot = activity.snapshot()
    assert snapshot.tokens == total and snapshot.done == 2 and snapshot.in_flight == 0


async def test_a_stop_mid_call_keeps_the_batches_already_finished(tiny_model_dir: Path) -> None:
    """The response cache stores an in-process model's answers batch by batch: a call cut
    short by a stop loses only the batch in flight, and its re-run decodes only what is left."""
    from evoinstruct.models.cache import CachedModel
    from tests.test_models_cache import DictCache

    config = ModelConfig(
        backend="transformers", path=str(tiny_model_dir), device="cpu", batch_size=2
    )
    inner = slowed(TransformersModel(config), seconds=0.05)
    cache = DictCache()
    model = CachedModel(inner, cache)
    prompts = ["Name a river.", "Name a fruit.", "Name a city.", "Name a tree."]
    requests = [
        ChatRequest([{"role": "user", "content": p}], temperature=0.0, max_tokens=60)
        for p in prompts
    ]
    call = asyncio.create_task(model.generate(requests))
    await until(lambda: len(cache.rows) >= 2, "the first batch stored", hang_guard_s=300)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert len(cache.rows) == 2  # the second batch was in flight: nothing of it kept
    again = await model.generate(requests)
    assert all(isinstance(a, Generation) for a in again)
    assert [a.cached for a in again] == [True, True, False, False]


async def test_a_stop_ends_the_forward_pass_in_flight_between_two_layers(
    tiny_model_dir: Path,
) -> None:
    """One decoding step of a large batch takes seconds on a busy CPU: the cancel flag is also
    checked before every decoder layer, so a stop does not wait for the step to end."""
    config = ModelConfig(backend="transformers", path=str(tiny_model_dir), device="cpu")
    model = TransformersModel(config)
    layers = next(m for m in model.model.modules() if isinstance(m, torch.nn.ModuleList))
    assert len(layers) >= 2
    # After the backend's own check, the first layer takes 0.4 s and the last 3 s.
    first_s, last_s = 0.4, 3.0
    layers[0].register_forward_pre_hook(lambda module, args: time.sleep(first_s))
    layers[-1].register_forward_pre_hook(lambda module, args: time.sleep(last_s))
    activity = Activity()
    metered = MeteredModel(model, activity)
    call = asyncio.create_task(metered.generate([_long_request()]))
    await until(lambda: activity.snapshot().tokens >= 2, "tokens decoded")
    # Cancelled while a step runs its layers: it ends at the next layer's check, before the
    # last layer's 3 s, not after the rest of the step.
    cancelled_at = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert time.monotonic() - cancelled_at < last_s / 2


def test_a_thread_that_ends_after_its_step_was_abandoned_prints_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop's exit does not wait for a model thread to notice its flag; the Cancelled the
    thread raises then is no error to report ("Future exception was never retrieved" and a
    traceback landed in the daemon's log)."""
    import gc
    import threading

    from evoinstruct.models import cancel

    started = threading.Event()

    def work(*, cancel: cancel.CancelFlag) -> str:
        started.set()
        while not cancel.is_set():
            time.sleep(0.01)
        time.sleep(0.3)  # the token in flight: the daemon has left by now
        cancel.check()
        return "never"

    async def daemon() -> None:
        task = asyncio.create_task(cancel.run_in_thread(work))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.05)  # the step is cancelled; the daemon returns at once

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(daemon())  # cancels the step's wait for its thread, joins the thread
        gc.collect()
    assert "never retrieved" not in caplog.text
