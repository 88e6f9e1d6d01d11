"""The OpenAI-compatible backend: vLLM, OpenAI or any server speaking chat completions.

One `AsyncOpenAI` client per endpoint with the SDK's own retries off; tenacity
retries rate-limit, timeout, connection and 5xx errors a bounded number of
times, waiting what the server's Retry-After asks or else exponential backoff
with jitter. Each endpoint admits at most `max_concurrency` requests; with
several endpoints a request goes to the one with the fewest in flight. An
optional requests/tokens-per-minute limiter holds new requests back, and after
a 429 every request to the model cools down until the server's Retry-After.

The API key is read from the environment variable the config names, handed to
the clients and nowhere else: it is not an attribute of the model, not in its
repr, and scrubbed from failure messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from evoinstruct.agents.models.base import (
    ChatRequest,
    Choice,
    Failure,
    FailureKind,
    Generation,
    Result,
)
from evoinstruct.agents.models.config import ModelConfig
from evoinstruct.store.errors import ModelError, UnsupportedError

# Transient errors worth another attempt; everything else fails at once.
RETRYABLE = (
    openai.RateLimitError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.InternalServerError,
)


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


class _Secret:
    """Holds the API key only to scrub it from messages; its repr never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "_Secret(***)"

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value != "EMPTY" else text


# httpcore's pool scans all its connections on every request and response, so one
# pool of 64 connections costs more client CPU than eight pools of eight.
CONNECTIONS_PER_POOL = 8


class _Endpoint:
    """One base URL: a few SDK clients (connection pools) and in-flight counts."""

    def __init__(self, url: str, key: str, cfg: ModelConfig) -> None:
        self.url = url
        pools = -(-cfg.max_concurrency // CONNECTIONS_PER_POOL)
        self.clients = [
            openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=cfg.timeout_s)
            for _ in range(pools)
        ]
        self.pool_in_flight = [0] * pools
        self.in_flight = 0

    def take(self) -> int:
        """Reserve the least busy pool; below the endpoint's limit it holds < 8 requests."""
        pool = min(range(len(self.clients)), key=self.pool_in_flight.__getitem__)
        self.pool_in_flight[pool] += 1
        self.in_flight += 1
        return pool

    def release(self, pool: int) -> None:
        self.pool_in_flight[pool] -= 1
        self.in_flight -= 1


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
    ) -> None:
        if not cfg.model or not cfg.endpoints:
            raise ModelError("an OpenAI-compatible model needs `model` and `base_url`(s)")
        key = api_key_from_env(cfg, env)
        self.cfg = cfg
        self.model_id: str = cfg.model
        self.adapter_version: str | None = None
        self._secret = _Secret(key)
        self._endpoints = [_Endpoint(url, key, cfg) for url in cfg.endpoints]
        # One global gate of the summed capacity: whoever passes finds a free endpoint.
        self._slots = asyncio.Semaphore(cfg.max_concurrency * len(self._endpoints))
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

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_seconds(exc) if exc is not None else None
        if asked is not None:
            return min(asked, self._max_retry_after)
        return self._backoff(state)

    async def _once(self, request: ChatRequest) -> Generation:
        estimate = estimate_tokens(request)
        async with self._slots:
            # Inside the slot, so a cool-down also holds back requests already queued.
            await self._limiter.acquire(estimate)
            endpoint = min(self._endpoints, key=lambda e: e.in_flight)
            pool = endpoint.take()
            start = time.monotonic()
            try:
                # The SDK's documented generic post skips its per-call TypedDict transform
                # and pydantic construction: ~15% less client CPU per request, measured.
                data = await endpoint.clients[pool].post(
                    "/chat/completions", body=request_kwargs(self.model_id, request), cast_to=object
                )
            except openai.RateLimitError as exc:
                asked = retry_after_seconds(exc)
                self._limiter.cool_down(1.0 if asked is None else asked)
                self._limiter.settle(estimate, 0)
                raise
            finally:
                endpoint.release(pool)
        generation = parse_completion(data, time.monotonic() - start)
        self._limiter.settle(estimate, generation.prompt_tokens + generation.completion_tokens)
        return generation

    async def _one(self, request: ChatRequest) -> Result:
        start, attempts = time.monotonic(), 0
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            stop=stop_after_attempt(self.cfg.max_retries + 1),
            wait=self._wait,
            reraise=True,
            **self._retry_sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return await self._once(request)
        except (openai.OpenAIError, ValueError) as exc:
            message = self._secret.scrub(f"{type(exc).__name__}: {exc}")
            return Failure(failure_kind(exc), message, attempts, time.monotonic() - start)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

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
            for client in endpoint.clients:
                await client.close()
