"""The lean aiohttp path sends what the SDK sends and raises what the SDK raises.

Each test puts the two side by side against one real loopback server: the lean
transport, and the same endpoint's `AsyncOpenAI` client posting the same body.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from evoinstruct.models.base import (
    CONNECTION_DROPPED,
    CONNECTION_UNREACHABLE,
    ChatRequest,
    Failure,
    Generation,
)
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.openai_backend import (
    OpenAIChatModel,
    Transport,
    failure_detail,
    failure_kind,
    retry_after_seconds,
)
from evoinstruct.models.openai_lean import LeanTransport, MalformedBody
from tests.openai_server import OpenAITestServer

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class Scripted(OpenAITestServer):
    """Records every chat request's headers; a prompt `status <code> <kind>` gets that status
    with a body of that kind, as gateways and proxies answer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.headers: list[dict[str, str]] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        body = await request.json()  # cached: the parent reads the same body again
        words = body["messages"][-1]["content"].split()
        if words[0] != "status":
            return await super()._chat(request)
        status, kind = int(words[1]), words[2]
        error = {"error": {"message": f"scripted {status}", "type": "x", "code": "c"}}
        if kind == "text":
            return web.Response(status=status, text=f"upstream said no ({status})")
        if kind == "gzip":
            payload = gzip.compress(json.dumps(error).encode())
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(status=status, body=payload, headers=headers)
        headers = {"retry-after-ms": "1500"} if status == 429 else {}
        if kind == "json-no-message":
            error = {"detail": "no message field"}
        if kind == "empty":
            return web.Response(status=status, headers=headers)
        return web.json_response(error, status=status, headers=headers)


@pytest.fixture
def server() -> Iterator[Scripted]:
    with Scripted() as s:
        yield s


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="sk-lean-test", max_retries=0, timeout=5.0)


def _body(text: str) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 8}


async def _outcome(post: Any, body: dict[str, Any]) -> Any:
    try:
        return await post(body)
    except Exception as exc:  # the outcome under test is the exception itself
        return exc


@pytest.mark.parametrize(
    "script",
    [
        "status 400 json",
        "status 401 json",
        "status 403 json",
        "status 404 json",
        "status 409 json",
        "status 422 json",
        "status 429 json",
        "status 429 empty",
        "status 500 text",
        "status 502 json-no-message",
        "status 503 gzip",
        "status 418 json",
    ],
)
async def test_status_errors_are_the_sdks_own(server: Scripted, script: str) -> None:
    client = _client(server.url)
    lean = LeanTransport(client, connections=2)

    async def sdk_post(body: dict[str, Any]) -> Any:
        return await client.post("/chat/completions", body=body, cast_to=object)

    ours = await _outcome(lean.post_chat, _body(script))
    theirs = await _outcome(sdk_post, _body(script))
    assert isinstance(theirs, openai.APIStatusError)
    assert type(ours) is type(theirs)
    assert str(ours) == str(theirs) and ours.body == theirs.body
    assert ours.status_code == theirs.status_code
    assert retry_after_seconds(ours) == retry_after_seconds(theirs)
    assert failure_kind(ours) == failure_kind(theirs)
    await lean.aclose()
    await client.close()


