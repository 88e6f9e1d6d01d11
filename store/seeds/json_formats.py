"""The JSON record formats: Self-Instruct seed tasks, Alpaca, ShareGPT and OpenAI chat
messages. Each reader turns one record into drafts, refusing a missing, blank or mistyped
field by name; a conversation keeps its first exchange and carries later turns in meta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.seed_fields import (
    FLAT_FIELDS,
    extra_fields,
    missing_field_hint,
    unread_key_problem,
)
from evoinstruct.store.seeds.errors import Record, _brief, _fail, _json_type

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}


def _object(path: Path, record: Record) -> dict[str, Any]:
    if not isinstance(record.value, dict):
        raise _fail(
            path, record, "(record)", f"expected a JSON object, found {_json_type(record.value)}"
        )
    return record.value


def _string(path: Path, record: Record, obj: dict[str, Any], field: str, *, required: bool) -> str:
    value = obj.get(field)
    if value is None:
        if required:
            present = [k for k, v in obj.items() if v not in ("", None)]
            hint = missing_field_hint(field, present, FLAT_FIELDS)
            raise _fail(path, record, field, "missing" + hint)
        return ""
    if not isinstance(value, str):
        raise _fail(path, record, field, f"expected a string, found {_json_type(value)}")
    if required and not value.strip():
        raise _fail(path, record, field, "blank")
    return value.strip()


def _selfinstruct(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    instruction = _string(path, record, obj, "instruction", required=True)
    instances = obj.get("instances")
    if not isinstance(instances, list) or not instances:
        raise _fail(path, record, "instances", "expected a non-empty list of {input, output}")
    is_classification = obj.get("is_classification", False)
    if not isinstance(is_classification, bool):
        raise _fail(path, record, "is_classification", "expected true or false")
    for key in ("id", "name"):
        # Kept in meta as they are: a nested value there would be stored, unread, forever.
        if isinstance(obj.get(key), dict | list):
            raise _fail(path, record, key, f"expected a string, found {_json_type(obj[key])}")
    meta = {
        "seed_id": obj.get("id"),
        "name": obj.get("name"),
        "is_classification": is_classification,
    }
    drafts = []
    for i, instance in enumerate(instances):
        field = f"instances[{i}]"
        if not isinstance(instance, dict):
            raise _fail(path, record, field, "expected an object with input and output")
        inner = Record(instance, record.line, record.index)
        input_ = _string(path, inner, instance, "input", required=False)
        output = _string(path, inner, instance, "output", required=False)
        drafts.append(ExampleDraft(instruction, input_, output or None, meta=dict(meta)))
    return drafts


def _alpaca(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    instruction = _string(path, record, obj, "instruction", required=True)
    input_ = _string(path, record, obj, "input", required=False)
    output = _string(path, record, obj, "output", required=False)
    system = _string(path, record, obj, "system", required=False)
    present = [k for k, v in obj.items() if v not in ("", None)]
    for key in present:  # an empty value loses nothing when it is skipped
        if (problem := unread_key_problem(key, present, FLAT_FIELDS)) is not None:
            raise _fail(path, record, key, problem)
    extra = extra_fields(obj, FLAT_FIELDS)
    meta = {"extra": extra} if extra else {}
    return [ExampleDraft(instruction, input_, output or None, system=system, meta=meta)]


def _turns_to_draft(
    path: Path, record: Record, turns: list[tuple[str, str]], field: str
) -> ExampleDraft:
    """system? user (assistant user)* assistant? → the first exchange, later turns kept in meta."""
    system = ""
    if turns and turns[0][0] == "system":
        system = turns.pop(0)[1]
    if not turns:
        raise _fail(path, record, field, "no user turn")
    for i, (role, _) in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise _fail(
                path, record, f"{field}[{i}]", f"expected a {expected} turn here, found {role}"
            )
    instruction = turns[0][1]
    if not instruction.strip():
        raise _fail(path, record, f"{field}[0]", "the first user turn is blank")
    output = turns[1][1] if len(turns) > 1 else None
    meta = (
        {"extra_turns": [{"role": r, "content": c} for r, c in turns[2:]]} if len(turns) > 2 else {}
    )
    return ExampleDraft(instruction.strip(), "", output or None, system=system, meta=meta)


def _chat_turns(
    path: Path,
    record: Record,
    obj: dict[str, Any],
    list_key: str,
    role_key: str,
    text_key: str,
    roles: dict[str, str],
    *,
    fold_case: bool,
) -> list[tuple[str, str]]:
    """(role, text) pairs of a ShareGPT or OpenAI conversation, roles mapped to system/user/assistant."""
    items = obj.get(list_key)
    if not isinstance(items, list) or not items:
        raise _fail(
            path, record, list_key, f"expected a non-empty list of {{{role_key}, {text_key}}}"
        )
    turns = []
    for i, item in enumerate(items):
        field = f"{list_key}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get(text_key), str):
            raise _fail(
                path, record, field, f"expected {{{role_key}, {text_key}}} with a string {text_key}"
            )
        raw = item.get(role_key)
        role = roles.get(raw.lower() if fold_case else raw) if isinstance(raw, str) else None
        if role is None:
            known = ", ".join(dict.fromkeys(roles))
            raise _fail(
                path, record, f"{field}.{role_key}", f"unknown role {_brief(raw)} ({known})"
            )
        turns.append((role, item[text_key]))
    return turns


def _sharegpt(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    turns = _chat_turns(
        path, record, obj, "conversations", "from", "value", SHAREGPT_ROLES, fold_case=True
    )
    system = _string(path, record, obj, "system", required=False)
    if system and turns[0][0] != "system":
        turns.insert(0, ("system", system))
    return [_turns_to_draft(path, record, turns, "conversations")]


def _openai(path: Path, record: Record) -> list[ExampleDraft]:
    obj = _object(path, record)
    turns = _chat_turns(
        path, record, obj, "messages", "role", "content", OPENAI_ROLES, fold_case=False
    )
    return [_turns_to_draft(path, record, turns, "messages")]
