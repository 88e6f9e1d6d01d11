"""The TLS trust of an `AsyncOpenAI` client, fixed when the client is built.

httpx2 reads SSL_CERT_FILE / SSL_CERT_DIR once, when a client is made. Whatever else the
backend makes for the same endpoint later (the lean path's aiohttp session, the SDK clients
of a new event loop) verifies servers with this same context, so one model never trusts two
sets of CAs however the environment changes.
"""

from __future__ import annotations

import ssl

import httpx2
import openai


def sdk_ssl_context(client: openai.AsyncOpenAI) -> ssl.SSLContext:
    """The TLS context `client` verifies its base URL's server with.

    Its own object where it can be reached (httpx2 built it with the client, from the
    environment of that moment: SSL_CERT_FILE, SSL_CERT_DIR or the system's roots), so the
    lean path trusts exactly what the SDK would, however the environment changes later.
    Otherwise one derived the same way httpx2 does; `LeanTransport` asks when the client is
    built, so it is the environment of the same moment."""
    try:
        transport = client._client._transport_for_url(client.base_url)
        context = transport._pool._ssl_context
    except AttributeError:  # another httpx2 or openai version shapes its internals otherwise
        context = None
    return context if isinstance(context, ssl.SSLContext) else httpx2.create_ssl_context()
