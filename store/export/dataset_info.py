"""LLaMA-Factory's dataset_info.json: an entry per data file, and reading an existing one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError

DATASET_INFO = "dataset_info.json"


def dataset_info_entry(fmt: str, file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's description of one data file (its data/README.md format)."""
    if fmt in ("alpaca", "parquet"):
        return {
            "file_name": file_name,
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
            },
        }
    if fmt == "dpo":
        # LLaMA-Factory's preference data: alpaca formatting with chosen/rejected strings.
        return {
            "file_name": file_name,
            "formatting": "alpaca",
            "ranking": True,
            "columns": {
                "prompt": "prompt",
                "chosen": "chosen",
                "rejected": "rejected",
                "system": "system",
            },
        }
    if fmt == "sharegpt":
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt",
            },
        }
    # OpenAI messages are LLaMA-Factory's sharegpt formatting with OpenAI's tags.
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }


def read_dataset_info(path: Path) -> dict[str, Any]:
    """The entries of an existing dataset_info.json (none if there is none); a file that is
    not a JSON object is refused rather than overwritten."""
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read it: {detail}", file=str(path)) from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON ({exc.msg}); fix or remove it, or pass --no-card",
            file=str(path),
            line=exc.lineno,
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            "holds no JSON object of datasets; fix or remove it, or pass --no-card",
            file=str(path),
        )
    return data
