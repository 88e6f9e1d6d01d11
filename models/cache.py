"""The response cache: a ChatModel wrapper so a resumed round never pays twice for a call.

The key is the sha256 of (model id, adapter version and the digest of its files, the
request's `cache_payload()`), so a new adapter — or other weights under an old version
name — or any changed sampling parameter misses.
Only successful generations are stored — a Failure is always retried next
time. Hits come back with `cached=True` and zero latency. The cache object is
the store (`cache_get(key) -> dict | None`, `cache_put(key, dict)`); what it
holds is request-derived only, never credentials.

Identical requests inside one batch (an agent asking several times for fresh
samples) get distinct keys by their occurrence number, so a resumed batch gets
back the same several answers rather than one answer several times. An
in-process model's answers are stored batch by batch as it computes them, so a
stop in the middle of a long call keeps the batches it finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

from evoinstruct.models.base import (
    ChatModel,
    ChatRequest,
    Choice,
    Generation,
    ModelWrapper,
    Result,
)


class ResponseCache(Protocol):
    def cache_get(self, key: str) -> dict[str, Any] | None: ...

    def cache_put(self, key: str, value: dict[str, Any]) -> None: ...


def cache_key(
    model_id: str,
    adapter_version: str | None,
    request: ChatRequest,
    occurrence: int = 0,
    namespace: str | None = None,
    adapter_digest: str | None = None,
) -> str:
    """sha256 hex of the canonical JSON of what determines the answer.

    A sampled request (temperature > 0) also carries the namespace (the daemon sets
    the round): a re-run within the round gets the same answer back, a later round
    draws a fresh sample. Greedy requests are shared across namespaces.
    """
    material: dict[str, Any] = {
        "model_id": model_id,
        "adapter_version": adapter_version,
        "request": request.cache_payload(),
    }
    if adapter_digest is not None:
        material["adapter_digest"] = adapter_digest
    if occurrence:
        material["occurrence"] = occurrence
    if namespace is not None and request.temperature > 0:
        material["namespace"] = namespace
    canonical = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def to_record(generation: Generation) -> dict[str, Any]:
    return {
        "choices": [{"text": c.text, "finish_reason": c.finish_reason} for c in generation.choices],
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "latency_s": generation.latency_s,
    }


def from_record(record: dict[str, Any]) -> Generation:
    return Generation(
        choices=[Choice(c["text"], c["finish_reason"]) for c in record["choices"]],
        prompt_tokens=record.get("prompt_tokens", 0),
        completion_tokens=record.get("completion_tokens", 0),
        latency_s=0.0,
        cached=True,
    )


class CachedModel(ModelWrapper):
    """Wraps a ChatModel; `generate` consults the cache first. Everything else passes through."""

    def __init__(self, inner: ChatModel, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache
        self.hits = 0
        self.misses = 0
        self.namespace: str | None = None

    def _keys(self, requests: Sequence[ChatRequest]) -> list[str]:
        seen: dict[str, int] = {}
        keys = []
        model, adapter, digest = self.model_id, self.adapter_version, self.adapter_digest
        for request in requests:
            base = cache_key(model, adapter, request, 0, self.namespace, digest)
            occurrence = seen.get(base, 0)
            seen[base] = occurrence + 1
            keys.append(
                cache_key(model, adapter, request, occurrence, self.namespace, digest)
                if occurrence
                else base
            )
        return keys

    async def generate(self, requests: Sequence[ChatRequest]) -> list[Result]:
        keys = self._keys(requests)
        results: list[Result | None] = []
        for key in keys:
            record = self.cache.cache_get(key)
            results.append(from_record(record) if record is not None else None)
        missing = [i for i, r in enumerate(results) if r is None]
        self.hits += len(requests) - len(missing)
        self.misses += len(missing)
        for part in self._parts(requests, missing):
            fresh = await self.inner.generate([requests[i] for i in part])
            for i, result in zip(part, fresh, strict=True):
                results[i] = result
                if isinstance(result, Generation):
                    self.cache.cache_put(keys[i], to_record(result))
        return [r for r in results if r is not None]

    def _parts(self, requests: Sequence[ChatRequest], missing: list[int]) -> list[list[int]]:
        """The missing requests in the batches the model computes one after another (an
        in-process model's `batch_plan`), so each batch's answers are stored as it finishes
        and a stop mid-call loses only the batch in flight; one part for any other model."""
        plan = getattr(self.inner, "batch_plan", None)
        if not missing or plan is None:
            return [missing] if missing else []
        return [[missing[j] for j in batch] for batch in plan([requests[i] for i in missing])]
