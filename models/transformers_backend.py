"""The in-process backend: a transformers causal LM (local directory or hub id) plus peft adapters.

This is where the student lives: batched chat generation with left padding,
seeded sampling, a LoRA adapter that can be loaded, swapped and removed
without reloading the base, and the model-internal quantities the critic
needs — per-token loss (IFD), mean-pooled embeddings and option
probabilities (Deita). All torch work runs in a worker thread under one lock,
so the event loop stays responsive and adapter swaps never interleave with a
forward pass. Heavy imports happen inside functions.

Generation runs on transformers' `generate` or, with `engine = "ctranslate2"`, on
CTranslate2 (ct2_engine.py: faster on a CPU, each adapter version merged and
converted once); everything else stays on torch. The worker thread checks a cancel
flag between batches and tokens (between decoding steps on CTranslate2), so a stop
request ends it within a token (models.cancel).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evoinstruct.models.base import ChatRequest, Choice, Failure, Generation, Message, Result
from evoinstruct.models.cancel import CancelFlag, run_in_thread
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.ct2_engine import Ct2Engine
from evoinstruct.models.fingerprint import adapter_digest
from evoinstruct.models.threads import sleep_idle_threads
from evoinstruct.store.errors import ModelError, UnsupportedError

# torch is imported inside functions below; idle OpenMP threads must sleep by then, in
# library use too (`langgraph dev`, a notebook), not only behind the CLI's entry point.
sleep_idle_threads()

# For base models without a chat template: the Alpaca layout the trainer also uses.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}\n\n"
    "{% else %}### Response:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)


def resolve_device(name: str) -> str:
    """`auto` picks cuda, then mps, then cpu."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str, device: str) -> Any:
    """`auto` is bfloat16 (or float16) on accelerators and float32 on cpu."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device == "mps" else torch.float32


def _sampling_key(r: ChatRequest) -> tuple[Any, ...]:
    return (r.temperature, r.top_p, r.max_tokens, r.n, r.seed, tuple(r.stop))


class TransformersModel:
    """A ChatModel running a transformers model in this process."""

    def __init__(self, cfg: ModelConfig) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = cfg.path or cfg.model
        assert path is not None  # the config validator guarantees it
        self.cfg = cfg
        self.model_id: str = path
        self.adapter_version: str | None = None
        self.adapter_digest: str | None = None
        self.device = resolve_device(cfg.device)
        local = Path(path).exists()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=resolve_dtype(cfg.dtype, self.device), local_files_only=local
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model {path!r}: {exc}") from exc
        self.model.to(self.device).eval()
        if self.tokenizer.chat_template is None:
            self.tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._adapters: dict[str, str] = {}  # version -> peft adapter name
        self._adapter_dirs: dict[str, Path] = {}  # version -> its directory (merged by engines)
        self._adapter_digests: dict[str, str | None] = {}  # version -> its files' digest
        self._loads = 0  # adapters loaded so far: each peft name is new
        self._lock = threading.Lock()
        self._cancel: CancelFlag | None = None  # the flag of the call holding the lock
        self._batches = 0
        self._engine = self._make_engine(path) if cfg.engine == "ctranslate2" else None
        from evoinstruct.models.transformers_hooks import check_between_layers

        check_between_layers(self.model, lambda: self._cancel)
        if cfg.adapter:
            self.load_adapter(cfg.adapter)

    def _make_engine(self, path: str) -> Ct2Engine:
        import torch

        from evoinstruct.models.smollm2 import default_cache_dir

        if self.device != "cpu":
            raise ModelError(f'engine = "ctranslate2" runs on the cpu here, not {self.device!r}')
        return Ct2Engine(
            path,
            self.tokenizer,
            compute_type=self.cfg.engine_compute_type,
            threads=torch.get_num_threads(),
            cache_dir=default_cache_dir(),
        )

    def __repr__(self) -> str:
        return f"TransformersModel({self.model_id!r}, adapter={self.adapter_version!r}, device={self.device!r})"

    # -- adapters ------------------------------------------------------------
    def load_adapter(self, path: str | Path, version: str | None = None) -> str:
        """Load a peft adapter directory (once, again when its files changed) and make it
        active; returns its version."""
        version = version or Path(path).name
        digest = adapter_digest(path)
        with self._lock:
            # The same name with other files: load these, never serve the ones loaded before.
            if version not in self._adapters or self._adapter_digests[version] != digest:
                self._load_files(Path(path), version, digest)
            self._activate(version)
        return version

    def _load_files(self, path: Path, version: str, digest: str | None) -> None:
        """Load the adapter under a fresh peft name; the version's former weights go only
        once the new ones loaded. A failed load leaves the model on its plain base."""
        # peft adapter names become module keys: no dots allowed.
        name = re.sub(r"\W", "_", version) + f"_{self._loads}"
        self._loads += 1
        try:
            self.model.load_adapter(str(path), adapter_name=name)
        except Exception as exc:  # safetensors, peft and torch each raise their own
            if name in (getattr(self.model, "peft_config", None) or {}):
                self.model.delete_adapter(name)
            self._forget(version)
            raise ModelError(f"cannot load the adapter {str(path)!r}: {exc}") from exc
        self._forget(version)
        self._adapters[version] = name
        self._adapter_dirs[version] = path
        self._adapter_digests[version] = digest

    def _forget(self, version: str) -> None:
        """Drop a version's loaded weights; the plain base answers if it was active."""
        if version in self._adapters:
            self.model.delete_adapter(self._adapters.pop(version))
            del self._adapter_dirs[version], self._adapter_digests[version]
        if self.adapter_version == version:
            self._deactivate()

    def _deactivate(self) -> None:
        """Back to the plain base; the loaded adapters stay loaded."""
        if self._adapters:
            self.model.disable_adapters()
        self.adapter_version = self.adapter_digest = None
        if self._engine is not None:
            self._engine.use_adapter(None)

    def set_adapter(self, version: str) -> None:
        """Switch to an adapter loaded earlier."""
        if version not in self._adapters:
            raise ModelError(
                f"adapter {version!r} is not loaded (loaded: {sorted(self._adapters)})"
            )
        with self._lock:
            self._activate(version)

    def _activate(self, version: str) -> None:
        self.model.set_adapter(self._adapters[version])
        self.model.enable_adapters()
        self.adapter_version = version
        self.adapter_digest = self._adapter_digests[version]
        if self._engine is not None:
            self._engine.use_adapter(self._adapter_dirs[version])

    def remove_adapter(self, *, unload: bool = False) -> None:
        """Back to the base model; `unload` also frees every loaded adapter's weights."""
        with self._lock:
            self._deactivate()
            if unload and self._adapters:
                self.model.delete_adapter(list(self._adapters.values()))
                self._adapters.clear()
                self._adapter_dirs.clear()
                self._adapter_digests.clear()

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    # -- generation ----------------------------------------------------------
    def _prompt_text(self, messages: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )

    def _encode_left(self, texts: list[str]) -> Any:
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
        return enc.to(self.device)

    def _decode(self, ids: list[int], stop: Sequence[str]) -> tuple[Choice, int]:
        tok = self.tokenizer
        finished = tok.eos_token_id in ids
        if finished:
            ids = ids[: ids.index(tok.eos_token_id)]
        ids = [i for i in ids if i != tok.pad_token_id]
        text = tok.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text, finished = text[:cut], True
        return Choice(text, "stop" if finished else "length"), len(ids)

    def _next_seed(self, request: ChatRequest) -> int:
        seed = request.seed if request.seed is not None else self.cfg.seed + self._batches
        self._batches += 1
        return seed

    def _generate_chunk(self, requests: list[ChatRequest], cancel: CancelFlag) -> list[Generation]:
        if self._engine is not None:
            return self._engine.generate(
                requests,
                [self._prompt_text(r.messages) for r in requests],
                seed=self._next_seed(requests[0]),
                decode=self._decode,
                stop_requested=cancel.is_set,
            )
        return self._generate_chunk_torch(requests, cancel)

    def _generate_chunk_torch(
        self, requests: list[ChatRequest], cancel: CancelFlag
    ) -> list[Generation]:
        import torch

        from evoinstruct.models.transformers_hooks import stop_on_cancel

        first = requests[0]
        greedy = first.temperature <= 0
        n_rows = 1 if greedy else first.n  # greedy copies are identical: decode once
        kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_tokens,
            "do_sample": not greedy,
            "num_return_sequences": n_rows,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            # Between tokens: end at once on a stop request; count tokens for the live view.
            "stopping_criteria": stop_on_cancel(cancel, self.tokenizer.eos_token_id),
        }
        if not greedy:
            kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=self.tokenizer)
        enc = self._encode_left([self._prompt_text(r.messages) for r in requests])
        seed = self._next_seed(first)
        start = time.monotonic()
        devices = [] if self.device == "cpu" else None
        device_type = None if self.device == "cpu" else self.device.split(":")[0]
        with (
            torch.random.fork_rng(devices=devices, device_type=device_type),
            torch.inference_mode(),
        ):
            torch.manual_seed(seed)
            out = self.model.generate(**enc, **kwargs)
        cancel.check()  # rows cut short by a stop request are no answers
        latency = time.monotonic() - start
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for i, request in enumerate(requests):
            decoded = [self._decode(new[i * n_rows + j], request.stop) for j in range(n_rows)]
            choices = [c for c, _ in decoded] * (request.n if greedy else 1)
            results.append(
                Generation(
                    choices=choices,
                    prompt_tokens=int(prompt_lengths[i]),
                    completion_tokens=sum(k for _, k in decoded) * (request.n if greedy else 1),
                    latency_s=latency,
                )
            )
        return results

    def batch_plan(self, requests: Sequence[ChatRequest]) -> list[list[int]]:
        """Which requests decode together: those of the same sampling settings, batch_size at
        a time (the response cache stores each batch's answers as it finishes)."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(_sampling_key(request), []).append(i)
        size = self.cfg.batch_size
        return [ids[s : s + size] for ids in groups.values() for s in range(0, len(ids), size)]

    @contextmanager
    def _running(self, cancel: CancelFlag) -> Iterator[None]:
        """The model for one call: its lock, and its cancel flag for the layer checks."""
        with self._lock:
            self._cancel = cancel
            try:
                yield
            finally:
                self._cancel = None

    def _generate_sync(self, requests: Sequence[ChatRequest], cancel: CancelFlag) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        with self._running(cancel):
            for chunk in self.batch_plan(requests):
                cancel.check()
                try:
                    answers: list[Result] = list(
                        self._generate_chunk([requests[i] for i in chunk], cancel)
                    )
                except (RuntimeError, ValueError, IndexError) as exc:
                    failure = Failure("other", f"{type(exc).__name__}: {exc}")
                    answers = [failure] * len(chunk)
                for i, answer in zip(chunk, answers, strict=True):
                    results[i] = answer
        return [r for r in results if r is not None]

    async def generate(self, requests: Sequence[ChatRequest]) -> list[Result]:
        return await run_in_thread(self._generate_sync, list(requests))

    # -- model-internal quantities -------------------------------------------
    def _loss_sync(
        self, pairs: Sequence[tuple[Sequence[Message], str]], cancel: CancelFlag
    ) -> list[list[float]]:
        import torch

        tok = self.tokenizer
        start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        rows = []
        for prompt, answer in pairs:
            # Prompt and answer tokenized apart, so the answer span is identical with or
            # without a prompt (IFD compares the two); no prompt means a BOS as context.
            context = (
                tok(self._prompt_text(prompt), add_special_tokens=False)["input_ids"]
                if prompt
                else [start_id]
            )
            rows.append((context, tok(answer, add_special_tokens=False)["input_ids"]))
        losses: list[list[float]] = []
        with self._running(cancel), torch.inference_mode():
            for s in range(0, len(rows), self.cfg.batch_size):
                cancel.check()
                chunk = rows[s : s + self.cfg.batch_size]
                width = max(len(c) + len(a) for c, a in chunk)
                ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, (c, a) in enumerate(chunk):  # right padding: real positions unchanged
                    ids[r, : len(c) + len(a)] = torch.tensor(c + a)
                    mask[r, : len(c) + len(a)] = 1
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                for r, (c, a) in enumerate(chunk):
                    positions = torch.arange(len(c) - 1, len(c) + len(a) - 1)
                    targets = torch.tensor(a, dtype=torch.long)
                    nll = -logp[r, positions, targets] if a else torch.empty(0)
                    losses.append(nll.tolist())
        return losses

    async def loss(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
        return await run_in_thread(self._loss_sync, list(pairs))

    def _embed_sync(self, texts: list[str], cancel: CancelFlag) -> list[list[float]]:
        import torch

        vectors: list[list[float]] = []
        with self._running(cancel), torch.inference_mode():
            self.tokenizer.padding_side = "right"  # under the lock: generation sets "left"
            for s in range(0, len(texts), self.cfg.batch_size):
                cancel.check()
                enc = self.tokenizer(
                    texts[s : s + self.cfg.batch_size], padding=True, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**enc, output_hidden_states=True).hidden_states[-1].float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                vectors.extend(pooled.cpu().tolist())
        return vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await run_in_thread(self._embed_sync, list(texts))

    def _option_ids(self, options: Sequence[str]) -> list[int]:
        ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in options]
        if len(set(ids)) != len(ids):
            raise UnsupportedError(f"options {list(options)} do not start with distinct tokens")
        return ids

    def _option_probs_sync(
        self, prompts: list[Sequence[Message]], options: Sequence[str], cancel: CancelFlag
    ) -> list[list[float]]:
        import torch

        option_ids = self._option_ids(options)
        probs: list[list[float]] = []
        with self._running(cancel), torch.inference_mode():
            for s in range(0, len(prompts), self.cfg.batch_size):
                cancel.check()
                chunk = prompts[s : s + self.cfg.batch_size]
                enc = self._encode_left([self._prompt_text(p) for p in chunk])
                last = self.model(**enc).logits[:, -1, :].float()  # left padding: last is real
                probs.extend(torch.softmax(last[:, option_ids], dim=-1).cpu().tolist())
        return probs

    async def option_probs(
        self, prompts: Sequence[Sequence[Message]], options: Sequence[str]
    ) -> list[list[float]]:
        return await run_in_thread(self._option_probs_sync, list(prompts), options)

    async def aclose(self) -> None:
        return None