async def test_the_request_is_the_sdks(server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    # Headers the SDK takes from the environment travel on the lean path too.
    monkeypatch.setenv("OPENAI_ORG_ID", "org-lean")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-lean")
    client = _client(server.url)
    lean = LeanTransport(client, connections=2)
    body = _body("你好 headers")
    ours = await lean.post_chat(body)
    theirs = await client.post("/chat/completions", body=body, cast_to=object)
    assert ours["choices"] == theirs["choices"]
    assert server.bodies[0] == server.bodies[1] == body
    # Per connection or per encoder, not the SDK's: the length of the same body, the
    # connection and the encodings each library can decode.
    own = {"host", "content-length", "connection", "accept-encoding"}
    sent = [{k.lower(): v for k, v in h.items() if k.lower() not in own} for h in server.headers]
    assert sent[0] == sent[1]
    assert sent[0]["authorization"] == "Bearer sk-lean-test"
    assert sent[0]["openai-organization"] == "org-lean"
    assert sent[0]["content-type"] == "application/json"
    await lean.aclose()
    await client.close()


async def test_a_body_that_is_not_json_is_malformed(server: Scripted) -> None:
    server.inject("garbage")
    lean = LeanTransport(_client(server.url), connections=2)
    with pytest.raises(MalformedBody) as raised:
        await lean.post_chat(_body("x"))
    assert isinstance(raised.value, ValueError) and failure_kind(raised.value) == "malformed"
    await lean.aclose()


@pytest.mark.parametrize("fault", ["drop", "truncated"])
async def test_broken_and_refused_connections_stay_apart(server: Scripted, fault: str) -> None:
    server.inject(fault)
    lean = LeanTransport(_client(server.url), connections=2)
    with pytest.raises(openai.APIConnectionError) as broken:
        await lean.post_chat(_body("x"))
    assert isinstance(broken.value.__cause__, aiohttp.ClientError)
    assert failure_detail(broken.value) == CONNECTION_DROPPED
    await lean.aclose()
    refused = LeanTransport(_client("http://127.0.0.1:1/v1"), connections=2)
    with pytest.raises(openai.APIConnectionError) as unreachable:
        await refused.post_chat(_body("x"))
    assert isinstance(unreachable.value.__cause__, aiohttp.ClientConnectorError)
    assert failure_detail(unreachable.value) == CONNECTION_UNREACHABLE
    await refused.aclose()


def _cfg(url: str) -> ModelConfig:
    return ModelConfig(backend="openai", base_url=url, model="tiny", max_retries=0)


@pytest.mark.parametrize("transport", ["auto", "sdk"])
@pytest.mark.parametrize("closed_each_time", [True, False])
def test_a_model_outlives_its_event_loop(
    server: Scripted, transport: Transport, closed_each_time: bool
) -> None:
    """The CLI runs one asyncio.run after another, and so does a notebook: the request gate
    and the connections are bound to the loop that made them, so each loop gets its own.
    Eight requests through two slots make requests wait at the gate, where a semaphore of an
    earlier loop raised "bound to a different event loop"; the SDK's pooled connections
    raised "Event loop is closed"."""
    cfg = ModelConfig(backend="openai", base_url=server.url, model="tiny", max_retries=0)
    model = OpenAIChatModel(cfg.model_copy(update={"max_concurrency": 2}), transport=transport)
    asks = [ChatRequest([{"role": "user", "content": f"again {i}"}]) for i in range(8)]

    async def one_run() -> list[Any]:
        results = await model.generate(asks)
        if closed_each_time:
            await model.aclose()
        return results

    for _ in range(3):
        results = asyncio.run(one_run())
        assert all(isinstance(r, Generation) for r in results), results
    asyncio.run(model.aclose())
    assert model.transports == ["lean" if transport == "auto" else "sdk"]
    assert server.requests == 24


async def test_closing_twice_or_unused_is_fine(server: Scripted) -> None:
    unused = OpenAIChatModel(_cfg(server.url))
    await unused.aclose()
    model = OpenAIChatModel(_cfg(server.url))
    (result,) = await model.generate([ChatRequest([{"role": "user", "content": "x"}])])
    assert isinstance(result, Generation)
    await model.aclose()
    await model.aclose()


def test_a_proxy_from_the_environment_keeps_the_sdk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    url = "http://127.0.0.1:9/v1"  # nothing is sent: the choice is made when the model is built
    assert OpenAIChatModel(_cfg(url)).transports == ["lean"]
    assert OpenAIChatModel(_cfg(url), transport="sdk").transports == ["sdk"]
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert OpenAIChatModel(_cfg(url)).transports == ["sdk"]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert OpenAIChatModel(_cfg(url)).transports == ["lean"]
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    assert OpenAIChatModel(_cfg(url)).transports == ["sdk"]


async def test_failures_read_the_same_on_both_paths(server: Scripted) -> None:
    """What the store keeps of a failure (kind, message, detail) does not depend on the path."""
    failures: dict[str, list[tuple[str, str, str | None]]] = {}
    for transport in ("auto", "sdk"):
        model = OpenAIChatModel(_cfg(server.url), transport=transport)
        seen = []
        for script in ("status 404 json", "status 500 text", "status 429 json"):
            (result,) = await model.generate([ChatRequest([{"role": "user", "content": script}])])
            assert isinstance(result, Failure)
            seen.append((result.kind, result.message, result.detail))
        failures[transport] = seen
        await model.aclose()
    assert failures["auto"] == failures["sdk"]
