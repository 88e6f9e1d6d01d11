"""The OpenAI-compatible backend against a real loopback HTTP server with injected faults."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, Field

from evoinstruct.models import openai_backend
from evoinstruct.models.base import (
    CONNECTION_DROPPED,
    CONNECTION_UNREACHABLE,
    ChatModel,
    ChatRequest,
    Failure,
    Generation,
)
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.openai_backend import (
    MalformedResponse,
    OpenAIChatModel,
    RateLimiter,
    parse_completion,
    retry_after_seconds,
)
from evoinstruct.models.structured import (
    Parsed,
    SchemaFailure,
    generate_structured,
    parse_json_as,
)
from evoinstruct.models.vllm_backend import VLLMModel, load_lora_adapter, sampling_kwargs
from evoinstruct.store.errors import ModelError, UnsupportedError
from tests.openai_server import OpenAITestServer, closed_port, eventually


@pytest.fixture(params=["lean", "sdk"], autouse=True)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both paths: the lean aiohttp one, and the SDK's own transport, which is
    what every endpoint takes when aiohttp is missing (as here, for the "sdk" runs)."""
    if request.param == "sdk":
        monkeypatch.setattr(openai_backend, "openai_lean", None)
    return request.param


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as s:
        yield s


class FakeClock:
    """Virtual seconds for the backend's waits: `sleep` notes what was asked and moves the
    clock on at once, so a test asserts the exact pacing and spends no real time on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        # Time moves on while sleeping, as a real clock's does: a wait of 1e-17 s (rounding
        # in the limiter's buckets) must not leave `now` where it was, or the wait repeats.
        self.now = max(self.now + max(0.0, seconds), math.nextafter(self.now, math.inf))
        await asyncio.sleep(0)  # still a point where other tasks run, as a real sleep is


def _cfg(*urls: str, **kw) -> ModelConfig:
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout_s", 5.0)
    return ModelConfig(backend="openai", base_urls=list(urls), model="tiny", **kw)


def _model(*urls: str, clock: FakeClock | None = None, **kw) -> OpenAIChatModel:
    # A tiny backoff so a test sees the difference between backoff and Retry-After.
    waits = {} if clock is None else {"clock": clock, "sleep": clock.sleep}
    return OpenAIChatModel(_cfg(*urls, **kw), backoff_initial=0.01, backoff_max=0.05, **waits)


def _ask(text: str = "你好，世界", **kw) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], **kw)


async def test_answers_with_text_usage_and_latency(
    server: OpenAITestServer, transport: str
) -> None:
    model = _model(server.url)
    assert isinstance(model, ChatModel) and model.transports == [transport]
    results = await model.generate(
        [
            _ask("alpha beta STOP gamma", stop=("STOP",), n=2, seed=3, presence_penalty=0.5),
            _ask("one two three four five six", max_tokens=3),
        ]
    )
    first, second = results
    assert isinstance(first, Generation) and isinstance(second, Generation)
    assert [c.text for c in first.choices] == ["reply 0: alpha beta ", "reply 1: alpha beta "]
    assert first.finish_reason == "stop" and first.latency_s > 0
    assert first.prompt_tokens == 4 and first.completion_tokens == 8
    assert second.truncated and second.text == "reply 0: one"
    body = next(b for b in server.bodies if b["n"] == 2)
    assert body["seed"] == 3 and body["presence_penalty"] == 0.5 and body["n"] == 2
    assert body["stop"] == ["STOP"] and "response_format" not in body
    await model.aclose()


async def test_retries_429_honouring_retry_after(server: OpenAITestServer) -> None:
    clock = FakeClock()
    server.clock = clock  # the server stamps arrivals in the client's virtual seconds
    server.inject("429", times=2, retry_after=0.3)
    model = _model(server.url, clock=clock)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Generation)
    assert server.requests == 3
    assert clock.sleeps == [0.3, 0.3]  # what the server asked; the backoff alone is 0.01-0.05
    assert server.arrivals == pytest.approx([0.0, 0.3, 0.6])
    await model.aclose()


async def test_cool_down_after_429_holds_back_queued_requests(server: OpenAITestServer) -> None:
    clock = FakeClock()
    server.clock = clock
    server.inject("429", retry_after=0.4)
    # No retries: the only wait left is the cool-down, so whatever holds b and c back is it.
    model = _model(server.url, max_concurrency=1, max_retries=0, clock=clock)
    a, b, c = await model.generate([_ask("a"), _ask("b"), _ask("c")])
    assert isinstance(a, Failure) and a.kind == "rate_limit"
    assert isinstance(b, Generation) and isinstance(c, Generation)
    assert clock.sleeps == [0.4]  # b, queued, waited out the Retry-After; c queued behind b
    assert server.arrivals == [0.0, 0.4, 0.4]
    await model.aclose()


async def test_retries_5xx_and_dropped_connections(server: OpenAITestServer) -> None:
    server.inject("500")
    server.inject("drop")
    server.inject("500")
    model = _model(server.url)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Generation) and server.requests == 4
    await model.aclose()


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("500", "server"),
        ("drop", "connection"),
        ("truncated", "connection"),
        ("429", "rate_limit"),
        ("garbage", "malformed"),
    ],
)
async def test_retries_are_bounded(server: OpenAITestServer, fault, kind) -> None:
    server.inject(fault, times=10, retry_after=0.01)
    model = _model(server.url, max_retries=2)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == kind
    retried = kind != "malformed"  # an answer that is not a chat completion is not retried
    assert result.attempts == server.requests == (3 if retried else 1)
    await model.aclose()


@pytest.mark.parametrize("fault", ["drop", "truncated"])
async def test_a_connection_broken_mid_answer_is_not_an_unreachable_server(
    server: OpenAITestServer, fault: str
) -> None:
    """The server accepted the request, then the connection broke (no answer at all, or half
    a body): a dropped connection, not a wrong URL."""
    server.inject(fault)
    model = _model(server.url, max_retries=0)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "connection"
    assert result.detail == CONNECTION_DROPPED and "broke" in result.message
    refused = _model(f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    (result,) = await refused.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "connection"
    assert result.detail == CONNECTION_UNREACHABLE and "broke" not in result.message
    await model.aclose()
    await refused.aclose()


async def test_a_hang_times_out_and_is_retried(server: OpenAITestServer) -> None:
    # A hung request would be answered after 60 s: a client without a working timeout gets a
    # Generation (or runs into pytest's timeout), never a timeout Failure. How fast the
    # timeout fired is not the point; the 1 s only has to cover one real loopback answer.
    server.inject("hang", times=2, delay=60)
    model = _model(server.url, timeout_s=1.0, max_retries=1)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "timeout" and result.attempts == 2
    assert server.requests == 2
    server.inject("hang", delay=60)
    (result,) = await model.generate([_ask()])  # one hang, then an answer
    assert isinstance(result, Generation) and server.requests == 4
    await model.aclose()


@pytest.mark.parametrize(
    ("fault", "kind"), [("malformed", "malformed"), ("401", "auth"), ("404", "not_found")]
)
async def test_permanent_errors_fail_without_retry(server: OpenAITestServer, fault, kind) -> None:
    server.inject(fault)
    model = _model(server.url)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == kind
    assert result.attempts == 1 and server.requests == 1 and result.message
    await model.aclose()


async def test_a_drip_is_cut_at_the_attempt_deadline(server: OpenAITestServer) -> None:
    """Headers at once, then a byte every half second: httpx's per-read timeout of 1 s never
    fires, and the whole answer would take minutes. The attempt's own deadline ends it."""
    server.inject("drip", delay=0.5)
    model = _model(server.url, timeout_s=1.0, max_retries=0)
    async with asyncio.timeout(30):  # hang guard only: a call without a deadline runs minutes
        (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "timeout" and result.attempts == 1
    assert server.faults_served["drip"] == 1
    await model.aclose()


async def test_a_call_ends_within_its_total_deadline(server: OpenAITestServer) -> None:
    # Every attempt drips: each is cut at its deadline, and the call gives up after its retries.
    server.inject("drip", times=3, delay=0.5)
    model = _model(server.url, timeout_s=1.0, max_retries=2)
    assert model.deadline_s == pytest.approx(3 * 1.0 + 2 * 0.05)
    async with asyncio.timeout(30):  # hang guard
        (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "timeout" and result.attempts == 3
    await model.aclose()

    # A Retry-After that would end past the deadline is not waited for: the call fails now.
    clock = FakeClock()
    server.inject("429", retry_after=60)
    model = _model(server.url, timeout_s=1.0, max_retries=3, clock=clock)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "rate_limit" and result.attempts == 1
    assert clock.sleeps == [] and "deadline" in result.message
    await model.aclose()
    # One that fits is honoured, as before (a fresh model: the first one now cools down 60 s).
    clock = FakeClock()
    server.inject("429", retry_after=2)
    model = _model(server.url, timeout_s=1.0, max_retries=3, clock=clock)
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Generation) and clock.sleeps == [2]
    await model.aclose()


async def test_unknown_model_and_refused_connection(server: OpenAITestServer) -> None:
    model = OpenAIChatModel(
        ModelConfig(backend="openai", base_url=server.url, model="no-such-model", max_retries=0)
    )
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "not_found"
    assert "no-such-model" in result.message
    refused = _model(f"http://127.0.0.1:{closed_port()}/v1", max_retries=1)
    (result,) = await refused.generate([_ask()])
    assert isinstance(result, Failure) and result.kind == "connection" and result.attempts == 2
    await model.aclose()
    await refused.aclose()


async def test_concurrency_limit_is_never_exceeded(server: OpenAITestServer) -> None:
    model = _model(server.url, max_concurrency=4)
    server.pause()  # the server holds what arrives: the client fills its slots, then must wait
    task = asyncio.create_task(model.generate([_ask(f"q{i}") for i in range(40)]))
    await eventually(lambda: server.in_flight == 4, "the client to fill its 4 slots")
    server.resume()
    results = await task
    assert all(isinstance(r, Generation) for r in results)
    assert server.max_in_flight == 4 and server.requests == 40  # reached, never exceeded
    assert [r.text for r in results] == [f"reply 0: q{i}" for i in range(40)]
    await model.aclose()


async def test_several_endpoints_least_in_flight() -> None:
    with OpenAITestServer() as busy, OpenAITestServer() as free:
        model = _model(busy.url, free.url, max_concurrency=2)
        busy.pause()  # what reaches `busy` stays in flight until the rest is done
        task = asyncio.create_task(model.generate([_ask(f"q{i}") for i in range(40)]))
        await eventually(lambda: free.requests == 38, "the free endpoint to take the rest")
        # Ties go to the first endpoint, so `busy` got two before it was full; nothing since.
        assert busy.requests == busy.in_flight == 2
        busy.resume()
        results = await task
        assert all(isinstance(r, Generation) for r in results)
        # Reached on the held endpoint, never exceeded anywhere (how many of the free one's
        # instant answers overlap depends on scheduling, not on the client).
        assert busy.max_in_flight == 2 and free.max_in_flight <= 2
        assert (busy.requests, free.requests) == (2, 38)
        await model.aclose()


async def test_equal_endpoints_share_the_load() -> None:
    with OpenAITestServer() as a, OpenAITestServer() as b:
        model = _model(a.url, b.url, max_concurrency=3)
        a.pause()
        b.pause()
        spread = asyncio.create_task(model.generate([_ask(f"q{i}") for i in range(30)]))
        await eventually(lambda: a.in_flight + b.in_flight == 6, "both endpoints to fill up")
        assert a.in_flight == b.in_flight == 3  # equal endpoints share the load evenly
        a.resume()
        b.resume()
        results = await spread
        assert all(isinstance(r, Generation) for r in results)
        assert a.max_in_flight == b.max_in_flight == 3 and a.requests + b.requests == 30
        await model.aclose()


async def test_api_key_reaches_the_server_but_nothing_else(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-Zq9SECRETvalue"
    monkeypatch.setenv("EVO_TEST_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx2", "httpcore", "httpcore2", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    with OpenAITestServer(api_key=secret) as server:
        model = _model(server.url, api_key_env="EVO_TEST_API_KEY")
        (ok,) = await model.generate([_ask()])
        assert isinstance(ok, Generation)  # the server checked the bearer token
        server.inject("500", times=5)
        (failed,) = await model.generate([_ask()])
        assert isinstance(failed, Failure)
        assert secret not in repr(model) and secret not in str(vars(model))
        assert secret not in failed.message and secret not in caplog.text
        await model.aclose()
    with OpenAITestServer(api_key="another-key") as server:
        model = _model(server.url, api_key_env="EVO_TEST_API_KEY")
        (denied,) = await model.generate([_ask()])
        assert isinstance(denied, Failure) and denied.kind == "auth"
        await model.aclose()
    monkeypatch.delenv("EVO_TEST_API_KEY")
    with pytest.raises(ModelError, match="EVO_TEST_API_KEY"):
        _model("http://127.0.0.1:1/v1", api_key_env="EVO_TEST_API_KEY")


async def test_loss_and_embed_are_unsupported(server: OpenAITestServer) -> None:
    model = _model(server.url)
    with pytest.raises(UnsupportedError):
        await model.loss([([], "x")])
    with pytest.raises(UnsupportedError):
        await model.embed(["x"])
    with pytest.raises(UnsupportedError):
        await model.option_probs([[]], ["1"])
    await model.aclose()


def test_retry_after_parsing() -> None:
    class Exc(Exception):
        def __init__(self, headers: dict[str, str]) -> None:
            self.response = type("R", (), {"headers": headers})()

    assert retry_after_seconds(Exc({"retry-after": "2.5"})) == 2.5
    assert retry_after_seconds(Exc({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert retry_after_seconds(Exc({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after_seconds(Exc({"retry-after": "soon"})) is None
    assert retry_after_seconds(Exc({})) is None
    assert retry_after_seconds(ValueError()) is None


def test_parse_completion_accepts_only_chat_completions_with_text() -> None:
    good = {
        "choices": [{"message": {"content": "好"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    generation = parse_completion(good, 0.5)
    assert (generation.text, generation.truncated, generation.prompt_tokens) == ("好", True, 3)
    no_usage = parse_completion({"choices": [{"message": {"content": ""}}]}, 0.1)
    assert no_usage.text == "" and no_usage.completion_tokens == 0
    for bad in (
        {"choices": []},
        {"choices": [{"message": {"content": None, "refusal": "no"}}]},
        {"id": "x"},
        ["not", "a", "dict"],
        None,
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many"}},
    ):
        with pytest.raises(MalformedResponse):
            parse_completion(bad, 0.1)


async def test_rate_limiter_paces_requests_and_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=1200, tpm=None, clock=clock, sleep=clock.sleep)  # 20 a second
    admitted = []
    for _ in range(1210):
        await limiter.acquire(1)
        admitted.append(clock.now)
    # A full bucket lets 1200 through at once, then one request every 1/20 s.
    assert admitted[:1200] == [0.0] * 1200 and clock.sleeps[0] == pytest.approx(0.05)
    assert admitted[1200:] == pytest.approx([0.05 * k for k in range(1, 11)])
    assert sum(clock.sleeps) == pytest.approx(0.5) and max(clock.sleeps) <= 0.05 + 1e-9

    clock = FakeClock()
    tokens = RateLimiter(rpm=None, tpm=600, clock=clock, sleep=clock.sleep)  # 10 tokens a second
    await tokens.acquire(600)
    assert clock.sleeps == []
    await tokens.acquire(5)
    assert clock.sleeps == [0.5]  # 5 tokens at 10 a second
    tokens.settle(estimated=600, actual=100)  # the estimate was high: 500 come back
    await tokens.acquire(400)
    assert clock.sleeps == [0.5]  # fits at once
    tokens.cool_down(0.3)
    await tokens.acquire(1)  # tokens to spare, but the cool-down holds it back
    assert clock.sleeps == pytest.approx([0.5, 0.3]) and clock.now == pytest.approx(0.8)


# -- structured output ---------------------------------------------------------


class Verdict(BaseModel):
    score: int = Field(ge=0, le=5)
    reason: str


async def test_structured_output_over_http(server: OpenAITestServer) -> None:
    model = _model(server.url)
    (parsed,) = await generate_structured(model, [_ask("评分")], Verdict)
    assert isinstance(parsed, Parsed) and parsed.value == Verdict(score=0, reason="示例 example")
    fmt = server.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Verdict"
    assert fmt["json_schema"]["schema"]["properties"]["score"]["maximum"] == 5
    await model.aclose()


async def test_schema_violations_become_schema_failures() -> None:
    # Keyed by prompt: the three requests run concurrently and arrive in any order.
    replies = {
        "a": '{"score": 9, "reason": "too high"}',
        "b": "not json at all",
        "c": '{"score": 4',
    }

    class IgnoresFormat(OpenAITestServer):  # a server that ignores response_format
        def _choice_text(self, body, index):
            return replies[body["messages"][-1]["content"]]

    with IgnoresFormat() as server:
        model = _model(server.url)
        results = await generate_structured(
            model, [_ask("a"), _ask("b"), _ask("c", max_tokens=2)], Verdict
        )
        assert all(isinstance(r, SchemaFailure) and r.kind == "schema" for r in results)
        assert results[0].raw_output == '{"score": 9, "reason": "too high"}'
        assert "score" in results[0].message
        server.inject("500", times=10)
        (failed,) = await generate_structured(
            _model(server.url, max_retries=0), [_ask("a")], Verdict
        )
        assert isinstance(failed, Failure) and failed.kind == "server"
        await model.aclose()


@pytest.mark.parametrize(
    "text",
    [
        '{"score": 3, "reason": "ok"}',
        '```json\n{"score": 3, "reason": "ok"}\n```',
        'Here you go: {"score": 3, "reason": "ok"} Hope it helps.',
    ],
)
def test_parse_json_as_tolerates_fences_and_prose(text: str) -> None:
    assert parse_json_as(Verdict, text) == Verdict(score=3, reason="ok")


# -- vLLM ----------------------------------------------------------------------


async def test_load_lora_adapter_hot_loads_and_is_idempotent(server: OpenAITestServer) -> None:
    await load_lora_adapter(server.url, "student-3", "/models/student-3")
    assert server.lora_adapters == {"student-3": "/models/student-3"}
    await load_lora_adapter(server.url, "student-3", "/models/student-3")  # already there: fine
    model = OpenAIChatModel(
        ModelConfig(backend="openai", base_url=server.url, model="student-3", max_retries=0)
    )
    (result,) = await model.generate([_ask()])
    assert isinstance(result, Generation)  # requests can now name the adapter as their model
    assert server.bodies[-1]["model"] == "student-3"
    await model.aclose()


async def test_load_lora_adapter_reports_errors() -> None:
    with pytest.raises(ModelError, match="cannot reach"):
        await load_lora_adapter(f"http://127.0.0.1:{closed_port()}/v1", "s", "/p", timeout_s=2)
    with OpenAITestServer(api_key="k") as server, pytest.raises(ModelError, match="401"):
        await load_lora_adapter(server.url, "s", "/p")


async def test_load_lora_adapter_refusal_never_repeats_the_key(monkeypatch) -> None:
    key = "sk-proj-Zq81xVbT0aLw55mHc2pRr9"
    monkeypatch.setenv("EVO_TEST_VLLM_KEY", key)
    with OpenAITestServer(api_key="other") as server, pytest.raises(ModelError) as caught:
        await load_lora_adapter(server.url, "s", "/p", api_key_env="EVO_TEST_VLLM_KEY")
    message = str(caught.value)
    assert "401" in message and "***" in message
    assert key not in message and key[5:20] not in message


def test_vllm_sampling_parameters() -> None:
    request = ChatRequest(
        [{"role": "user", "content": "x"}],
        temperature=0.0,
        max_tokens=7,
        n=2,
        seed=5,
        stop=("###",),
        presence_penalty=0.3,
        json_schema=Verdict.model_json_schema(),
    )
    kwargs = sampling_kwargs(request)
    assert kwargs["max_tokens"] == 7 and kwargs["n"] == 2 and kwargs["seed"] == 5
    assert kwargs["stop"] == ["###"] and kwargs["presence_penalty"] == 0.3
    assert kwargs["structured_outputs"] == {"json": Verdict.model_json_schema()}
    plain = sampling_kwargs(_ask())
    assert plain["stop"] is None and "structured_outputs" not in plain
    assert "presence_penalty" not in plain


def test_vllm_missing_is_a_clear_error() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match=r"pip install 'evoinstruct\[vllm\]'"):
            VLLMModel(ModelConfig(backend="vllm", path="/models/x"))
    else:
        pytest.skip("vllm is installed: the missing-package error cannot be shown")


async def test_many_requests_keep_order_under_load(server: OpenAITestServer) -> None:
    model = _model(server.url, max_concurrency=8)
    requests = [_ask(f"第{i}个") for i in range(100)]
    results = await model.generate(requests)  # pytest's timeout guards a hang
    assert [r.text for r in results] == [f"reply 0: 第{i}个" for i in range(100)]
    await model.aclose()


def test_a_loop_closed_with_requests_in_flight_leaves_no_load_behind() -> None:
    """A loop closed while requests wait on a server (as after an interrupted
    run_until_complete: its tasks never finish) must not count them against an endpoint in
    the next loop, whose requests then crowd the other endpoint past its limit."""
    with OpenAITestServer() as a, OpenAITestServer() as b:
        model = _model(a.url, b.url, max_concurrency=2, max_retries=0)
        a.pause()  # b answers at once: the closed loop leaves two requests on a, none on b
        loop = asyncio.new_event_loop()
        # Kept referenced, so its requests stay in flight for good, as a dead loop's do.
        abandoned = loop.create_task(model.generate([_ask(f"held {i}") for i in range(4)]))
        loop.run_until_complete(
            eventually(lambda: a.in_flight == 2 and b.requests == 2, "a to hold two")
        )
        loop.close()
        a.resume()
        b.pause()
        a.pause()

        async def spread() -> list[object]:
            asks = asyncio.create_task(model.generate([_ask(f"q{i}") for i in range(4)]))
            await eventually(lambda: a.in_flight + b.in_flight == 4, "four requests held")
            held = [a.in_flight, b.in_flight]
            a.resume()
            b.resume()
            results = await asks
            await model.aclose()
            return [held, results]

        held, results = asyncio.run(spread())
        assert held == [2, 2] and not abandoned.done()
        assert all(isinstance(r, Generation) for r in results), results


def test_two_running_loops_cannot_share_a_model() -> None:
    """Threads, each with a loop, would each get a gate of the full capacity: refused with
    a message that says what to do, not silently run over the server's limit."""
    import threading

    with OpenAITestServer() as server:
        model = _model(server.url, max_concurrency=2, max_retries=0)
        server.pause()
        started = threading.Event()

        def hold() -> None:
            async def main() -> None:
                asks = asyncio.create_task(model.generate([_ask("held")]))
                await eventually(lambda: server.in_flight == 1, "the request held")
                started.set()
                await asks
                await model.aclose()

            asyncio.run(main())

        thread = threading.Thread(target=hold)
        thread.start()
        assert started.wait(60)
        try:
            with pytest.raises(RuntimeError, match="another running event loop"):
                asyncio.run(model.generate([_ask("second")]))
        finally:
            server.resume()
            thread.join(60)
        assert server.requests == 1
