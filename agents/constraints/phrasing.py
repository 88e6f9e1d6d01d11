"""Phrasings: the several ways each constraint type is described, in each language, as data.

`prompts/phrasings/<language>.toml` holds, per registry type, phrasings with a
stable id (`<type>/<language>/<key>`), a split ("train": training examples may
carry it; "suite": only the held-out suite does) and the positions where it
reads naturally: before the task, after it, or between two of its sentences.
A suite that asks in the very sentences the student trained on measures memory
of those sentences (METHODS 5.2), so the suite keeps some phrasings to itself.

`layout` draws a phrasing and a position per constraint and `render_prompt`
places them around a task; both the evolver and the suite use them, so the
suite's in-distribution part reads exactly like training data. `Phrasing.pattern`
recognises a phrasing in any text whatever its parameters, which is how the
trainer's guard finds a suite-only sentence in an example from any source.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from random import Random
from string import Formatter
from typing import Any, Literal

from evoinstruct.agents.constraints.registry import (
    LANGUAGES,
    REGISTRY,
    RELATIONS,
    Constraint,
    ParamKind,
    render_value,
)
from evoinstruct.text.rules import normalize

Position = Literal["before", "after", "between"]
POSITIONS: tuple[str, ...] = ("before", "after", "between")
SPLITS: tuple[str, ...] = ("train", "suite")
TRAIN, SUITE = SPLITS
PHRASINGS_DIR = "phrasings"
CANONICAL_KEY = "a"
# Parameters a description never states: the request to repeat is the task itself.
UNSTATED: frozenset[str] = frozenset({"prompt_to_repeat"})
# The request to repeat is the text before this sentence: nothing may move in front of it.
LAST = "combination:repeat_prompt"
# Where an example keeps its prompt's layout (`layout_meta`) beside meta["constraints"].
LAYOUT_KEY = "constraint_layout"
# Where one sentence may end and the next begin: after . ! ? (and a closing quote or
# bracket) and white space, so "3.5" stays whole; or after a Chinese terminator.
_SENTENCE = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"”’)\]]))\s+|(?:(?<=[。！？])|(?<=[。！？][”」』）]))\s*"
)
_QUOTE_PAIRS = (("“", "”"), ("「", "」"), ("『", "』"))


class PhrasingError(ValueError):
    """A phrasing file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Phrasing:
    """One description of a constraint type in one language."""

    type_id: str
    language: str
    key: str
    text: str
    split: str = TRAIN
    at: tuple[str, ...] = ("after",)

    @property
    def id(self) -> str:
        return f"{self.type_id}/{self.language}/{self.key}"

    def render(self, params: Mapping[str, Any]) -> str:
        """The sentence with the constraint's parameters as they read in its language."""
        kinds = {p.name: p.kind for p in REGISTRY[self.type_id].params}
        values = {name: render_value(params[name], kinds[name], self.language) for name in kinds}
        return self.text.format_map(values)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """Finds this phrasing, with any parameters, in text normalised by `normalize`."""
        kinds = {p.name: p.kind for p in REGISTRY[self.type_id].params}
        parts: list[str] = []
        for literal, name, _, _ in Formatter().parse(self.text):
            parts.append(re.escape(_normalize_piece(literal)).replace(r"\ ", " "))
            if name is not None:
                parts.append(_value_pattern(kinds[name], self.language))
        body = "".join(parts).strip()
        return re.compile(body)

    @cached_property
    def anchor(self) -> str:
        """The longest fixed piece of the sentence: text without it cannot contain it."""
        pieces = (_normalize_piece(lit).strip() for lit, _, _, _ in Formatter().parse(self.text))
        return max(pieces, key=len, default="")

    def found_in(self, normalized: str) -> bool:
        """Whether text already passed through `normalize` contains this phrasing."""
        # The substring test first: a pool holds many examples and most carry none of these.
        if self.anchor not in normalized:
            return False
        return self.pattern.search(normalized) is not None


def _normalize_piece(text: str) -> str:
    # normalize without the strip: the spaces around a parameter are part of the text.
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold())


def _value_pattern(kind: ParamKind, language: str) -> str:
    """What a rendered parameter of this kind may look like (after normalisation)."""
    if kind == "int":
        return r"\d+"
    if kind == "relation":
        options = (normalize(render_value(r, kind, language)) for r in RELATIONS)
        return "(?:" + "|".join(re.escape(o) for o in options) + ")"
    if kind == "letter":
        return "[a-z]"
    if kind == "words":
        # render_value quotes each word: "a", "b" in English, “a”、“b” in Chinese.
        if language == "zh":
            return r"“[^”]{1,80}”(?:、“[^”]{1,80}”)*"
        return r'"[^"]{1,80}"(?:, "[^"]{1,80}")*'
    # Free text (a phrase, a marker, a language name) stops at quotes, so a match never
    # runs from one quoted value into another constraint's sentence.
    return r'[^"“”]{1,120}?'


