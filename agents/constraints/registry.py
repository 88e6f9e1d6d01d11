"""Constraint types, constraint instances and the id -> type registry.

A `ConstraintType` is the rule ("answer in fewer than N words"): its id,
description templates in English and Chinese, typed parameters, a sampler that
draws concrete parameters, and a checker. A `Constraint` is one rule with its
parameters fixed (`{"id": "length_constraints:number_words", "params":
{"relation": "less than", "num_words": 100}}`), the form stored on an example.

A few format types also carry a `repair`, a deterministic rewrite that makes
a response meet them (lowercase it, wrap it in quotes, append the end
phrase); `repair_all` applies those of the constraints a response fails, in
`REPAIR_ORDER`, and the caller re-checks every constraint on the result.

Family modules register their types on import: IFEval's (length, keywords,
formats, case, startend, language) and the project's own beyond them (style,
markup, content); importing `evoinstruct.agents.constraints` loads all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal

from evoinstruct.agents.constraints.language_names import LANGUAGE_NAMES
from evoinstruct.agents.constraints.text import named_loose_variants

LANGUAGES: tuple[str, ...] = ("en", "zh")
BOTH = frozenset(LANGUAGES)  # a type checked the same way in either language
RELATIONS: tuple[str, ...] = ("less than", "at least")
LESS_THAN, AT_LEAST = RELATIONS

ParamKind = Literal["int", "str", "words", "relation", "choice", "letter", "language"]


@dataclass(frozen=True)
class CheckResult:
    """Whether a response meets one constraint, and a short reason either way."""

    passed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason}


def _language_code(value: str) -> str:
    # A region ("zh-CN", "pt_BR") is dropped: langdetect tells languages apart, and
    # its own "zh-cn"/"zh-tw" are one Chinese here.
    return value.strip().lower().replace("_", "-").split("-")[0]


@dataclass(frozen=True)
class Param:
    """One typed parameter; `coerce` validates a raw value (from JSON or IFEval kwargs)."""

    name: str
    kind: ParamKind
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        kind = self.kind
        if kind == "int":
            return self._coerce_int(value)
        if kind == "words":
            if isinstance(value, str) or not isinstance(value, Sequence) or not value:
                raise ValueError(f"{self.name} must be a non-empty list of strings, got {value!r}")
            return [self._coerce_str(v) for v in value]
        text = self._coerce_str(value)
        if kind == "relation" and text not in RELATIONS:
            raise ValueError(f"{self.name} must be one of {list(RELATIONS)}, got {value!r}")
        if kind == "choice" and text not in self.choices:
            raise ValueError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
        if kind == "letter":
            # Any one character, lower-cased, as IFEval takes it: its data asks for "#"
            # and "!" as well as letters.
            text = text.lower()
            if len(text) != 1:
                raise ValueError(f"{self.name} must be one character, got {value!r}")
        if kind == "language":
            text = _language_code(text)
            if text not in LANGUAGE_NAMES:
                raise ValueError(
                    f"{self.name} {value!r} is not a language langdetect tells apart; "
                    f"known codes: {', '.join(sorted(LANGUAGE_NAMES))}"
                )
        return text

    def _coerce_int(self, value: Any) -> int:
        # JSON readers may hand back 3.0; bool is an int subclass but never a count.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.name} must be an integer, got {value!r}")
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            value = int(value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be <= {self.maximum}, got {value}")
        return value

    def _coerce_str(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{self.name} must be a non-empty string, got {value!r}")
        return value.strip()


@dataclass(frozen=True)
class SampleContext:
    """What a sampler may use: the rng, the target language, the instruction, words in use.

    `reserved` holds normalized words and phrases that constraints already
    chosen for the same instruction rely on; keyword samplers avoid them so one
    constraint never forbids what another requires.
    """

    rng: Random
    language: str
    instruction: str = ""
    reserved: frozenset[str] = frozenset()


Sampler = Callable[[SampleContext], dict[str, Any]]
Checker = Callable[[str, Mapping[str, Any]], CheckResult]
Repair = Callable[[str, Mapping[str, Any]], str]

# The order repairs run in when a response fails several constraints. Edits of the
# content come first: commas go before any fixed text is added (a repeated request or an
# end phrase must stay verbatim), a bullet's period right after them (a trailing comma
# becomes it), and the end phrase follows the postscript so that it stays last. The
# paragraph marker follows every repair that adds a paragraph (the postscript), so that
# the new one is marked too. Case changes come next so that the English text just added
# is in the required case as well; the end, postscript and repeat checks ignore case, so
# a case change cannot break them. Wrapping quotes go last: every later append would
# land outside them, while the end check looks past them.
REPAIR_ORDER: tuple[str, ...] = (
    "punctuation:no_comma",
    "markup:bullet_periods",
    "combination:repeat_prompt",
    "detectable_content:postscript",
    "startend:end_checker",
    "markup:paragraph_marker",
    "change_case:english_lowercase",
    "change_case:english_capital",
    "startend:quotation",
)


def _no_text(params: Mapping[str, Any]) -> list[str]:
    return []


def _never(params: Mapping[str, Any], text: str) -> bool:
    return False


def _no_extra_checks(params: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class ConstraintType:
    """A kind of verifiable constraint.

    Its descriptions are data: `prompts/phrasings/<language>.toml` holds several
    per language (`agents.constraints.phrasing`); `templates` is a fallback for
    a type registered in code that the files do not cover yet.
    `languages` are the instruction languages it may be *sampled* for; any
    constraint can be described and checked in both. Two types conflict when
    they share a group or either lists the other in `conflicts`.
    `required_text` is text a passing response must contain (keywords, end
    phrase); `clashes_with_text` says whether a response containing that text
    would break this constraint (a forbidden word, a comma under no_comma), so
    sampling can reject impossible combinations.
    `repair` (response, params) -> response, when set, rewrites a failing
    response so that this checker passes on it; it leaves the meaning alone
    and is only given to format rules a fixed edit can meet.
    """

    id: str
    params: tuple[Param, ...]
    languages: frozenset[str]
    sampler: Sampler
    checker: Checker
    groups: frozenset[str] = frozenset()
    conflicts: frozenset[str] = frozenset()
    required_text: Callable[[Mapping[str, Any]], list[str]] = _no_text
    clashes_with_text: Callable[[Mapping[str, Any], str], bool] = _never
    validate: Callable[[Mapping[str, Any]], None] = _no_extra_checks
    needs_instruction: bool = False
    repair: Repair | None = None
    templates: Mapping[str, str] = field(default_factory=dict)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Coerced parameters, or ValueError naming the type and the bad parameter."""
        if not isinstance(params, Mapping):
            raise ValueError(f"{self.id}: parameters must be a mapping, got {params!r}")
        names = self.param_names
        unknown = sorted(set(params) - set(names))
        missing = [n for n in names if n not in params]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown parameter(s) {unknown}")
            if missing:
                parts.append(f"missing parameter(s) {missing}")
            raise ValueError(f"{self.id}: {'; '.join(parts)}; expected {list(names)}")
        try:
            out = {p.name: p.coerce(params[p.name]) for p in self.params}
            self.validate(out)
        except ValueError as exc:
            raise ValueError(f"{self.id}: {exc}") from None
        return out

    def conflicts_with(self, other: ConstraintType) -> bool:
        return (
            self.id == other.id
            or bool(self.groups & other.groups)
            or other.id in self.conflicts
            or self.id in other.conflicts
        )

    def describe_by_template(self, params: Mapping[str, Any], language: str) -> str:
        """The type's `templates` sentence; `phrasing.describe` falls back to it."""
        if language not in self.templates:
            raise ValueError(f"{self.id}: no description for language {language!r}")
        rendered = {p.name: render_value(params[p.name], p.kind, language) for p in self.params}
        return self.templates[language].format_map(rendered)


