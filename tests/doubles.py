"""A scripted model double for agent tests: queued or computed replies and a call log.

Only tests use it; everywhere else real backends run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from evoinstruct.models.base import ChatRequest, Choice, Failure, Generation, Message, Result
from evoinstruct.store.errors import UnsupportedError

Reply = str | Generation | Failure | Callable[[ChatRequest], "str | Generation | Failure"]


class ScriptedModel:
    """Answers from a queue of replies (or a function of the request) and logs every request.

    A string reply becomes a one-choice Generation with finish_reason "stop";
    queue a Generation to script truncation, or a Failure to script an error.
    When the queue is empty the `default` reply is used; with no default the
    double raises so a test cannot silently run past its script.
    """

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        default: Reply | None = None,
        model_id: str = "scripted",
        losses: Callable[[Sequence[Message], str], list[float]] | None = None,
        embedder: Callable[[str], list[float]] | None = None,
    ) -> None:
        self.queue: deque[Reply] = deque(replies)
        self.default = default
        self.model_id = model_id
        self.adapter_version: str | None = None
        self.adapter_digest: str | None = None
        self.calls: list[ChatRequest] = []
        self.batches: list[int] = []  # the size of each generate() call: agents must batch
        self._losses = losses
        self._embedder = embedder

    def push(self, *replies: Reply) -> None:
        self.queue.extend(replies)

    def _next(self, request: ChatRequest) -> Result:
        if self.queue:
            reply = self.queue.popleft()
        elif self.default is not None:
            reply = self.default
        else:
            raise AssertionError(f"ScriptedModel ran out of replies at call {len(self.calls)}")
        if callable(reply):
            reply = reply(request)
        if isinstance(reply, str):
            words = len(reply.split())
            return Generation(
                choices=[Choice(reply, "stop") for _ in range(request.n)],
                prompt_tokens=sum(len(m["content"].split()) for m in request.messages),
                completion_tokens=words,
            )
        return reply

    async def generate(self, requests: Sequence[ChatRequest]) -> list[Result]:
        self.batches.append(len(requests))
        results = []
        for request in requests:
            self.calls.append(request)
            results.append(self._next(request))
        return results

    async def loss(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
        if self._losses is None:
            raise UnsupportedError("ScriptedModel has no loss function")
        return [self._losses(prompt, answer) for prompt, answer in pairs]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._embedder is None:
            raise UnsupportedError("ScriptedModel has no embedder")
        return [self._embedder(t) for t in texts]

    async def option_probs(
        self, prompts: Sequence[Sequence[Message]], options: Sequence[str]
    ) -> list[list[float]]:
        raise UnsupportedError("ScriptedModel has no logits")

    async def aclose(self) -> None:
        return None
