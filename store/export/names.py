"""Model names in exports and cards.

A model's id is what its config names: a server's model name, a hub id, or for a local
model the directory it was loaded from. Exports and cards carry names only: a local
directory says nothing to a reader and tells them where the author keeps their files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any


def is_local_path(value: str) -> bool:
    """Whether a model id is a path on the machine that ran it (absolute, home or ./)."""
    return (
        value.startswith(("/", "~", "./", "../", ".\\", "..\\", "\\\\"))
        or re.match(r"^[A-Za-z]:[\\/]", value) is not None
    )


def model_name(value: str | None, aliases: Mapping[str, str] | None = None) -> str | None:
    """The name a model id is shown by: its configured name, else a local directory's name."""
    if not value:
        return value
    if aliases and value in aliases:
        return aliases[value]
    if not is_local_path(value):
        return value
    stripped = value.rstrip("/\\")
    name = (PureWindowsPath if "\\" in stripped else PurePosixPath)(stripped).name
    return name or "local model"


# What a backend loads or asks for, first: a server gets `model`; an in-process backend
# (transformers, vLLM) loads `path or model`, so a `model` left beside a path names nothing.
_LOADS_PATH = ("transformers", "vllm")


def model_label(config: Mapping[str, Any]) -> str:
    """How a model's config names it: what its backend loads (a server's model name, or
    a local model's directory name), so the label is the model that answered."""
    keys = ("path", "model") if config.get("backend") in _LOADS_PATH else ("model", "path")
    for key in keys:
        value = config.get(key)
        if isinstance(value, str) and value:
            return model_name(value) or value
    return "unnamed model"


def model_aliases(models: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Local model paths → names, from `[models.*]` tables (a stored or the current config)."""
    out: dict[str, str] = {}
    for config in models.values():
        path = config.get("path") if isinstance(config, Mapping) else None
        if isinstance(path, str) and is_local_path(path):
            out[path] = model_label(config)
    return out
