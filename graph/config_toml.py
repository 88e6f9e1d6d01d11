"""Writing a config as commented TOML: each key with its description, generated from the models.

`evoinstruct init` writes this file, and `docs/config.md` (the README's config
reference) is made from the same walk, so neither drifts from the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

import tomli_w
from pydantic import BaseModel


def _value(value: Any) -> str:
    """A TOML literal on one line: inline arrays and inline tables, so keys stay in their table."""
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else _value(key)


def _table(
    lines: list[str],
    name: str,
    model: BaseModel,
    doc: str | None,
    notes: Mapping[str, str],
) -> None:
    lines.append("")
    if doc:
        lines.extend(f"# {line}".rstrip() for line in doc.strip().splitlines())
    lines.append(f"[{name}]")
    nested: list[tuple[str, BaseModel, str | None]] = []
    for key, field in type(model).model_fields.items():
        value = getattr(model, key)
        if isinstance(value, BaseModel):
            nested.append((f"{name}.{key}", value, field.description or type(value).__doc__))
            continue
        if field.description:
            lines.append(f"# {field.description}")
        if (note := notes.get(f"{name}.{key}")) is not None:
            lines.append(f"# {note}")
        if value is None:
            lines.append(f"# {key} = ")
        else:
            dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            lines.append(f"{key} = {_value(dumped)}")
    for sub_name, sub_model, sub_doc in nested:
        _table(lines, sub_name, sub_model, sub_doc, notes)


def render_toml(config: BaseModel, header: str = "", notes: Mapping[str, str] | None = None) -> str:
    """The whole config as commented TOML that loads back to an equal config.

    `notes` maps dotted keys to a comment shown above the key, after its description
    (why a profile sets it)."""
    notes = notes or {}
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header else []
    for key, field in type(config).model_fields.items():
        value = getattr(config, key)
        if isinstance(value, BaseModel):
            _table(lines, key, value, field.description or type(value).__doc__, notes)
        elif isinstance(value, dict):
            for name, item in value.items():
                _table(
                    lines,
                    f"{key}.{name}",
                    item,
                    type(item).__doc__ if name == next(iter(value)) else None,
                    notes,
                )
    return "\n".join(lines).lstrip("\n") + "\n"


def config_reference(config_type: type[BaseModel]) -> str:
    """Markdown tables of every section and key, for the README's config reference."""
    out: list[str] = []

    def walk(prefix: str, model_type: type[BaseModel]) -> None:
        rows = []
        for key, field in model_type.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(f"{prefix}.{key}" if prefix else key, annotation)
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            shown = "" if default is None else f"`{_value(default)}`".replace("|", "\\|")
            rows.append(f"| `{key}` | {shown} | {field.description or ''} |")
        if rows:
            out.append(f"\n### `[{prefix}]`\n")
            if model_type.__doc__:
                out.append(model_type.__doc__.strip().splitlines()[0] + "\n")
            out.append("| key | default | meaning |\n| --- | --- | --- |")
            out.extend(rows)

    for key, field in config_type.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            walk(key, annotation)
        elif get_origin(annotation) is dict:
            value_type = get_args(annotation)[1]
            if isinstance(value_type, type) and issubclass(value_type, BaseModel):
                walk(f"{key}.NAME", value_type)
    return "\n".join(out).strip() + "\n"
