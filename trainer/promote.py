"""Promotion: record which student version is active, and hand it to the serving model.

The store keeps the history (promotions and rollbacks replay to the active
version). The hand-off makes a running model serve that version:

* the in-process transformers backend (`TransformersModel`) loads the adapter
  next to the base and switches to it (`load_adapter`), or drops back to the
  base (`remove_adapter`);
* vLLM offline (`VLLMModel`) registers a new `LoRARequest` the same way;
* a vLLM server behind the OpenAI backend gets the LoRA hot-loaded on every
  endpoint (`POST /v1/load_lora_adapter`), and requests then name it as
  their model; the adapter path must be readable by the server.

Only LoRA-family adapters can be hot-loaded. A full fine-tune is a new model
directory (point the generator's `path` at it); prefix and prompt tuning are
served by loading the version with `trainer.methods.load_trained`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError, UnsupportedError

# peft types the transformers adapter integration (and so TransformersModel) can load.
_HOT_LOADABLE = {"LORA", "IA3", "LOHA", "LOKR", "ADALORA"}


def promote(store: Any, version: str, reason: str = "promoted by hand") -> dict[str, Any]:
    """Make `version` the active student; returns its registry row."""
    row = store.model_version(version)
    if row is None:
        known = ", ".join(v["version"] for v in store.model_versions()) or "none"
        raise InputError(f"no model version {version!r} (known: {known})", field="version")
    store.set_promoted(version, reason)
    return row


def rollback(store: Any, reason: str = "rollback by hand") -> dict[str, Any] | None:
    """Return to the version active before the current one; None means the base/teacher."""
    previous = store.rollback(reason)
    return store.model_version(previous) if previous else None


def peft_type(version_dir: str | Path) -> str | None:
    """The adapter's peft type ('LORA', 'PREFIX_TUNING', ...); None for full weights."""
    path = Path(version_dir) / "adapter_config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("peft_type")


def _unwrap(model: Any) -> Any:
    # The response-cache wrapper forwards calls but hides the backend's type.
    while hasattr(model, "inner"):
        model = model.inner
    return model


def _is_server(model: Any) -> bool:
    from evoinstruct.models.openai_backend import OpenAIChatModel

    return isinstance(model, OpenAIChatModel)


def _is_vllm(model: Any) -> bool:
    from evoinstruct.models.vllm_backend import VLLMModel

    return isinstance(model, VLLMModel)


async def _server_hand_off(model: Any, row: dict[str, Any] | None) -> str | None:
    """A vLLM server: hot-load the LoRA on every endpoint, then name it in requests."""
    from evoinstruct.models.fingerprint import adapter_digest, served_name
    from evoinstruct.models.vllm_backend import load_lora_adapter

    if row is None:
        model.model_id, model.adapter_version, model.adapter_digest = model.cfg.model, None, None
        return None
    digest = adapter_digest(row["path"])
    served = served_name(row["version"], digest)
    for url in model.endpoint_urls:
        await load_lora_adapter(
            url,
            served,
            row["path"],
            api_key_env=model.cfg.api_key_env,
            timeout_s=model.cfg.timeout_s,
        )
    # vLLM serves a loaded adapter under its name: requests select it as their model.
    model.model_id, model.adapter_version, model.adapter_digest = served, row["version"], digest
    return row["version"]


async def hand_off(model: Any, row: dict[str, Any] | None) -> str | None:
    """Make `model` serve the version in `row` (None: its plain base); returns the version."""
    inner = _unwrap(model)
    if row is not None:
        kind = peft_type(row["path"])
        if kind is None:
            raise UnsupportedError(
                f"{row['version']} is a full fine-tune: point the generator's model path at "
                f"{row['path']}"
            )
        lora_only = _is_server(inner) or _is_vllm(inner)
        if (lora_only and kind != "LORA") or kind not in _HOT_LOADABLE:
            raise UnsupportedError(
                f"{row['version']} is a {kind} adapter, which {inner!r} cannot hot-load "
                "(vLLM serves LoRA only; load prefix/prompt tuning with trainer.methods.load_trained)"
            )
    if _is_server(inner):
        return await _server_hand_off(inner, row)
    if row is None:
        if not hasattr(inner, "remove_adapter"):
            raise UnsupportedError(f"{inner!r} cannot drop its adapter; restart it without one")
        inner.remove_adapter()
        return None
    if not hasattr(inner, "load_adapter"):
        raise UnsupportedError(f"{inner!r} cannot load adapters")
    return inner.load_adapter(row["path"], row["version"])


def versions_table(store: Any) -> list[dict[str, Any]]:
    """One row per version with the figures `evoinstruct models list` shows."""
    rows = []
    for v in store.model_versions():
        metrics = v["metrics"]
        evaluation = metrics.get("evaluation") or {}
        pairwise = evaluation.get("pairwise") or {}
        suite = (metrics.get("verifiable") or {}).get("accuracy") or {}
        rows.append(
            {
                "version": v["version"],
                "method": v["method"],
                "round": v["round"],
                "created_at": v["created_at"],
                "active": v["active"],
                "promoted": v["promoted"],
                "train_loss": metrics.get("train_loss"),
                "heldout_loss": evaluation.get("heldout_loss", metrics.get("heldout_loss")),
                "baseline_loss": evaluation.get("baseline_loss"),
                "winning_score": pairwise.get("winning_score"),
                # prompt-level strict accuracy on the held-out suite (the latest run)
                "verifiable": (suite.get("prompt_strict") or {}).get("value"),
                "gate": (evaluation.get("gate") or {}).get("reason"),
                "path": v["path"],
            }
        )
    return rows
