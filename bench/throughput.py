"""Does the OpenAI backend keep a server busy? Three clients side by side, in one run.

A loopback chat-completions server (in its own process, so its CPU is not
counted as a client's) answers every request after a fixed delay L with
unlimited parallelism; a perfect client with C requests in flight achieves C/L
requests/s. N requests go through each client in turn, against the same server:

- evoinstruct: the OpenAI backend as `evoinstruct models bench` drives it
  (its transport: the lean aiohttp path wherever it applies);
- bare aiohttp: one session, a semaphore, stdlib JSON (this machine's ceiling);
- naive AsyncOpenAI: one SDK client and a semaphore, `chat.completions.create`;
- with --sdk-path also evoinstruct forced onto the SDK's own transport.

For each, at each setting (default C=64 L=0.1 s and C=256 L=1 s): requests/s,
the fraction of C/L, the ratio to bare aiohttp measured in the same round, and
the client's CPU milliseconds per request. The machine is shared and noisy:
`--repeat k` runs k rounds (the clients' order rotates each round) and prints
the median with the range of the ratio. Targets: evoinstruct >= 0.95 of bare,
<= 0.5 ms CPU per request.

    .venv/bin/python bench/throughput.py [--requests 2000] [--settings 64:0.1,256:1]
        [--repeat 3] [--sdk-path] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoinstruct.models.check import bench_model, bench_prompt  # noqa: E402
from evoinstruct.models.config import ModelConfig  # noqa: E402
from evoinstruct.models.openai_backend import OpenAIChatModel  # noqa: E402

TARGET_RATIO = 0.95
TARGET_CPU_MS = 0.5


@dataclass
class Run:
    """One client's pass over N requests."""

    ok: int
    wall_s: float
    cpu_s: float

    def per_s(self) -> float:
        return self.ok / self.wall_s

    def cpu_ms(self, requests: int) -> float:
        return 1000 * self.cpu_s / requests


Client = Callable[[int, int, int, int], Coroutine[Any, Any, Run]]


def start_server(delay: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--delay", str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"the loopback server did not start: {line}")
    return proc, int(line[1])


def _cfg(port: int) -> ModelConfig:
    return ModelConfig(
        backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model="tiny", timeout_s=30
    )


async def evoinstruct(port: int, requests: int, concurrency: int, max_tokens: int) -> Run:
    result = await bench_model(
        _cfg(port), requests=requests, concurrency=concurrency, max_tokens=max_tokens
    )
    return Run(result.ok, result.wall_s, result.client_cpu_ms_per_request * requests / 1000)


async def evoinstruct_sdk(port: int, requests: int, concurrency: int, max_tokens: int) -> Run:
    def build(cfg: ModelConfig, **_: Any) -> OpenAIChatModel:
        return OpenAIChatModel(
            cfg,
            backoff_initial=cfg.backoff_initial_s,
            backoff_max=cfg.backoff_max_s,
            transport="sdk",
        )

    result = await bench_model(
        _cfg(port),
        requests=requests,
        concurrency=concurrency,
        max_tokens=max_tokens,
        builder=build,
    )
    return Run(result.ok, result.wall_s, result.client_cpu_ms_per_request * requests / 1000)


async def bare_aiohttp(port: int, requests: int, concurrency: int, max_tokens: int) -> Run:
    """A bare aiohttp client on the same server: this machine's ceiling."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> int:
            request = bench_prompt(i, max_tokens)
            body = {
                "model": "tiny",
                "messages": list(request.messages),
                "temperature": request.temperature,
                "max_tokens": max_tokens,
            }
            async with gate, session.post(url, json=body) as response:
                data = await response.json()
                return 1 if response.status == 200 and data["choices"] else 0

        cpu, start = time.process_time(), time.monotonic()
        ok = sum(await asyncio.gather(*(one(i) for i in range(requests))))
        return Run(ok, time.monotonic() - start, time.process_time() - cpu)


async def naive_openai(port: int, requests: int, concurrency: int, max_tokens: int) -> Run:
    """One AsyncOpenAI client and a semaphore, as a first attempt would write it."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY")
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        request = bench_prompt(i, max_tokens)
        async with gate:
            answer = await client.chat.completions.create(
                model="tiny",
                messages=list(request.messages),  # type: ignore[arg-type]
                temperature=request.temperature,
                max_tokens=max_tokens,
            )
            return 1 if answer.choices else 0

    try:
        cpu, start = time.process_time(), time.monotonic()
        ok = sum(await asyncio.gather(*(one(i) for i in range(requests))))
        return Run(ok, time.monotonic() - start, time.process_time() - cpu)
    finally:
        await client.close()


