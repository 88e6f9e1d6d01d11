"""What identifies a model folder's weights, for every cache keyed by them.

An adapter is named by its version (`v1`), but a name says nothing about the weights:
a project copied and trained again, or a folder replaced by hand, keeps the name with
other weights. Caches that keep a model's answers or its converted weights key an
adapter by the bytes of its own files instead (a LoRA adapter is a few MB); a base
model of hundreds of MB by its files' names, sizes and modification times.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

# A version folder holds the adapter's own files (adapter_config.json,
# adapter_model.safetensors) and files written later (metrics, a manifest).
ADAPTER_PREFIX = "adapter_"


def update_with_files(folder: Path, digest: Any, *, content: bool, prefix: str = "") -> None:
    """Feed `digest` the folder's files named `prefix`*: their bytes (`content`), or their
    names, sizes and mtimes."""
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(prefix)):
        digest.update(path.name.encode())
        if content:
            digest.update(path.read_bytes())
        else:
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())


def served_name(version: str, digest: str | None) -> str:
    """The name vLLM is asked to serve a version's LoRA under: vLLM keeps a name it loaded
    once, so other weights under a known version name get a name of their own."""
    return f"{version}-{digest[:12]}" if digest else version


def adapter_digest(folder: str | Path) -> str | None:
    """sha256 (20 hex digits) of an adapter folder's own files; None when the folder is not
    readable here (a LoRA that lives on a vLLM server's disk)."""
    path = Path(folder)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    update_with_files(path, digest, content=True, prefix=ADAPTER_PREFIX)
    return digest.hexdigest()[:20]
