"""Row shapes: one example as an alpaca, sharegpt or openai record, and lineage columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.export.names import model_name
from evoinstruct.store.records import Example

# `dpo` rows are preference pairs (store.export.pairs), the others one example each.
EXPORT_FORMATS = ("alpaca", "sharegpt", "openai", "parquet", "dpo")


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise InputError(
            f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})", field="--format"
        )


def user_text(example: Example) -> str:
    """The user turn of a chat-shaped row: the instruction, then the input after a blank line."""
    return example.instruction + (f"\n\n{example.input}" if example.input else "")


def _messages(example: Example) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": example.system}] if example.system else []
    messages.append({"role": "user", "content": user_text(example)})
    messages.append({"role": "assistant", "content": example.output or ""})
    messages.extend(example.meta.get("extra_turns", []))
    return messages


def to_record(example: Example, fmt: str, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One example in one export format; `lineage` adds provenance fields."""
    _check_format(fmt)
    if fmt in ("alpaca", "parquet"):
        record: dict[str, Any] = {
            "instruction": example.instruction,
            "input": example.input,
            "output": example.output or "",
            "system": example.system,
        }
    elif fmt == "sharegpt":
        roles = {"user": "human", "assistant": "gpt"}
        turns = [m for m in _messages(example) if m["role"] != "system"]
        record = {
            "conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in turns],
            "system": example.system,
        }
    else:  # openai
        record = {"messages": _messages(example)}
    if lineage is not None:
        record.update(lineage)
    return record


# The parameters of every verifiable constraint type (agents/constraints), by kind: one
# struct holds any constraint's parameters in Parquet, as IFEval's own `kwargs` does.
# The store may not import agents; tests/test_export_card.py keeps this in step.
CONSTRAINT_PARAMS: dict[str, str] = {
    "capital_frequency": "int",
    "capital_relation": "str",
    "date_format": "str",
    "emoji": "str",
    "end_phrase": "str",
    "first_word": "str",
    "forbidden_words": "words",
    "frequency": "int",
    "keyword": "str",
    "keywords": "words",
    "label": "str",
    "language": "str",
    "let_frequency": "int",
    "let_relation": "str",
    "letter": "str",
    "marker": "str",
    "max_sentence_words": "int",
    "nth_paragraph": "int",
    "num_bullets": "int",
    "num_chars": "int",
    "num_emoji": "int",
    "num_headings": "int",
    "num_highlights": "int",
    "num_items": "int",
    "num_numbers": "int",
    "num_paragraphs": "int",
    "num_parentheticals": "int",
    "num_placeholders": "int",
    "num_questions": "int",
    "num_sections": "int",
    "num_sentences": "int",
    "num_words": "int",
    "postscript_marker": "str",
    "prompt_to_repeat": "str",
    "relation": "str",
    "section_spliter": "str",
    "start_phrase": "str",
}


def _param_fits(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "words":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def constraints_of(example: Example) -> list[dict[str, Any]]:
    """The example's verifiable constraints from meta, as {id, params}; malformed parts left out
    (a column of fixed types must hold every row)."""
    raw = example.meta.get("constraints")
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        params = item.get("params") if isinstance(item.get("params"), dict) else {}
        kept = {
            k: v
            for k, v in params.items()
            if k in CONSTRAINT_PARAMS and _param_fits(CONSTRAINT_PARAMS[k], v)
        }
        out.append({"id": item["id"], "params": kept})
    return out


def _lineage_fields(
    example: Example, scores: Sequence[Any], aliases: Mapping[str, str] | None
) -> dict[str, Any]:
    return {
        "id": example.id,
        "parent_id": example.parent_id,
        "operation": example.operation,
        "round": example.round,
        "source": example.source,
        "status": example.status,
        "model_version": model_name(example.model_version, aliases),
        # A list of structs rather than a JSON string: Parquet and `datasets` keep the
        # structure, and one example may carry one dimension from several scorers.
        "scores": [
            {"scorer": s.scorer, "dimension": s.dimension, "value": s.value}
            for s in sorted(scores, key=lambda s: (s.scorer, s.dimension))
        ],
        "constraints": constraints_of(example),
    }
