"""Both of the OpenAI backend's paths, over real TLS, trust exactly the same certificates.

A throwaway CA signs a certificate for 127.0.0.1 and localhost; the loopback test server
serves it. A user trusts a private CA the way the SDK's httpx2 client reads it from the
environment (SSL_CERT_FILE, else SSL_CERT_DIR: httpcore2's `default_ssl_context`), and the
lean aiohttp path must trust what that client trusts — no more, no less, and from the same
moment: the SDK client fixes its TLS context when it is built.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evoinstruct.models.base import CONNECTION_UNREACHABLE, ChatRequest, Failure, Generation
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.openai_backend import OpenAIChatModel, Transport
from tests.openai_server import OpenAITestServer

# Whatever the machine running the tests has set must not decide what is trusted or
# whether the lean path is taken (a proxy variable sends every endpoint to the SDK).
ENVIRONMENT = ("SSL_CERT_FILE", "SSL_CERT_DIR", "http_proxy", "https_proxy", "all_proxy")
PATHS: dict[Transport, str] = {"auto": "lean", "sdk": "sdk"}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    # EC keys: generated in well under a millisecond, where RSA takes tens of them.
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # Both names a user may put in base_url; hostname checks on both paths read the SAN.
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("evoinstruct test server"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # the CA that signed the server's certificate (PEM)
    other_ca_file: Path  # a CA that signed nothing the server presents
    server_context: ssl.SSLContext  # serves the leaf and its CA


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, ca_key = _ca("evoinstruct throwaway CA")
    other, _ = _ca("evoinstruct unrelated CA")
    leaf, leaf_key = _leaf(ca, ca_key)
    (ca_file := tmp_path / "ca.pem").write_bytes(_pem(ca))
    (other_file := tmp_path / "other-ca.pem").write_bytes(_pem(other))
    (chain := tmp_path / "server.pem").write_bytes(_pem(leaf) + _pem(ca))
    (key_file := tmp_path / "server.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key_file)
    return Pki(ca_file, other_file, context)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def server(pki: Pki) -> Iterator[OpenAITestServer]:
    with OpenAITestServer(tls=pki.server_context) as s:
        yield s


class Waits:
    """The backend's sleep between retries, noted and skipped: no real time goes by, and the
    test sees how many retries there were."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        await asyncio.sleep(0)


def _model(
    url: str, transport: Transport, *, max_retries: int = 0, waits: Waits | None = None
) -> OpenAIChatModel:
    cfg = ModelConfig(
        backend="openai", base_url=url, model="tiny", max_retries=max_retries, timeout_s=5.0
    )
    model = OpenAIChatModel(
        cfg, backoff_initial=0.001, backoff_max=0.01, sleep=waits, transport=transport
    )
    assert model.transports == [PATHS[transport]]  # the path under test is the one taken
    return model


def _ask(text: str) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}])


@pytest.mark.parametrize("transport", list(PATHS))
async def test_a_ca_trusted_through_ssl_cert_file_is_trusted_on_both_paths(
    server: OpenAITestServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, transport: Transport
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    model = _model(server.url, transport)
    assert server.url.startswith("https://127.0.0.1:")
    (result,) = await model.generate([_ask("over tls 你好")])
    await model.aclose()
    assert isinstance(result, Generation), result
    assert result.text == "reply 0: over tls 你好" and server.requests == 1


@pytest.mark.parametrize("transport", list(PATHS))
@pytest.mark.parametrize("trusted", ["nothing set", "another CA"])
async def test_an_untrusted_server_fails_the_same_bounded_way_on_both_paths(
    server: OpenAITestServer,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    transport: Transport,
    trusted: str,
) -> None:
    if trusted == "another CA":
        # SSL_CERT_FILE replaces the system's roots: the server's CA is not among them.
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca_file))
    waits = Waits()
    model = _model(server.url, transport, max_retries=2, waits=waits)
    (result,) = await model.generate([_ask("x")])
    await model.aclose()
    assert isinstance(result, Failure), result
    # A refused handshake is a connection that never reached the server: retried like one,
    # as often as configured and no more, then a "connection" failure saying why.
    assert result.kind == "connection" and result.detail == CONNECTION_UNREACHABLE
    assert result.attempts == 3 and len(waits.seconds) == 2
    assert "CERTIFICATE_VERIFY_FAILED" in result.message
    assert server.requests == 0  # no request got past the handshake


@pytest.mark.parametrize("transport", list(PATHS))
async def test_what_is_trusted_is_fixed_when_the_model_is_built(
    server: OpenAITestServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, transport: Transport
) -> None:
    """The SDK client reads SSL_CERT_FILE once, when it is built (httpx2 makes its transport's
    context then); the lean path must not read it again at its first request, or on each new
    event loop: the two would then trust different CAs for the same model."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    trusting = _model(server.url, transport)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca_file))
    distrusting = _model(server.url, transport)
    monkeypatch.delenv("SSL_CERT_FILE")  # changed again before either sends a request
    (ok,) = await trusting.generate([_ask("x")])
    (refused,) = await distrusting.generate([_ask("x")])
    await trusting.aclose()
    await distrusting.aclose()
    assert isinstance(ok, Generation), ok
    assert isinstance(refused, Failure) and "CERTIFICATE_VERIFY_FAILED" in refused.message


@pytest.mark.parametrize("transport", ["auto", "sdk"])
def test_a_new_event_loop_keeps_the_models_trust(
    server: OpenAITestServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, transport: Transport
) -> None:
    """The CLI runs one asyncio.run after another, and each loop gets connections of its own
    (a lean session, or SDK clients): the later ones trust what the model was built with."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    model = _model(server.url, transport)
    (first,) = asyncio.run(model.generate([_ask("one")]))
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca_file))
    (second,) = asyncio.run(model.generate([_ask("two")]))
    asyncio.run(model.aclose())
    assert isinstance(first, Generation) and isinstance(second, Generation), (first, second)
    assert second.text == "reply 0: two" and server.requests == 2
