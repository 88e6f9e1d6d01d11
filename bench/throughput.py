"""Does the OpenAI backend keep a server busy? Achieved requests/s against the ideal C/L.

A loopback chat-completions server (in its own process, so its CPU is not
counted as the client's) answers every request after a fixed delay L with
unlimited parallelism. N requests go through the OpenAI backend at
concurrency C; a perfect client achieves C/L requests/s. Prints the ratio
(target >= 0.95 at C=64, L=100 ms, N=2000) and the client's CPU time per
request.

    .venv/bin/python bench/throughput.py [--requests 2000 --concurrency 64 --delay 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoinstruct.agents.models.check import bench_model  # noqa: E402
from evoinstruct.agents.models.config import ModelConfig  # noqa: E402


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


async def bare_aiohttp(port: int, requests: int, concurrency: int, max_tokens: int) -> float:
    """Requests/s of a bare aiohttp client on the same server: this machine's ceiling."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            body = {
                "model": "tiny",
                "messages": [{"role": "user", "content": f"Request {i}"}],
                "max_tokens": max_tokens,
            }
            async with gate, session.post(url, json=body) as response:
                await response.json()

        start = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return requests / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.1, help="server delay L in seconds")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--baseline", action="store_true", help="also time a bare aiohttp client (the ceiling)"
    )
    args = parser.parse_args()
    proc, port = start_server(args.delay)
    try:
        cfg = ModelConfig(
            backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model="tiny", timeout_s=30
        )
        # One request first, so the server's own lazy start-up is not billed to the client.
        asyncio.run(bench_model(cfg, requests=1, concurrency=1, max_tokens=1))
        result = asyncio.run(
            bench_model(
                cfg,
                requests=args.requests,
                concurrency=args.concurrency,
                max_tokens=args.max_tokens,
            )
        )
        ceiling = (
            asyncio.run(bare_aiohttp(port, args.requests, args.concurrency, args.max_tokens))
            if args.baseline
            else None
        )
    finally:
        proc.terminate()
        proc.wait(10)
    ideal = args.concurrency / args.delay
    ratio = result.requests_per_s / ideal
    print(
        f"N={args.requests} C={args.concurrency} L={1000 * args.delay:.0f} ms: "
        f"{result.requests_per_s:.1f} req/s of ideal {ideal:.0f} -> ratio {ratio:.3f} "
        f"(target >= 0.95) {'PASS' if ratio >= 0.95 else 'BELOW TARGET'}"
    )
    print(
        f"ok {result.ok}, failures {result.failures or 'none'}, "
        f"latency p50/p90/p99 {1000 * (result.latency_p50_s or 0):.1f}/"
        f"{1000 * (result.latency_p90_s or 0):.1f}/{1000 * (result.latency_p99_s or 0):.1f} ms, "
        f"client CPU {result.client_cpu_ms_per_request:.2f} ms/request, wall {result.wall_s:.2f} s"
    )

    if ceiling is not None:
        print(f"bare aiohttp client on the same server: ratio {ceiling / ideal:.3f}")


if __name__ == "__main__":
    main()