@dataclass(frozen=True)
class Placed:
    """A constraint with the phrasing that describes it and where that sentence goes."""

    constraint: Constraint
    phrasing: Phrasing
    position: str = "after"

    def text(self) -> str:
        return self.phrasing.render(self.constraint.params)


# --- loading -------------------------------------------------------------------------------
def _file_text(language: str) -> str:
    path = resources.files("evoinstruct.prompts") / PHRASINGS_DIR / f"{language}.toml"
    return path.read_text(encoding="utf-8")


def parse_phrasings(text: str, language: str, source: str) -> list[Phrasing]:
    """Phrasings of one language from TOML text; PhrasingError naming `source` and the entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PhrasingError(f"{source}: {exc}") from None
    out: list[Phrasing] = []
    for type_id, entries in data.items():
        if type_id not in REGISTRY:
            raise PhrasingError(f"{source}: [{type_id}]: not a registered constraint type")
        if not isinstance(entries, dict):
            raise PhrasingError(f"{source}: [{type_id}] must be a table of phrasings")
        for key, entry in entries.items():
            out.append(_phrasing(type_id, language, key, entry, f"{source}: [{type_id}] {key}"))
    return out


def _phrasing(type_id: str, language: str, key: str, entry: Any, where: str) -> Phrasing:
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
        raise PhrasingError(f"{where}: needs a text")
    unknown = sorted(set(entry) - {"text", "split", "at"})
    if unknown:
        raise PhrasingError(f"{where}: unknown field(s) {unknown}")
    split = entry.get("split", TRAIN)
    if split not in SPLITS:
        raise PhrasingError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
    at = entry.get("at", ["after"])
    if not isinstance(at, list) or not at or any(a not in POSITIONS for a in at):
        raise PhrasingError(f"{where}: at must be a list drawn from {list(POSITIONS)}, got {at!r}")
    if type_id == LAST and at != ["after"]:
        raise PhrasingError(f'{where}: {LAST} always follows the task (at = ["after"])')
    text = entry["text"].strip()
    try:
        named = {name for _, name, _, _ in Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise PhrasingError(f"{where}: {exc} (write literal braces as {{{{ }}}})") from None
    params = set(REGISTRY[type_id].param_names)
    if named - params:
        raise PhrasingError(f"{where}: unknown parameter(s) {sorted(named - params)}")
    if params - UNSTATED - named:
        # The checker tests these values: a sentence that leaves one out asks for less.
        raise PhrasingError(f"{where}: does not state {sorted(params - UNSTATED - named)}")
    return Phrasing(type_id, language, str(key), text, split, tuple(at))


@cache
def all_phrasings() -> tuple[Phrasing, ...]:
    """Every packaged phrasing, both languages, in file order; ids are unique."""
    out: list[Phrasing] = []
    for language in LANGUAGES:
        source = f"prompts/{PHRASINGS_DIR}/{language}.toml"
        out.extend(parse_phrasings(_file_text(language), language, source))
    return tuple(out)


@cache
def _by_type() -> dict[tuple[str, str], tuple[Phrasing, ...]]:
    grouped: dict[tuple[str, str], list[Phrasing]] = {}
    for p in all_phrasings():
        grouped.setdefault((p.type_id, p.language), []).append(p)
    return {k: tuple(v) for k, v in grouped.items()}


def phrasings_for(type_id: str, language: str) -> tuple[Phrasing, ...]:
    """Every phrasing of a type in a language (empty for a type the files do not cover)."""
    return _by_type().get((type_id, language), ())


@cache
def _by_id() -> dict[str, Phrasing]:
    return {p.id: p for p in all_phrasings()}


def get_phrasing(phrasing_id: str) -> Phrasing:
    try:
        return _by_id()[phrasing_id]
    except KeyError:
        raise ValueError(f"unknown phrasing id {phrasing_id!r}") from None


def canonical(type_id: str, language: str) -> Phrasing | None:
    """The type's standard description: phrasing "a", else its first one."""
    found = phrasings_for(type_id, language)
    return next((p for p in found if p.key == CANONICAL_KEY), found[0] if found else None)