_RELATION_TEXT = {
    "en": {LESS_THAN: "fewer than", AT_LEAST: "at least"},
    "zh": {LESS_THAN: "少于", AT_LEAST: "至少"},
}


def render_value(value: Any, kind: ParamKind, language: str) -> str:
    """A parameter value as it reads inside a description in `language`."""
    if kind == "words":
        if language == "zh":
            return "、".join(f"“{v}”" for v in value)
        return ", ".join(f'"{v}"' for v in value)
    if kind == "relation":
        return _RELATION_TEXT[language][value]
    if kind == "language":
        return LANGUAGE_NAMES[value][LANGUAGES.index(language)]
    return str(value)


REGISTRY: dict[str, ConstraintType] = {}


def register(ctype: ConstraintType) -> ConstraintType:
    """Add a type to REGISTRY; ids are unique (its phrasings are checked by the tests)."""
    if ctype.id in REGISTRY:
        raise ValueError(f"constraint id {ctype.id!r} is registered twice")
    if ctype.repair is not None and ctype.id not in REPAIR_ORDER:
        # Where a repair runs among the others decides which combinations it can fix.
        raise ValueError(f"{ctype.id}: has a repair but no place in REPAIR_ORDER")
    REGISTRY[ctype.id] = ctype
    return ctype


