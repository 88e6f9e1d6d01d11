"""The one small interface every agent and the trainer use to talk to a model.

A backend takes a batch of chat requests and returns, per request, either a
`Generation` or a `Failure` — a failed call is recorded, never passed on as an
empty string. `loss`, `embed` and `option_probs` exist where the backend can
compute them and raise `UnsupportedError` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]

FailureKind = Literal[
    "timeout",
    "rate_limit",
    "connection",
    "server",
    "bad_request",
    "auth",
    "not_found",
    "malformed",
    "schema",
    "other",
]


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request; sampling parameters a backend lacks are ignored by it."""

    messages: tuple[Message, ...] | list[Message]
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None
    presence_penalty: float | None = None
    json_schema: dict[str, Any] | None = None

    def cache_payload(self) -> dict[str, Any]:
        """Everything that determines the answer, for the response-cache key."""
        return {
            "messages": [dict(m) for m in self.messages],
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "n": self.n,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "json_schema": self.json_schema,
        }


# A garbled body from a flaky server is worth asking again in a probe (in a round it is a
# failed call the next round retries; a probe that gives up on it would end a daemon).
PROBE_GARBLED_ATTEMPTS = 4


async def probe(model: ChatModel) -> Result:
    """One probe request; a malformed answer is asked again a few times (tenacity)."""
    from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt

    async def once() -> Result:
        (result,) = await model.generate([probe_request()])
        return result

    retrying = AsyncRetrying(
        retry=retry_if_result(lambda r: isinstance(r, Failure) and r.kind == "malformed"),
        stop=stop_after_attempt(PROBE_GARBLED_ATTEMPTS),
        retry_error_callback=lambda state: state.outcome.result(),
    )
    return await retrying(once)


def probe_request() -> ChatRequest:
    """The one tiny request a reachability probe sends (`models check`, the check before a round)."""
    return ChatRequest(
        [{"role": "user", "content": "Reply with the single word: OK"}],
        temperature=0.0,
        max_tokens=4,
    )


@dataclass
class Choice:
    text: str
    finish_reason: str  # "stop" | "length" | backend-specific


@dataclass
class Generation:
    """A successful call: n choices, token usage and wall latency."""

    choices: list[Choice]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    ok: bool = field(default=True, init=False)

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


# `Failure.detail` of a "connection" failure: where the connection failed. "unreachable": no
# connection was made (refused, unknown host, no route): a wrong URL or a server that is down.
# "dropped": the server accepted the connection, then it broke before a complete answer (a
# dropped or truncated response): the server crashed or restarted, or a proxy cut it off.
CONNECTION_UNREACHABLE = "unreachable"
CONNECTION_DROPPED = "dropped"


@dataclass
class Failure:
    """A call that did not produce an answer, after bounded retries.

    `detail` refines `kind` where the kind alone misleads (see CONNECTION_DROPPED); the
    stored reason stays `model_failure:<kind>`, and the message says the same in words.
    """

    kind: FailureKind
    message: str
    attempts: int = 1
    latency_s: float = 0.0
    detail: str | None = None
    ok: bool = field(default=False, init=False)


Result = Generation | Failure


@runtime_checkable
class ChatModel(Protocol):
    """What every backend provides. `model_id`, `adapter_version` and `adapter_digest` key
    the response cache."""

    model_id: str
    adapter_version: str | None
    # The active adapter's files (models.fingerprint.adapter_digest): a version name alone
    # may stand for other weights (a project copied and trained again). None: no adapter,
    # or its files are not readable here.
    adapter_digest: str | None

    async def generate(self, requests: Sequence[ChatRequest]) -> list[Result]:
        """Answer every request; the i-th result belongs to the i-th request."""
        ...

    async def loss(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
        """Per-token negative log-likelihood of each answer given its prompt messages.

        An empty prompt (no messages) gives the answer's loss alone (IFD's denominator).
        """
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text."""
        ...

    async def option_probs(
        self, prompts: Sequence[Sequence[Message]], options: Sequence[str]
    ) -> list[list[float]]:
        """Softmax over the next-token logits restricted to `options` (Deita's "1".."6")."""
        ...

    async def aclose(self) -> None: ...


def model_version(model: ChatModel) -> str:
    """The provenance string of a model: its adapter version, else its id; a local directory
    by its name, so no machine's path reaches the pool or an export."""
    if model.adapter_version:
        return model.adapter_version
    from evoinstruct.store.export import model_name

    return model_name(model.model_id) or model.model_id


class ModelWrapper:
    """A ChatModel around another (`inner`): its identity is read live from the inner model
    (an adapter swap changes it), and every backend extra (load_adapter, set_adapter, ...)
    stays reachable through the wrapper. Subclasses override what they add to."""

    inner: ChatModel

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def adapter_version(self) -> str | None:
        return self.inner.adapter_version

    @property
    def adapter_digest(self) -> str | None:
        return self.inner.adapter_digest

    async def loss(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
        return await self.inner.loss(pairs)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inner.embed(texts)

    async def option_probs(
        self, prompts: Sequence[Sequence[Message]], options: Sequence[str]
    ) -> list[list[float]]:
        return await self.inner.option_probs(prompts, options)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
