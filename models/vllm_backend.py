"""vLLM: the offline engine with LoRA adapters, and hot-loading an adapter into a vLLM server.

Offline: `LLM(enable_lora=True, max_lora_rank=...)` in this process, one
`LoRARequest(name, int_id, path)` per adapter version, chat generation in a
worker thread. vLLM is an optional extra that needs a GPU; it is imported
only when a vLLM model is built, with a clear error when it is missing.

Server: `load_lora_adapter` POSTs `/v1/load_lora_adapter` so requests can name
the new adapter as their model (the server must run with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`); the generator then talks to it
through the OpenAI backend.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai

from evoinstruct.models.base import ChatRequest, Choice, Failure, Generation, Message, Result
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.fingerprint import adapter_digest, served_name
from evoinstruct.models.openai_backend import api_key_from_env
from evoinstruct.models.secret import Secret
from evoinstruct.store.errors import ModelError, UnsupportedError

MISSING = "vllm is not installed: pip install 'evoinstruct[vllm]' (needs a GPU)"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ModelError(MISSING) from exc
    return vllm


def sampling_kwargs(request: ChatRequest) -> dict[str, Any]:
    """Keyword arguments for vllm.SamplingParams (structured output as a plain `json` schema)."""
    kwargs: dict[str, Any] = {
        "n": request.n,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "stop": list(request.stop) or None,
    }
    if request.presence_penalty is not None:
        kwargs["presence_penalty"] = request.presence_penalty
    if request.json_schema is not None:
        kwargs["structured_outputs"] = {"json": request.json_schema}
    return kwargs


class VLLMModel:
    """A ChatModel over vLLM's offline engine; adapters switch per request, not per reload."""

    def __init__(self, cfg: ModelConfig, **llm_kwargs: Any) -> None:
        self._vllm = _import_vllm()
        path = cfg.path or cfg.model
        self.cfg = cfg
        self.model_id: str = str(path)
        self.adapter_version: str | None = None
        self.adapter_digest: str | None = None
        self._llm = self._vllm.LLM(
            model=path,
            enable_lora=True,
            max_lora_rank=cfg.max_lora_rank,
            seed=cfg.seed,
            dtype=cfg.dtype,
            **llm_kwargs,
        )
        self._adapters: dict[str, Any] = {}  # version -> LoRARequest
        self._digests: dict[str, str | None] = {}  # version -> its files' digest
        self._next_id = 0
        self._lock = threading.Lock()
        if cfg.adapter:
            self.load_adapter(cfg.adapter)

    def __repr__(self) -> str:
        return f"VLLMModel({self.model_id!r}, adapter={self.adapter_version!r})"

    def load_adapter(self, path: str | Path, version: str | None = None) -> str:
        """Register an adapter directory (loaded by vLLM on first use) and make it active."""
        from vllm.lora.request import LoRARequest

        version = version or Path(path).name
        digest = adapter_digest(path)
        if version not in self._adapters or self._digests[version] != digest:
            # vLLM wants a unique positive int id per adapter, and tells adapters apart by
            # name: other weights under a known version get both anew.
            self._next_id += 1
            name = served_name(version, digest)
            self._adapters[version] = LoRARequest(name, self._next_id, str(path))
            self._digests[version] = digest
        self.adapter_version, self.adapter_digest = version, digest
        return version

    def set_adapter(self, version: str) -> None:
        if version not in self._adapters:
            raise ModelError(
                f"adapter {version!r} is not loaded (loaded: {sorted(self._adapters)})"
            )
        self.adapter_version, self.adapter_digest = version, self._digests[version]

    def remove_adapter(self) -> None:
        self.adapter_version = self.adapter_digest = None

    def _params(self, request: ChatRequest) -> Any:
        kwargs = sampling_kwargs(request)
        if "structured_outputs" in kwargs:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        return self._vllm.SamplingParams(**kwargs)

    def _generate_sync(self, requests: list[ChatRequest]) -> list[Result]:
        lora = self._adapters.get(self.adapter_version) if self.adapter_version else None
        start = time.monotonic()
        with self._lock:
            try:
                outputs = self._llm.chat(
                    [[dict(m) for m in r.messages] for r in requests],
                    sampling_params=[self._params(r) for r in requests],
                    lora_request=lora,
                    use_tqdm=False,
                )
            except ValueError as exc:  # e.g. a prompt longer than the context window
                return [Failure("bad_request", str(exc))] * len(requests)
        latency = time.monotonic() - start
        return [
            Generation(
                choices=[Choice(o.text, o.finish_reason or "") for o in out.outputs],
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=sum(len(o.token_ids) for o in out.outputs),
                latency_s=latency,
            )
            for out in outputs
        ]

    async def generate(self, requests: Sequence[ChatRequest]) -> list[Result]:
        return await asyncio.to_thread(self._generate_sync, list(requests))

    async def loss(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
        raise UnsupportedError("the vLLM backend computes no loss; use a transformers model")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise UnsupportedError("the vLLM backend computes no embeddings; use a transformers model")

    async def option_probs(
        self, prompts: Sequence[Sequence[Message]], options: Sequence[str]
    ) -> list[list[float]]:
        raise UnsupportedError("the vLLM backend gives no option probabilities here")

    async def aclose(self) -> None:
        return None


async def load_lora_adapter(
    base_url: str,
    name: str,
    path: str | Path,
    *,
    api_key_env: str | None = None,
    timeout_s: float = 120.0,
) -> None:
    """Hot-load an adapter into a running vLLM server as model `name`; a no-op if it is listed.

    Raises ModelError in plain words when the server cannot be reached or refuses.
    """
    cfg = ModelConfig(backend="openai", base_url=base_url, model=name, api_key_env=api_key_env)
    key = api_key_from_env(cfg)
    # A server may echo the key in its refusal; the message reaches logs and the store.
    secret = Secret(key)
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout_s)
    try:
        listed = await client.models.list()
        if any(m.id == name for m in listed.data):
            return
        await client.post(
            "/load_lora_adapter", cast_to=str, body={"lora_name": name, "lora_path": str(path)}
        )
    except openai.APIConnectionError as exc:
        raise ModelError(
            secret.scrub(f"cannot reach the vLLM server at {base_url}: {exc}")
        ) from exc
    except openai.APIStatusError as exc:
        raise ModelError(
            secret.scrub(
                f"the vLLM server at {base_url} refused to load adapter {name!r} "
                f"({exc.status_code}): {exc.message}. It needs --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        ) from exc
    finally:
        await client.close()