def get_type(constraint_id: str) -> ConstraintType:
    """The registered type, or ValueError listing near ids."""
    try:
        return REGISTRY[constraint_id]
    except (KeyError, TypeError):
        family = str(constraint_id).split(":")[0]
        near = sorted(i for i in REGISTRY if i.startswith(family + ":")) or sorted(REGISTRY)
        raise ValueError(
            f"unknown constraint id {constraint_id!r}; known ids include {near[:8]}"
        ) from None


def _empty_params() -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Constraint:
    """One constraint with concrete parameters; validated on construction, JSON-serializable.

    Treat `params` as read-only: it is a plain dict so that the constraint
    pickles and serializes everywhere, and its values are ints, strings and
    lists of strings.
    """

    id: str
    params: dict[str, Any] = field(default_factory=_empty_params)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", get_type(self.id).validate_params(self.params))

    def __hash__(self) -> int:
        return hash((self.id, json.dumps(self.params, sort_keys=True, ensure_ascii=False)))

    @property
    def type(self) -> ConstraintType:
        return REGISTRY[self.id]

    def check(self, response: str, *, loose: bool = False) -> CheckResult:
        """Strict check; with `loose`, pass if any of IFEval's loose variants passes."""
        if not response.strip():
            return CheckResult(False, "empty response")
        strict = self.type.checker(response, self.params)
        if strict.passed or not loose:
            return strict
        for name, variant in named_loose_variants(response):
            if name == "as is":
                continue
            result = self.type.checker(variant, self.params)
            if result.passed:
                return CheckResult(True, f"{result.reason} (loose: {name})")
        return strict

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "params": {k: _plain(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraint:
        if not isinstance(data, Mapping) or "id" not in data:
            raise ValueError(f"a constraint needs an 'id', got {data!r}")
        unknown = sorted(set(data) - {"id", "params"})
        if unknown:
            raise ValueError(f"unknown constraint field(s) {unknown}")
        return cls(data["id"], dict(data.get("params") or {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Constraint:
        return cls.from_dict(json.loads(text))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def check_all(
    constraints: Iterable[Constraint], response: str, *, loose: bool = False
) -> list[CheckResult]:
    """One result per constraint, in order."""
    return [c.check(response, loose=loose) for c in constraints]


def all_passed(results: Iterable[CheckResult]) -> bool:
    """True when every result passed (and vacuously for none)."""
    return all(r.passed for r in results)


def repair_all(constraints: Iterable[Constraint], response: str) -> tuple[str, list[str]]:
    """`response` after the repairs of the constraints it fails, and the ids repaired.

    Repairs run in REPAIR_ORDER and each constraint is checked on the text as
    the earlier repairs left it, so an end phrase appended before a lowercase
    repair is lowercased with the rest even when the answer was lowercase as
    drawn. Nothing guarantees the result passes (a constraint without a
    repair may still fail, or a repair may break it): re-check it.
    """
    repairable = [c for c in constraints if c.type.repair is not None]
    repairable.sort(key=lambda c: REPAIR_ORDER.index(c.id))
    text = response
    repaired: list[str] = []
    for constraint in repairable:
        repair = constraint.type.repair
        if repair is not None and not constraint.check(text).passed:
            text = repair(text, constraint.params)
            repaired.append(constraint.id)
    return text, repaired


def dump_constraints(constraints: Iterable[Constraint]) -> list[dict[str, Any]]:
    """JSON-ready list, e.g. for `example.meta["constraints"]`."""
    return [c.to_dict() for c in constraints]


def load_constraints(data: Iterable[Mapping[str, Any]]) -> list[Constraint]:
    """Inverse of `dump_constraints`; ValueError on an unknown id or bad parameters."""
    return [Constraint.from_dict(d) for d in data]


def compare(count: int, relation: str, target: int) -> bool:
    """`count < target` for "less than", `count >= target` for "at least"."""
    return count < target if relation == LESS_THAN else count >= target


def counted(count: int, unit: str, relation: str, target: int) -> CheckResult:
    """A relation check's result with a reason such as "120 words; needs fewer than 100"."""
    wanted = "fewer than" if relation == LESS_THAN else "at least"
    ok = compare(count, relation, target)
    return CheckResult(ok, f"{count} {unit}; {'meets' if ok else 'needs'} {wanted} {target}")


def exactly(count: int, unit: str, target: int) -> CheckResult:
    """An exact-count check's result with a reason."""
    ok = count == target
    return CheckResult(ok, f"{count} {unit}; {'meets' if ok else 'needs'} exactly {target}")