def run_setting(
    clients: dict[str, Client], args: argparse.Namespace, concurrency: int, delay: float
) -> dict[str, list[tuple[Run, float]]]:
    """Every client `args.repeat` times against one server; per pass, its Run and its ratio
    to the bare client's pass of the same round."""
    proc, port = start_server(delay)
    runner = _runner(args.uvloop)
    results: dict[str, list[tuple[Run, float]]] = {name: [] for name in clients}
    try:
        # One request first, so the server's own lazy start-up is not billed to a client.
        runner(bench_model(_cfg(port), requests=1, concurrency=1, max_tokens=1))
        names = list(clients)
        for round_ in range(args.repeat):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            runs = {
                name: runner(clients[name](port, args.requests, concurrency, args.max_tokens))
                for name in order
            }
            bare = runs["bare aiohttp"].per_s()
            for name in names:
                results[name].append((runs[name], runs[name].per_s() / bare))
    finally:
        proc.terminate()
        proc.wait(10)
    return results


def _runner(uvloop: bool) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if not uvloop:
        return asyncio.run
    import uvloop as uv

    return uv.run


def report(
    results: dict[str, list[tuple[Run, float]]], requests: int, concurrency: int, delay: float
) -> list[str]:
    ideal = concurrency / delay
    lines = [
        f"C={concurrency} L={1000 * delay:.0f} ms N={requests}: ideal C/L = {ideal:.0f} req/s",
        f"  {'client':<30} {'req/s':>8} {'of C/L':>7} {'vs bare':>8} {'(range)':>13} "
        f"{'CPU ms/req':>10} {'ok':>6}",
    ]
    for name, passes in results.items():
        per_s = statistics.median(run.per_s() for run, _ in passes)
        ratios = [ratio for _, ratio in passes]
        cpu = statistics.median(run.cpu_ms(requests) for run, _ in passes)
        ok = min(run.ok for run, _ in passes)
        spread = f"{min(ratios):.3f}-{max(ratios):.3f}" if len(ratios) > 1 else ""
        lines.append(
            f"  {name:<30} {per_s:8.1f} {per_s / ideal:7.3f} {statistics.median(ratios):8.3f} "
            f"{spread:>13} {cpu:10.2f} {ok:6d}"
        )
    ratio = statistics.median(r for _, r in results["evoinstruct"])
    cpu = statistics.median(run.cpu_ms(requests) for run, _ in results["evoinstruct"])
    verdict = "PASS" if ratio >= TARGET_RATIO and cpu <= TARGET_CPU_MS else "BELOW TARGET"
    lines.append(
        f"  evoinstruct: {ratio:.3f} of bare (target >= {TARGET_RATIO}), {cpu:.2f} ms CPU "
        f"a request (target <= {TARGET_CPU_MS}): {verdict}"
    )
    return lines


def _settings(text: str) -> list[tuple[int, float]]:
    pairs = [item.split(":") for item in text.split(",") if item]
    return [(int(c), float(latency)) for c, latency in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--settings",
        type=_settings,
        default=_settings("64:0.1,256:1"),
        help="comma-separated CONCURRENCY:DELAY_S pairs (default 64:0.1,256:1)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every client")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--sdk-path", action="store_true", help="also evoinstruct on the SDK's own transport"
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run every client on uvloop (the daemon does not)"
    )
    args = parser.parse_args()
    clients: dict[str, Client] = {
        "evoinstruct": evoinstruct,
        "bare aiohttp": bare_aiohttp,
        "naive AsyncOpenAI+semaphore": naive_openai,
    }
    if args.sdk_path:
        clients["evoinstruct (SDK transport)"] = evoinstruct_sdk
    loop = "uvloop" if args.uvloop else "asyncio"
    (transport,) = OpenAIChatModel(_cfg(1)).transports  # built only to ask; sends nothing
    print(
        f"{args.repeat} round(s), {loop} event loop, medians over rounds; "
        f"evoinstruct's transport here: {transport}"
    )
    for concurrency, delay in args.settings:
        results = run_setting(clients, args, concurrency, delay)
        print("\n".join(report(results, args.requests, concurrency, delay)), flush=True)


if __name__ == "__main__":
    main()
