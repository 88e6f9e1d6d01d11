"""CTranslate2 as the in-process backend's generation engine (`engine = "ctranslate2"`).

On a CPU, CTranslate2 decodes a batch in C++ and drops each sequence from the
batch when it ends, where transformers' `generate` runs Python per step and
keeps computing finished rows until the longest one ends. Measured on a 2-core
AVX2 machine with SmolLM2-135M (bench/inference.py): float32 gives the same
greedy tokens as transformers in float32 at a higher rate; int8 is faster still
and its answers differ (quantization).

The engine generates only; the transformers model stays loaded beside it for
what needs hidden states and logits (loss, embeddings, option probabilities)
and holds the peft adapters. A student version's adapter is merged into a
float32 copy of the base once, converted to a CTranslate2 folder and cached on
disk (keyed by the base's and the adapter's files and the compute type), so
switching versions costs a load, not a conversion.

Every decoding step calls back into Python for each row: that is where a stop
string ends a row, where a stop request (the caller's generate() task was
cancelled) ends the whole batch within one step, and where tokens are counted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from evoinstruct.models.activity import current_ticket
from evoinstruct.models.base import ChatRequest, Choice, Generation
from evoinstruct.models.cancel import Cancelled
from evoinstruct.models.fingerprint import ADAPTER_PREFIX, update_with_files
from evoinstruct.models.threads import sleep_idle_threads
from evoinstruct.store.errors import ModelError

ComputeType = Literal["float32", "int8", "int8_float32"]
# Converted folders are ~4 bytes a parameter in float32: keep the few in use loaded, and
# on disk the folders used last (a daemon promotes version after version; each is converted
# again if it is ever needed after its folder went).
LOADED_GENERATORS = 2
KEEP_CONVERTED = 6
CACHE_SUBDIR = "ctranslate2"

Decode = Callable[[list[int], Sequence[str]], tuple[Choice, int]]


def require_ctranslate2() -> Any:
    sleep_idle_threads()  # its OpenMP reads the policy when it loads (models.threads)
    try:
        import ctranslate2
    except ImportError as exc:  # an optional dependency: the `real` extra
        raise ModelError(
            'engine = "ctranslate2" needs the ctranslate2 package: pip install ctranslate2'
        ) from exc
    return ctranslate2


def conversion_key(base: Path, adapter: Path | None, compute_type: str) -> str:
    ctranslate2 = require_ctranslate2()
    digest = hashlib.sha256(f"{ctranslate2.__version__}:{compute_type}".encode())
    digest.update(str(base.resolve()).encode())
    update_with_files(base, digest, content=False)
    if adapter is not None:
        update_with_files(adapter, digest, content=True, prefix=ADAPTER_PREFIX)
    return digest.hexdigest()[:20]


def convert(base: Path, adapter: Path | None, out: Path, compute_type: str) -> Path:
    """The CTranslate2 folder of `base` (with `adapter` merged), written once under `out`.

    Written in a temporary directory and renamed into place under a file lock, so a
    folder exists complete or not at all and two processes do not convert it twice.
    """
    from filelock import FileLock

    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if out.is_dir():
            return out
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        try:
            source = _merged(base, adapter, work / "merged") if adapter is not None else base
            _ct2_convert(source, work / "ct2", compute_type)
            os.rename(work / "ct2", out)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"cannot convert {base} for CTranslate2: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        prune(out.parent, KEEP_CONVERTED)
    return out


def prune(cache: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` converted folders used last (a use touches a folder)."""
    folders = sorted(
        (p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return folders[keep:]


def _merged(base: Path, adapter: Path, out: Path) -> Path:
    """The base with the LoRA adapter folded into its weights, in float32, saved to `out`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _ct2_convert(source: Path, out: Path, compute_type: str) -> None:
    from ctranslate2.converters import TransformersConverter

    # Stored in the compute type (int8 folders are a quarter of float32's size); the
    # converter loads the weights as float32, an exact up-cast of a bfloat16 folder.
    TransformersConverter(str(source)).convert(str(out), quantization=compute_type)


class Ct2Engine:
    """Generation for one transformers model folder and the adapters swapped onto it."""

    def __init__(
        self,
        base: str | Path,
        tokenizer: Any,
        *,
        compute_type: ComputeType,
        threads: int,
        cache_dir: Path,
    ) -> None:
        self.ct2 = require_ctranslate2()
        self.base = Path(base)
        if not self.base.is_dir():
            raise ModelError(f'engine = "ctranslate2" needs a local model folder, not {base!r}')
        self.tokenizer = tokenizer
        self.compute_type = compute_type
        self.threads = threads
        self.cache_dir = cache_dir / CACHE_SUBDIR
        self._adapter: Path | None = None
        self._key = conversion_key(self.base, None, compute_type)  # what the folder holds
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._counter = _TokenCounter()

    @property
    def tokens(self) -> int:
        """Tokens generated so far, every row counted: progress within a batch."""
        return self._counter.tokens

    def use_adapter(self, adapter: str | Path | None) -> None:
        """Generate with this adapter merged (None: the base); converted on first use."""
        self._adapter = Path(adapter) if adapter is not None else None
        # Keyed by the files, not the path: a folder refilled with other weights is new.
        self._key = conversion_key(self.base, self._adapter, self.compute_type)

    def folder(self) -> Path:
        """The active version's converted folder, converted now if it is not on disk."""
        out = convert(self.base, self._adapter, self.cache_dir / self._key, self.compute_type)
        os.utime(out)  # used now: the last to be pruned
        return out

    def _load(self) -> Any:
        return self.ct2.Generator(
            str(self.folder()),
            device="cpu",
            compute_type=self.compute_type,
            intra_threads=self.threads,
        )

    def _generator(self, seed: int, *, fresh: bool) -> Any:
        """The generator of the active version, its sampling seeded with `seed`.

        CTranslate2 seeds a worker thread's random generator once, at its first draw, from
        the seed set last: a kept generator continues its sequence (a process's calls are
        reproducible in order), and `fresh` loads one whose first draw takes `seed` (a
        request's own seed gives the same answers every time, at the cost of a load).
        """
        self.ct2.set_random_seed(seed)
        if fresh:
            return self._load()
        key = self._key
        if key not in self._loaded:
            self._loaded[key] = self._load()
            while len(self._loaded) > LOADED_GENERATORS:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return self._loaded[key]

    def generate(
        self,
        requests: list[ChatRequest],
        prompts: list[str],
        *,
        seed: int,
        decode: Decode,
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> list[Generation]:
        """One batch of requests sharing their sampling settings (as the torch path takes them).

        A sampled request of n answers is n rows of the batch, each its own sequence, so a
        stop string ends one answer, not its siblings. `decode` turns a row's token ids
        (ending with EOS when the row finished) into a choice, as the torch path does.
        """
        first = requests[0]
        greedy = first.temperature <= 0
        n_rows = 1 if greedy else first.n
        tok = self.tokenizer
        ids = [tok(text, add_special_tokens=False)["input_ids"] for text in prompts]
        rows = [tok.convert_ids_to_tokens(p) for p in ids for _ in range(n_rows)]
        sampling: dict[str, Any] = (
            {"sampling_topk": 1}
            if greedy
            else {
                "sampling_topk": 0,  # the whole vocabulary, as top_k=0 in transformers
                "sampling_topp": first.top_p,
                "sampling_temperature": first.temperature,
            }
        )
        stops = list(first.stop)
        produced: list[list[int]] = [[] for _ in rows]

        # The callback must not reach the engine: CTranslate2's worker thread drops it last,
        # and a generator freed from its own worker thread aborts the process.
        counter = self._counter
        ticket = current_ticket()  # the live view's tokens/s; read here, in the call's context

        def step(result: Any) -> bool:
            counter.tokens += 1
            if ticket is not None:
                ticket.add_tokens(1)
            if stop_requested():
                return True
            if not stops:
                return False
            row = produced[result.batch_id]
            row.append(result.token_id)
            tail = tok.decode(row[-32:], skip_special_tokens=True)
            return any(s in tail for s in stops)

        generator = self._generator(seed, fresh=not greedy and first.seed is not None)
        start = time.monotonic()
        results = generator.generate_batch(
            rows,
            max_length=first.max_tokens,
            include_prompt_in_result=False,
            end_token=[tok.eos_token_id],
            return_end_token=True,
            callback=step,
            **sampling,
        )
        latency = time.monotonic() - start
        if stop_requested():
            raise Cancelled  # rows cut short by a stop request are no answers
        out = []
        for i, request in enumerate(requests):
            decoded = [
                decode(list(results[i * n_rows + j].sequences_ids[0]), request.stop)
                for j in range(n_rows)
            ]
            copies = request.n if greedy else 1
            out.append(
                Generation(
                    choices=[c for c, _ in decoded] * copies,
                    prompt_tokens=len(ids[i]),
                    completion_tokens=sum(k for _, k in decoded) * copies,
                    latency_s=latency,
                )
            )
        return out


class _TokenCounter:
    tokens = 0
