"""Reach the configured models and size a run: the library behind `evoinstruct models check|bench`.

`check_models` sends one tiny request to each model and explains a failure in
plain words (wrong URL or refused connection, a connection the server dropped
mid-answer, bad key, unknown model name, timeout). `bench_model` sends N requests at concurrency C and measures
requests/s, tokens/s, latency percentiles, failures and the client's own CPU
time per request. Both return data; the CLI prints it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evoinstruct.models.base import (
    CONNECTION_DROPPED,
    ChatModel,
    ChatRequest,
    Failure,
    Generation,
    Result,
    probe,
)
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.factory import build_model
from evoinstruct.store.errors import EvoError
from evoinstruct.store.export.names import model_label


@dataclass
class CheckResult:
    name: str
    backend: str
    model: str
    where: str
    ok: bool
    latency_s: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain(failure: Failure, cfg: ModelConfig) -> str:
    """A failed call in words a user can act on."""
    where = ", ".join(cfg.endpoints) or str(cfg.path)
    detail = failure.message
    if failure.kind == "connection" and failure.detail == CONNECTION_DROPPED:
        # The URL is right (the server accepted the connection): saying "wrong URL" here sends
        # the user hunting in the wrong place.
        return (
            f"the server at {where} accepted the connection but it broke before a complete "
            "answer (a dropped or truncated response): the server crashed or restarted, or a "
            f"proxy or load balancer in between cut it off ({detail})"
        )
    if failure.kind == "connection":
        return f"cannot connect to {where}: wrong URL, or no server listening there ({detail})"
    if failure.kind == "auth":
        key = f"the key in ${cfg.api_key_env}" if cfg.api_key_env else "no API key (api_key_env)"
        return f"the server rejected {key}: bad or missing API key (401/403)"
    if failure.kind == "not_found":
        return (
            f"404 not found: the server does not know the model name {cfg.model!r}, "
            f"or the base URL path is wrong (it usually ends in /v1) ({detail})"
        )
    if failure.kind == "timeout":
        return (
            f"no complete answer within {cfg.timeout_s:g} s (timeout); the server is overloaded, "
            "stuck, or sending its answer too slowly"
        )
    if failure.kind == "rate_limit":
        return f"rate limited (429) after {failure.attempts} attempts"
    if failure.kind == "server":
        return f"the server failed (5xx): {detail}"
    if failure.kind == "malformed":
        return f"the server's answer is not a valid chat completion: {detail}"
    return f"{failure.kind}: {detail}"


def _not_on_disk(cfg: ModelConfig) -> str | None:
    """For an in-process model named by hub id: is it in the local cache? Checking must not
    stall on hub retries (no network here, or a model never downloaded)."""
    if cfg.backend == "openai" or not cfg.path or Path(cfg.path).expanduser().is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(cfg.path, "config.json"), str):
        return None
    return (
        f"{cfg.path} is neither a local directory nor in the Hugging Face cache: "
        f"download it once with `huggingface-cli download {cfg.path}`, or set path to a local copy"
    )


def _where(cfg: ModelConfig) -> str:
    return ", ".join(cfg.endpoints) if cfg.backend == "openai" else str(cfg.path or cfg.model)


async def check_model(
    name: str, cfg: ModelConfig, *, builder: Callable[..., ChatModel] = build_model
) -> CheckResult:
    """One tiny request (retrying transient errors a few times); never raises for a model
    that cannot be reached."""
    quick = cfg.for_probe()
    label = model_label(cfg.model_dump())
    result = CheckResult(name, cfg.backend, label, _where(cfg), ok=False)
    missing = _not_on_disk(cfg)
    if missing:
        result.error = missing
        return result
    try:
        model = builder(quick)
    except EvoError as exc:
        result.error = str(exc)
        return result
    try:
        start = time.monotonic()
        answer = await probe(model)
        if isinstance(answer, Failure):
            result.error = explain(answer, quick)
        else:
            result.ok, result.latency_s = True, time.monotonic() - start
    finally:
        await model.aclose()
    return result


async def check_models(models: dict[str, ModelConfig]) -> list[CheckResult]:
    """Check every configured model at once."""
    return list(await asyncio.gather(*(check_model(n, c) for n, c in models.items())))


@dataclass
class BenchResult:
    model: str
    requests: int
    concurrency: int
    max_tokens: int
    ok: int
    failures: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    requests_per_s: float = 0.0
    tokens_per_s: float = 0.0
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    client_cpu_ms_per_request: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """p50, p90, p99 (inclusive method); None without data."""
    if not values:
        return None, None, None
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[89], q[98]


def bench_prompt(i: int, max_tokens: int) -> ChatRequest:
    """Distinct short prompts, so a server-side prefix cache cannot flatter the numbers."""
    text = f"Request {i}: write one sentence about the number {i}."
    return ChatRequest([{"role": "user", "content": text}], temperature=0.7, max_tokens=max_tokens)


async def bench_model(
    cfg: ModelConfig,
    *,
    requests: int,
    concurrency: int,
    max_tokens: int = 128,
    builder: Callable[..., ChatModel] = build_model,
) -> BenchResult:
    """N requests, at most C in flight, no retries and no cache: what the server really does."""
    bench_cfg = cfg.model_copy(update={"max_retries": 0, "max_concurrency": concurrency})
    model = builder(bench_cfg)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Result:
        async with gate:
            (result,) = await model.generate([bench_prompt(i, max_tokens)])
            return result

    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        results = await asyncio.gather(*(one(i) for i in range(requests)))
    finally:
        await model.aclose()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    done = [r for r in results if isinstance(r, Generation)]
    p50, p90, p99 = percentiles(sorted(r.latency_s for r in done))
    return BenchResult(
        model=str(cfg.model or cfg.path),
        requests=requests,
        concurrency=concurrency,
        max_tokens=max_tokens,
        ok=len(done),
        failures=dict(Counter(r.kind for r in results if isinstance(r, Failure))),
        wall_s=wall,
        requests_per_s=len(done) / wall if wall else 0.0,
        tokens_per_s=sum(r.completion_tokens for r in done) / wall if wall else 0.0,
        latency_p50_s=p50,
        latency_p90_s=p90,
        latency_p99_s=p99,
        client_cpu_ms_per_request=1000 * cpu / max(1, requests),
    )
