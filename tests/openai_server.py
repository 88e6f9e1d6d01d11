"""A real OpenAI chat-completions HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks enough of the protocol for the OpenAI backend (chat completions with
`n`, `stop`, `max_tokens`, `response_format` json_schema and `usage`;
`GET /v1/models`; vLLM's `POST /v1/load_lora_adapter`) and takes injected
faults — 429 with Retry-After, 500, a hang, malformed JSON, garbage bytes, a
dropped connection, a body truncated mid-way, a drip (headers at once, then one
byte every `delay` seconds), a slow answer, 401, 404 — one per request, in the
order queued; or, with `fault_rate`, a random fault of `fault_kinds` on that
fraction of requests (seeded). An error fault may carry its own `message`.
It counts the requests it sees and the most it ever had in flight. `pause()`
holds every chat request that arrives from then on (counted as in flight)
until `resume()`: a test can freeze a client at a point it observes, instead
of hoping a timer fires at the right moment.

In a test: `with OpenAITestServer() as server: ... server.url ...` (a thread
with its own event loop); with `tls=` a server-side `ssl.SSLContext` it serves
https. For a benchmark that must not share the client's CPU:
`python -m tests.openai_server --delay 0.1` prints `PORT <n>` and serves until
killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

FaultKind = Literal[
    "429", "500", "hang", "malformed", "garbage", "drop", "truncated", "drip", "slow", "401", "404"
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "429", "500", "hang", "malformed", "garbage", "drop", "truncated", "drip", "slow", "401", "404"
)  # fmt: skip


@dataclass
class Fault:
    """One injected fault; `delay` is the hang or slow-down in seconds, or a drip's seconds
    between bytes; `message` replaces an error fault's text (a server echoing what it got)."""

    kind: FaultKind
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None):
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status, headers=headers)


