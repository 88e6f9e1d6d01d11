"""The OpenAI backend's lean path: POST /chat/completions over aiohttp, JSON by orjson.

Why it exists: the openai SDK spends 1-2 ms of client CPU on every request
(httpx2's transport, request options, header and response objects), a bare
aiohttp client 0.2-0.35 ms. With C requests in flight and every answer taking L
seconds, the answers of one wave come back together and queue behind each
other's processing, so that CPU is lost throughput: the SDK path kept a server
at 0.3-0.8 of what a bare aiohttp client got from it, this path at 0.95-1.0
(bench/throughput.py, C=64 L=100 ms and C=256 L=1 s).

What stays the SDK's. The endpoint's `AsyncOpenAI` client is still built and is
the source of truth: the request goes to the URL it would use, with the headers
it would send (auth, organisation and project, user agent, OPENAI_CUSTOM_HEADERS,
its X-Stainless-* set), and every outcome is what it would raise — a non-2xx
answer the client's own status error (built by the client from the same status,
headers and body, so a 429 is a `RateLimitError` whose Retry-After the backend
reads as before), a failed connect an `APIConnectionError`, a connection that
broke after the server took it an `APIConnectionError` raised from the aiohttp
error (`DROPPED` and `UNREACHABLE` tell them apart). A 2xx body that is not JSON
is a `MalformedBody`, a ValueError, as the SDK's JSON error is. Redirects are
followed and cookies kept, as the SDK's httpx2 client does. TLS is verified with
the client's own `ssl.SSLContext`, so both paths trust the same CAs (httpx2 reads
SSL_CERT_FILE / SSL_CERT_DIR once, when the client is built).

What it leaves to the SDK (`covers` says no): a client with an auth provider or
workload identity, and an endpoint the environment routes through a proxy (the
SDK's httpx2 speaks SOCKS and ALL_PROXY; aiohttp does not).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Coroutine
from typing import Any

import aiohttp
import httpx2
import openai
import orjson
from yarl import URL

from evoinstruct.models.per_loop import refuse_if_running
from evoinstruct.models.sdk_tls import sdk_ssl_context

# Raised once the server has the connection: it broke mid-exchange (a dropped or truncated
# answer). Everything under these but the UNREACHABLE ones.
DROPPED: tuple[type[BaseException], ...] = (aiohttp.ClientError,)
# Raised before any byte reached a server: refused, no route, DNS, TLS handshake, bad URL.
UNREACHABLE: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError, aiohttp.InvalidURL)


class MalformedBody(ValueError):
    """A 2xx answer whose body is not JSON (the SDK's json error is a ValueError too)."""


def covers(client: openai.AsyncOpenAI) -> bool:
    """Whether the lean path sends what `client` would send, the way it would send it."""
    if getattr(client, "_provider_runtime", None) is not None:
        return False
    if getattr(client, "workload_identity", None) is not None:
        return False
    url = client.base_url
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(url.host):
        return True
    return not (url.scheme in proxies or "all" in proxies)


def sdk_headers(client: openai.AsyncOpenAI) -> dict[str, str]:
    """The headers the SDK client sends with a chat completion (its retries are off, so its
    retry count is always 0)."""
    merged: dict[str, str] = {}
    for name, value in {
        **client.auth_headers,
        **client.default_headers,
        "x-stainless-retry-count": "0",
    }.items():
        # Case-insensitive, the later wins, as the SDK's httpx2.Headers merge does.
        for seen in [k for k in merged if k.lower() == name.lower()]:
            del merged[seen]
        if isinstance(value, str):  # an `Omit` drops the header
            merged[name] = value
    timeout = client.timeout
    read = timeout.read if isinstance(timeout, httpx2.Timeout) else timeout
    if read is not None:
        merged["x-stainless-read-timeout"] = str(read)
    return merged


class LeanTransport:
    """One endpoint's aiohttp session (made on first use, on the loop that uses it)."""

    def __init__(
        self, client: openai.AsyncOpenAI, *, connections: int, trust: ssl.SSLContext | None = None
    ) -> None:
        self._client = client
        # Relative to the client's base URL (which the SDK ends with a slash), as it posts.
        self.url = URL(str(client.base_url.join("chat/completions")))
        self._connections = connections
        # Taken now, not per session: the SDK fixed its trust when the client was built, and a
        # session made later (first use, or each new event loop) must not re-read the environment.
        # Used for http:// URLs too, in case a redirect leads to https.
        self._ssl = trust or sdk_ssl_context(client)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is loop:
            return self._session
        if self._session is not None:
            refuse_if_running(self._loop)
            # Made on another loop (an earlier asyncio.run): its connections can only be closed
            # there, so they are left to it and this loop gets a session of its own.
            self._session.detach()
        connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Made here, on the loop: the SDK names its async library in them.
            headers=sdk_headers(self._client),
            # The backend's own deadline ends each attempt; aiohttp's default 5-minute total
            # would only add a second clock to the same request.
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._loop = loop
        return self._session

    def post_chat(self, body: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """The answer's JSON, once awaited; the SDK's exception for anything else. `body` is
        serialised before this returns: nothing keeps it alive while the request runs."""
        return self._post(orjson.dumps(body))

    async def _post(self, payload: bytes) -> Any:
        session = self._open()
        try:
            async with session.post(self.url, data=payload) as response:
                content = await response.read()
                if not 200 <= response.status < 300:
                    raise self._status_error(response, content)
        except aiohttp.ClientError as exc:
            raise openai.APIConnectionError(request=self._request()) from exc
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise MalformedBody(f"the answer is not JSON ({exc}): {content[:200]!r}") from exc

    def _request(self) -> httpx2.Request:
        return httpx2.Request("POST", str(self.url))

    def _status_error(self, response: aiohttp.ClientResponse, content: bytes) -> Exception:
        """What the SDK raises for this answer: its client builds the same error from the same
        status, headers and body (error paths only, so the httpx2 objects cost nothing)."""
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in response.raw_headers
            # aiohttp has already decoded the body: httpx2 must not try again.
            if k.lower() not in (b"content-encoding", b"content-length", b"transfer-encoding")
        ]
        http_response = httpx2.Response(
            response.status,
            headers=headers,
            content=content,
            request=self._request(),
        )
        return self._client._make_status_error_from_response(http_response)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            if self._loop is asyncio.get_running_loop():
                await session.close()
            else:
                session.detach()
