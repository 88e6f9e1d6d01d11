"""The OpenAI-compatible backend: vLLM, OpenAI or any server speaking chat completions.

One `AsyncOpenAI` client per endpoint with the SDK's own retries off. Requests
go out over the lean path of `openai_lean` (aiohttp and orjson, a fraction of
the SDK's client CPU, raising the SDK's own exceptions) wherever it sends what
the SDK would, and through the SDK's transport elsewhere (no aiohttp, a proxy,
or `transport="sdk"`); what follows holds on both. Tenacity retries rate-limit,
timeout, connection and 5xx errors a bounded number of times, waiting what the
server's Retry-After asks or else exponential backoff with jitter. Each
endpoint admits at most `max_concurrency` requests; with several endpoints a
request goes to the one with the fewest in flight. An optional
requests/tokens-per-minute limiter holds new requests back, and after a 429
every request to the model cools down until the server's Retry-After.

Deadlines. httpx's timeout bounds each read (aiohttp's is off), not the answer:
a server that drips one byte a second never trips it. So every attempt runs
under its own `timeout_s` deadline (a complete answer, or a "timeout" failure),
and every call under a total deadline, `call_deadline_s` = timeout_s x
(max_retries + 1) + backoff_max_s x max_retries, counted from its first
attempt: a retry whose wait would end past it is not made, and the last attempt
gets only what is left.
Event loops. A model outlives `asyncio.run` (the CLI runs one after another, and so does
a notebook), while a semaphore and an HTTP connection pool belong to the loop that first
used them: the request gate and the SDK's clients are made per running loop (`PerLoop`),
as the lean transport's session is.
Time a request spends queued for a free slot before its first attempt is not
counted (a batch of 100 at concurrency 4 queues by design); it is bounded by
the deadlines of the calls ahead of it.

The API key is read from the environment variable the config names, handed to
the clients and nowhere else: it is not an attribute of the model, not in its
repr, and scrubbed — with any fragment of it of 8 characters or more a server
echoes — from failure messages and from the answers' text, before either can
reach the store, a log or an export.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai
from tenacity import AsyncRetrying, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from evoinstruct.models.base import (
    CONNECTION_DROPPED,
    CONNECTION_UNREACHABLE,
    ChatRequest,
    Choice,
    Failure,
    FailureKind,
    Generation,
    Result,
)
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.per_loop import PerLoop
from evoinstruct.models.sdk_tls import sdk_ssl_context
from evoinstruct.models.secret import Secret
from evoinstruct.store.errors import ModelError, UnsupportedError

try:
    from evoinstruct.models import openai_lean
except ImportError:  # no aiohttp or orjson: every endpoint takes the SDK's own transport
    openai_lean = None  # type: ignore[assignment]


@dataclass
class _Gate:
    """A loop's admission to the model: the slots of the summed capacity, and the requests
    each endpoint has in flight (counted per loop too: a loop closed with requests still in
    flight leaves its counts behind with it)."""

    slots: asyncio.Semaphore
    in_flight: list[int]


class AttemptTimeout(Exception):
    """An attempt with no complete answer by its deadline (`timeout_s`, or what is left of the
    call's total deadline): however the server trickled, the attempt is over."""


# Transient errors worth another attempt; everything else fails at once.
RETRYABLE = (
    openai.RateLimitError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.InternalServerError,
    AttemptTimeout,
)


def call_deadline_s(timeout_s: float, max_retries: int, backoff_max_s: float) -> float:
    """A call's total deadline: every attempt its full timeout, every retry its longest backoff."""
    return timeout_s * (max_retries + 1) + backoff_max_s * max_retries


def _dropped_errors() -> tuple[type[BaseException], ...]:
    """Transport errors raised after the server accepted the connection (a read or write on it
    failed, or it closed before a complete answer), from whichever httpx the SDK runs on."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for error in ("ReadError", "WriteError", "CloseError", "RemoteProtocolError"):
            if isinstance(kind := getattr(module, error, None), type):
                found.append(kind)
    return tuple(found)


DROPPED_ERRORS = _dropped_errors() + (openai_lean.DROPPED if openai_lean else ())
# Under DROPPED_ERRORS (aiohttp's errors share one base class) but raised before the server
# had the connection.
UNREACHABLE_ERRORS = openai_lean.UNREACHABLE if openai_lean else ()


def _dropped(exc: BaseException) -> bool:
    return isinstance(exc, DROPPED_ERRORS) and not isinstance(exc, UNREACHABLE_ERRORS)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from, outermost first (the SDK wraps the httpx error)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def api_key_from_env(cfg: ModelConfig, env: Mapping[str, str] | None = None) -> str:
    """The key from the variable `cfg.api_key_env` names; local servers without one get a dummy."""
    env = os.environ if env is None else env
    if not cfg.api_key_env:
        # vLLM and most local servers ignore the key; the SDK insists on one.
        return "EMPTY"
    key = env.get(cfg.api_key_env)
    if not key:
        raise ModelError(
            f"the environment variable {cfg.api_key_env} (api_key_env of model "
            f"{cfg.model!r}) is not set"
        )
    return key


def retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms headers), if it did."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def failure_kind(exc: BaseException) -> FailureKind:
    """Which kind of Failure an exception from the SDK becomes (the order matters: subclasses first)."""
    table: list[tuple[type[BaseException] | tuple[type[BaseException], ...], FailureKind]] = [
        (AttemptTimeout, "timeout"),
        (openai.RateLimitError, "rate_limit"),
        (openai.APITimeoutError, "timeout"),
        (openai.APIConnectionError, "connection"),
        (openai.InternalServerError, "server"),
        ((openai.AuthenticationError, openai.PermissionDeniedError), "auth"),
        (openai.NotFoundError, "not_found"),
        ((openai.BadRequestError, openai.UnprocessableEntityError), "bad_request"),
        ((openai.APIResponseValidationError, ValueError), "malformed"),
    ]
    for types, kind in table:
        if isinstance(exc, types):
            return kind
    return "other"


def failure_detail(exc: BaseException) -> str | None:
    """For a connection failure: `CONNECTION_DROPPED` when the server accepted the connection
    and it broke mid-exchange (a dropped or truncated response), else `CONNECTION_UNREACHABLE`."""
    if failure_kind(exc) != "connection":
        return None
    if any(_dropped(e) for e in _causes(exc)):
        return CONNECTION_DROPPED
    return CONNECTION_UNREACHABLE


def failure_message(exc: BaseException) -> str:
    """The error in one line, with the transport error under the SDK's bare "Connection error."."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, openai.APIConnectionError) and exc.__cause__ is not None:
        cause = exc.__cause__
        message += f" ({type(cause).__name__}: {cause or 'no detail'})"
    if failure_detail(exc) == CONNECTION_DROPPED:
        message = f"the connection broke before a complete answer: {message}"
    return message


def request_kwargs(model: str, request: ChatRequest) -> dict[str, Any]:
    """The chat-completions body for one request (only what the request sets)."""
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [dict(m) for m in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "n": request.n,
    }
    if request.stop:
        kwargs["stop"] = list(request.stop)
    if request.seed is not None:
        kwargs["seed"] = request.seed
    if request.presence_penalty is not None:
        kwargs["presence_penalty"] = request.presence_penalty
    if request.json_schema is not None:
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", str(request.json_schema.get("title", "output")))
        kwargs["response_format"] = {
            "type": "json_schema",
            # strict=False: arbitrary pydantic schemas need not meet OpenAI's strict subset.
            "json_schema": {"name": name[:64], "schema": request.json_schema, "strict": False},
        }
    return kwargs


class MalformedResponse(ValueError):
    """A 200 answer that is not a chat completion with text in every choice."""


def parse_completion(data: Any, latency_s: float) -> Generation:
    """A chat-completions JSON body as a Generation; MalformedResponse if it is not one."""
    try:
        choices = [
            Choice(c["message"]["content"], c.get("finish_reason") or "") for c in data["choices"]
        ]
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedResponse(f"not a chat completion: {str(data)[:200]}") from exc
    if not choices or not all(isinstance(c.text, str) for c in choices):
        # A refusal or a tool call carries no text; an empty string is not passed on as data.
        raise MalformedResponse("the server answered without message text (refusal or tool call)")
    return Generation(choices, prompt_tokens, completion_tokens, latency_s)


def estimate_tokens(request: ChatRequest) -> int:
    """A cheap upper-ish token estimate for the tokens-per-minute budget (4 chars a token)."""
    chars = sum(len(m.get("content", "")) for m in request.messages)
    return chars // 4 + 1 + request.max_tokens * request.n


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class RateLimiter:
    """Requests- and tokens-per-minute buckets plus a cool-down after a 429.

    `clock` (seconds, monotonic) and `sleep` are how it tells and waits out time; a test
    hands it a fake pair so the pacing is exact and takes no real time.
    """

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._clock, self._sleep = clock, sleep
        self._requests = float(rpm or 0)
        self._tokens = float(tpm or 0)
        self._last = clock()
        self._resume_at = 0.0

    def _refill(self, now: float) -> None:
        elapsed, self._last = now - self._last, now
        if self.rpm:
            self._requests = min(self.rpm, self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(self.tpm, self._tokens + elapsed * self.tpm / 60)

    def _wait_for(self, tokens: int) -> float:
        now = self._clock()
        self._refill(now)
        waits = [self._resume_at - now]
        if self.rpm:
            waits.append((1 - self._requests) * 60 / self.rpm)
        if self.tpm:
            waits.append((min(tokens, self.tpm) - self._tokens) * 60 / self.tpm)
        return max(waits)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about `tokens` tokens fits, then take it from the buckets."""
        while (wait := self._wait_for(tokens)) > 0:
            await self._sleep(wait)
        if self.rpm:
            self._requests -= 1
        if self.tpm:
            self._tokens -= min(tokens, self.tpm)

    def settle(self, estimated: int, actual: int) -> None:
        """Give back (or charge) the difference between the estimate and the real usage."""
        if self.tpm:
            self._tokens = min(self.tpm, self._tokens + min(estimated, self.tpm) - actual)

    def cool_down(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, self._clock() + seconds)


@dataclass
class _Call:
    """One call's deadline (set when its first attempt is sent) and whether it ran out."""

    deadline: float | None = None
    out_of_time: bool = False


# httpcore's pool scans all its connections on every request and response, so one
# pool of 64 connections costs more client CPU than eight pools of eight.
CONNECTIONS_PER_POOL = 8

# "auto": the lean aiohttp path wherever it sends what the SDK would (openai_lean.covers),
# the SDK's own transport elsewhere; "sdk": the SDK's transport everywhere.
Transport = Literal["auto", "sdk"]


class _Endpoint:
    """One base URL: the lean transport or a few SDK clients (connection pools)."""

    def __init__(self, url: str, key: str, cfg: ModelConfig, transport: Transport) -> None:
        self.url = url

        def client(http_client: Any = None) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(
                base_url=url,
                api_key=key,
                max_retries=0,
                timeout=cfg.timeout_s,
                http_client=http_client,
            )

        self._sdk = client()
        trust = sdk_ssl_context(self._sdk)
        self.lean: openai_lean.LeanTransport | None = None
        pools = -(-cfg.max_concurrency // CONNECTIONS_PER_POOL)
        initial: list[openai.AsyncOpenAI] = []
        if transport == "auto" and openai_lean is not None and openai_lean.covers(self._sdk):
            # The SDK client stays: it names the URL and headers and builds the status errors.
            self.lean = openai_lean.LeanTransport(
                self._sdk, connections=cfg.max_concurrency, trust=trust
            )
            pools = 0
        else:
            initial = [self._sdk] + [client() for _ in range(pools - 1)]

        def later_loop_pools() -> tuple[list[openai.AsyncOpenAI], list[int]]:
            # The SDK's own defaults, but the TLS trust the model was built with, not today's
            # environment (its proxies are read now, as the SDK would for a new client).
            made = [client(openai.DefaultAsyncHttpxClient(verify=trust)) for _ in range(pools)]
            return made, [0] * pools

        # The SDK's clients (connection pools) of the running loop with their requests in
        # flight: the first loop's are the SDK's own, built here like the lean transport.
        self._pools = PerLoop(later_loop_pools, initial=(initial, [0] * pools))

    @property
    def transport(self) -> str:
        return "sdk" if self.lean is None else "lean"

    def post_chat(self, body: dict[str, Any]) -> Awaitable[Any]:
        """The answer's JSON, once awaited; the SDK's exceptions for whatever went wrong.

        Not a coroutine itself: the lean path has serialised `body` when this returns, so the
        dict dies at once instead of living, and being promoted through the cyclic GC's
        generations, for the whole request. What in-flight requests keep alive is what the
        GC scans: at C=256 it was over half the CPU the lean path spent beyond a bare
        aiohttp client's (measured with gc.callbacks).
        """
        if self.lean is not None:
            return self.lean.post_chat(body)
        return self._post_sdk(body)

    async def _post_sdk(self, body: dict[str, Any]) -> Any:
        clients, in_flight = self._pools.get()
        # The least busy pool; below the endpoint's limit it holds < 8 requests.
        pool = min(range(len(clients)), key=in_flight.__getitem__)
        in_flight[pool] += 1
        try:
            # The SDK's documented generic post skips its per-call TypedDict transform and
            # pydantic construction: ~15% less client CPU per request, measured.
            return await clients[pool].post("/chat/completions", body=body, cast_to=object)
        finally:
            in_flight[pool] -= 1

    async def aclose(self) -> None:
        if self.lean is not None:
            await self.lean.aclose()
            # It opened no connection (the lean session posts): closing it is safe on any loop.
            await self._sdk.close()
        clients, _ = self._pools.take_current() or ([], [])
        for client in clients:
            await client.close()


class OpenAIChatModel:
    """A ChatModel over one or more OpenAI-compatible endpoints serving the same model.

    `clock` and `sleep` pace every wait (the rate limiter, the cool-down after a 429 and
    the pause between retries); a test passes a fake pair. Latencies are measured on the
    real monotonic clock either way.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        env: Mapping[str, str] | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        transport: Transport = "auto",
    ) -> None:
        if not cfg.model or not cfg.endpoints:
            raise ModelError("an OpenAI-compatible model needs `model` and `base_url`(s)")
        key = api_key_from_env(cfg, env)
        self.cfg = cfg
        self.model_id: str = cfg.model
        self.adapter_version: str | None = None
        self.adapter_digest: str | None = None  # set by the hand-off when the files are readable
        self.deadline_s = call_deadline_s(cfg.timeout_s, cfg.max_retries, backoff_max)
        self._clock = clock
        self._secret = Secret(key)
        self._endpoints = [_Endpoint(url, key, cfg, transport) for url in cfg.endpoints]
        # One global gate of the summed capacity: whoever passes finds a free endpoint.
        capacity, count = cfg.max_concurrency * len(self._endpoints), len(self._endpoints)
        self._gate = PerLoop(lambda: _Gate(asyncio.Semaphore(capacity), [0] * count))
        self._limiter = RateLimiter(
            cfg.requests_per_minute,
            cfg.tokens_per_minute,
            clock=clock,
            sleep=asyncio.sleep if sleep is None else sleep,
        )
        # None keeps tenacity's own sleep between retries.
        self._retry_sleep = {} if sleep is None else {"sleep": sleep}
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial, jitter=backoff_initial, max=backoff_max
        )
        self._max_retry_after = max_retry_after

    def __repr__(self) -> str:
        return f"OpenAIChatModel(model={self.model_id!r}, endpoints={[e.url for e in self._endpoints]})"

    @property
    def endpoint_urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    @property
    def transports(self) -> list[str]:
        """Per endpoint, "lean" (aiohttp) or "sdk" (the openai SDK's own transport)."""
        return [e.transport for e in self._endpoints]

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_seconds(exc) if exc is not None else None
        if asked is not None:
            return min(asked, self._max_retry_after)
        return self._backoff(state)

    async def _once(self, request: ChatRequest, call: _Call) -> Generation:
        estimate = estimate_tokens(request)
        gate = self._gate.get()
        async with gate.slots:
            # Inside the slot, so a cool-down also holds back requests already queued.
            await self._limiter.acquire(estimate)
            now = self._clock()
            if call.deadline is None:
                call.deadline = now + self.deadline_s
            budget = min(self.cfg.timeout_s, call.deadline - now)
            if budget <= 0:
                raise AttemptTimeout(f"the call's deadline of {self.deadline_s:g} s has passed")
            index = min(range(len(self._endpoints)), key=gate.in_flight.__getitem__)
            endpoint = self._endpoints[index]
            gate.in_flight[index] += 1
            start = time.monotonic()
            try:
                # httpx's own timeout is per read; this one ends the attempt, trickle or not.
                async with asyncio.timeout(budget):
                    data = await endpoint.post_chat(request_kwargs(self.model_id, request))
            except TimeoutError:
                raise AttemptTimeout(f"no complete answer within {budget:.3g} s") from None
            except openai.RateLimitError as exc:
                asked = retry_after_seconds(exc)
                self._limiter.cool_down(1.0 if asked is None else asked)
                self._limiter.settle(estimate, 0)
                raise
            finally:
                gate.in_flight[index] -= 1
        generation = parse_completion(data, time.monotonic() - start)
        self._limiter.settle(estimate, generation.prompt_tokens + generation.completion_tokens)
        if self._secret.active:
            # Answers become examples, rejections' raw_output, cache rows and exports.
            for choice in generation.choices:
                choice.text = self._secret.scrub(choice.text)
        return generation

    def _stop(self, call: _Call) -> Callable[[Any], bool]:
        """Tenacity's stop: attempts used up, or the wait before the next one ends past the
        call's deadline (a long Retry-After ends the call rather than outliving it)."""

        def stop(state: Any) -> bool:
            if state.attempt_number > self.cfg.max_retries:
                return True
            if call.deadline is not None and self._clock() + state.upcoming_sleep >= call.deadline:
                call.out_of_time = True
                return True
            return False

        return stop

    async def _one(self, request: ChatRequest) -> Result:
        start, call = time.monotonic(), _Call()
        # Most calls succeed at once, and tenacity's per-call state costs ~80 µs of CPU (a
        # third of a whole lean request): it is built only once the first attempt has failed,
        # and is handed that failure as its attempt 1, so every retry is still its decision.
        try:
            return await self._once(request, call)
        except RETRYABLE as exc:
            first: BaseException = exc
        except (openai.OpenAIError, ValueError) as exc:
            return self._failure(exc, call, 1, start)
        attempts = 1
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            stop=self._stop(call),
            wait=self._wait,
            reraise=True,
            **self._retry_sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts == 1:
                        raise first
                    return await self._once(request, call)
        except (openai.OpenAIError, ValueError, AttemptTimeout) as exc:
            return self._failure(exc, call, attempts, start)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _failure(self, exc: BaseException, call: _Call, attempts: int, start: float) -> Failure:
        message = failure_message(exc)
        if call.out_of_time:
            message += f"; not retried: the call's {self.deadline_s:g} s deadline"
        return Failure(
            failure_kind(exc),
            self._secret.scrub(message),
            attempts,
            time.monotonic() - start,
            detail=failure_detail(exc),
        )

    async def generate(self, requests: Sequence[ChatRequest]) -> list[Result]:
        if len(requests) == 1:  # the common one-at-a-time caller needs no extra task
            return [await self._one(requests[0])]
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def loss(
        self, pairs: Sequence[tuple[Sequence[dict[str, str]], str]]
    ) -> list[list[float]]:
        raise UnsupportedError(
            "an OpenAI-compatible server gives no per-token loss; use a transformers model"
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise UnsupportedError(
            "the chat backend has no embeddings; configure a transformers embedder"
        )

    async def option_probs(
        self, prompts: Sequence[Sequence[dict[str, str]]], options: Sequence[str]
    ) -> list[list[float]]:
        raise UnsupportedError("an OpenAI-compatible chat server gives no next-token logits")

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.aclose()