def example_for(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A value that satisfies a (simple) JSON schema: what a constrained decoder would emit."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example_for(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return example_for(schema["anyOf"][0], defs)
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example_for(sub, defs) for name, sub in props.items()}
    if kind == "array":
        return [example_for(schema.get("items", {"type": "string"}), defs)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return "示例 example"


def _words(text: str) -> list[str]:
    return text.split()


class OpenAITestServer:
    """A loopback chat-completions server with a queue of faults and in-flight counters."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        api_key: str | None = None,
        models: tuple[str, ...] = ("tiny",),
        reply: Callable[[dict[str, Any]], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[FaultKind] = (),
        fault_delay: float = 0.0,
        seed: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.delay = delay
        # A server-side context makes it an https server (a test's own CA and certificate).
        self.tls = tls
        # Random faults: this fraction of chat requests (without a queued fault) gets one of
        # `fault_kinds`, with `fault_delay` as its hang/drip/slow delay; seeded, so a run repeats.
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.fault_delay = fault_delay
        self._rng = random.Random(seed)
        self.faults_served: Counter[str] = Counter()
        self.clock = clock  # stamps `arrivals`; a test may pass the fake clock its client uses
        self.api_key = api_key
        self.models = set(models)
        self.reply = reply
        self.faults: deque[Fault] = deque()
        self.bodies: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.lora_adapters: dict[str, str] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._open: asyncio.Event | None = None  # cleared while paused; lives on the server loop

    # -- test-facing helpers -------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        return len(self.arrivals)

    def inject(self, kind: FaultKind, times: int = 1, **kwargs: Any) -> None:
        """Queue `times` faults of one kind; each is used by one incoming chat request."""
        for _ in range(times):
            self.faults.append(Fault(kind, **kwargs))

    def pause(self) -> None:
        """Hold every chat request that arrives after this returns, until `resume()`."""
        self._on_loop(lambda: self._gate().clear())

    def resume(self) -> None:
        """Answer the held requests (those whose client is still there) and stop holding."""
        self._on_loop(lambda: self._gate().set())

    def _gate(self) -> asyncio.Event:
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the server's loop and return once it has run."""
        assert self._loop is not None, "the server is not running"

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    # -- protocol ------------------------------------------------------------
    def _choice_text(self, body: dict[str, Any], index: int) -> str:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return json.dumps(example_for(fmt["json_schema"]["schema"]), ensure_ascii=False)
        if self.reply is not None:
            return self.reply(body)
        users = [m["content"] for m in body["messages"] if m.get("role") == "user"]
        return f"reply {index}: {users[-1] if users else ''}"

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        choices, completion_tokens = [], 0
        for i in range(int(body.get("n") or 1)):
            text, finish = self._choice_text(body, i), "stop"
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
            words = _words(text)
            if limit is not None and len(words) > limit:
                text, finish, words = " ".join(words[:limit]), "length", words[:limit]
            completion_tokens += len(words)
            message = {"role": "assistant", "content": text}
            choices.append({"index": i, "message": message, "finish_reason": finish})
        prompt_tokens = sum(len(_words(str(m.get("content", "")))) for m in body["messages"])
        return {
            "id": f"chatcmpl-{len(self.arrivals)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == (
            f"Bearer {self.api_key}"
        )

    def _next_fault(self) -> Fault | None:
        if self.faults:
            return self.faults.popleft()
        if self.fault_rate and self.fault_kinds and self._rng.random() < self.fault_rate:
            return Fault(self._rng.choice(self.fault_kinds), delay=self.fault_delay)
        return None

    async def _fault_response(
        self, request: web.Request, fault: Fault, body: dict[str, Any]
    ) -> web.StreamResponse | None:
        self.faults_served[fault.kind] += 1
        if fault.kind == "429":
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            text = fault.message or "Rate limit reached, slow down."
            return _error(429, text, "rate_limit_exceeded", headers)
        if fault.kind == "500":
            return _error(500, fault.message or "The server had an error.", "server_error")
        if fault.kind == "401":
            return _error(401, fault.message or "Incorrect API key provided.", "invalid_api_key")
        if fault.kind == "404":
            return _error(404, fault.message or "The model does not exist.", "model_not_found")
        if fault.kind == "hang":
            await asyncio.sleep(fault.delay or 30.0)
        elif fault.kind == "malformed":
            return web.Response(
                text='{"id": "x", "choices": [{"ind', content_type="application/json"
            )
        elif fault.kind == "garbage":
            junk = bytes(self._rng.randrange(256) for _ in range(64))
            return web.Response(body=b"\x89\xff" + junk, content_type="application/json")
        elif fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        elif fault.kind in ("truncated", "drip"):
            return await self._partial(request, fault, body)
        elif fault.kind == "slow":
            await asyncio.sleep(fault.delay)
        return None

    async def _partial(
        self, request: web.Request, fault: Fault, body: dict[str, Any]
    ) -> web.StreamResponse:
        """A real answer's headers (with its full Content-Length), then a truncated body and
        a cut connection, or the whole body one byte at a time (a drip: a per-read timeout
        never fires, however long the answer takes)."""
        data = json.dumps(self._completion(body)).encode()
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": str(len(data))}
        )
        await response.prepare(request)
        assert request.transport is not None
        if fault.kind == "truncated":
            await response.write(data[: len(data) // 2])
            request.transport.abort()
            return response
        for i in range(len(data)):
            await response.write(data[i : i + 1])
            await asyncio.sleep(fault.delay or 1.0)  # drip interval
        await response.write_eof()
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(self.clock())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            self.bodies.append(body)
            await self._gate().wait()  # at once unless paused
            fault = self._next_fault()
            if fault is not None:
                response = await self._fault_response(request, fault, body)
                if response is not None:
                    return response
            if not self._authorized(request):
                return _error(401, "Incorrect API key provided.", "invalid_api_key")
            model = body.get("model")
            if model not in self.models and model not in self.lora_adapters:
                return _error(404, f"The model `{model}` does not exist.", "model_not_found")
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.json_response(self._completion(body))
        finally:
            self.in_flight -= 1

    async def _models(self, request: web.Request) -> web.Response:
        names = sorted(self.models) + sorted(self.lora_adapters)
        data = [{"id": n, "object": "model", "owned_by": "test"} for n in names]
        return web.json_response({"object": "list", "data": data})

    async def _load_lora(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            # As some servers do, the refusal repeats the key it was given.
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {given}.", "invalid_api_key")
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(400, "lora_name and lora_path are required", "bad_request")
        if name in self.lora_adapters:
            return _error(400, f"The lora adapter '{name}' has already been loaded.", "bad_request")
        self.lora_adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/load_lora_adapter", self._load_lora)
        return app

    # -- lifecycle -----------------------------------------------------------
    async def _start_async(self, sock: socket.socket) -> None:
        # handler_cancellation: a client that gives up (timeout) ends its hung handler.
        self._runner = web.AppRunner(
            self.app(), handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()

    def start(self) -> OpenAITestServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_async(sock))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="openai-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until `predicate()` holds (a state the test observes, such as requests held by a
    paused server); the timeout only guards a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.005)  # poll interval


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released), for refused-connection tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    """Serve in this process until killed; prints `PORT <n>` once listening."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    server = OpenAITestServer(delay=args.delay, models=(args.model,))

    async def serve() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server.port = sock.getsockname()[1]
        await server._start_async(sock)
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