def describe(constraint: Constraint, language: str) -> str:
    """The constraint's instruction sentence in `language`: its type's canonical phrasing,
    else the type's template."""
    phrasing = canonical(constraint.id, language)
    if phrasing is not None:
        return phrasing.render(constraint.params)
    return constraint.type.describe_by_template(constraint.params, language)


def describe_all(constraints: Iterable[Constraint], language: str) -> str:
    """The constraints' sentences joined as they would follow an instruction.

    combination:repeat_prompt goes last, so "repeat the request" reads after
    every other sentence; its checker only needs the response to start with
    the original instruction, which holds whether or not the model also
    repeats the other sentences.
    """
    items = sorted(constraints, key=lambda c: c.id == "combination:repeat_prompt")
    sep = "" if language == "zh" else " "
    return sep.join(describe(c, language) for c in items)


# --- placing ------------------------------------------------------------------------------
def layout(
    constraints: Sequence[Constraint],
    language: str,
    rng: Random,
    choose: Mapping[str, Sequence[Phrasing]],
) -> list[Placed]:
    """A phrasing (from `choose[type id]`) and a position for each constraint, drawn with `rng`.

    With repeat_prompt among them every sentence follows the task, since the
    request it asks to repeat is the text before it.
    """
    fixed = any(c.id == LAST for c in constraints)
    placed = []
    for c in constraints:
        options = choose.get(c.id) or ()
        if not options:
            raise ValueError(f"no phrasing of {c.id} to choose from in {language!r}")
        phrasing = rng.choice(list(options))
        position = "after" if fixed else rng.choice(list(phrasing.at))
        placed.append(Placed(c, phrasing, position))
    return placed


def render_prompt(task: str, placed: Sequence[Placed], language: str) -> str:
    """The task with each constraint's sentence where its position says.

    "between" goes after the task's first sentence (after the task when it has
    only one); repeat_prompt's sentence comes last. A task written over several
    lines keeps its sentences apart from the constraints by a blank line.
    """
    task = task.strip()
    ordered = sorted(placed, key=lambda p: p.constraint.id == LAST)
    before = [p.text() for p in ordered if p.position == "before"]
    between = [p.text() for p in ordered if p.position == "between"]
    after = [p.text() for p in ordered if p.position == "after"]
    sep = "" if language == "zh" else " "
    block = "\n\n" if "\n" in task else sep
    body = task
    if between:
        head, tail = _split_first_sentence(task)
        if tail:
            body = sep.join([head, *between, tail])
        else:
            after = between + after
    pieces = [sep.join(before)] if before else []
    pieces.append(body)
    if after:
        pieces.append(sep.join(after))
    return block.join(pieces)


def _split_first_sentence(task: str) -> tuple[str, str]:
    """The task's first sentence and the rest ("" when there is no second sentence); a
    sentence end inside a quoted passage is no place for an instruction."""
    if "\n" in task:
        return task, ""
    for match in _SENTENCE.finditer(task):
        head, tail = task[: match.start()], task[match.end() :]
        if not tail.strip():
            break
        if not _inside_quotes(head):
            return head, tail
    return task, ""


def _inside_quotes(text: str) -> bool:
    """Whether `text` ends inside a quotation it opened."""
    if text.count('"') % 2:
        return True
    return any(text.count(o) > text.count(c) for o, c in _QUOTE_PAIRS)


def layout_meta(task: str, placed: Sequence[Placed]) -> dict[str, Any]:
    """What an example stores about its prompt: the bare task and each sentence's phrasing."""
    return {
        "task": task,
        "phrasings": [p.phrasing.id for p in placed],
        "at": [p.position for p in placed],
    }


def placed_from_meta(constraints: Sequence[Constraint], meta: Mapping[str, Any]) -> list[Placed]:
    """The placed sentences a stored layout describes (ValueError if it does not fit)."""
    ids, at = meta.get("phrasings"), meta.get("at")
    if (
        not isinstance(ids, list)
        or not isinstance(at, list)
        or not (len(ids) == len(at) == len(constraints))
    ):
        raise ValueError(f"a layout needs one phrasing and position per constraint, got {meta!r}")
    return [Placed(c, get_phrasing(i), a) for c, i, a in zip(constraints, ids, at, strict=True)]


def phrasing_ids(meta: Mapping[str, Any] | None) -> list[str]:
    """The phrasing ids an example's stored layout names ([] for none or an unreadable one)."""
    ids = (meta or {}).get("phrasings") if isinstance(meta, Mapping) else None
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def phrasings_in(text: str, candidates: Iterable[Phrasing]) -> list[Phrasing]:
    """The candidates whose sentence appears in `text` (any parameters)."""
    normalized = normalize(text)
    return [p for p in candidates if p.found_in(normalized)]
