"""What training may carry and what only the held-out suite asks: types and phrasings.

One definition, `HeldOutConfig` (the run config's `[trainer.suite.held_out]`),
resolved into a `ConstraintSplit` that every side consults:

* the evolver draws only training types, described only in training phrasings;
* the suite builds its three parts from it (in-distribution, held-out
  phrasing, held-out type);
* the trainer's guard and export drop any example that carries a held-out
  type or a suite-only phrasing, by what it stores or by its text, whatever
  its source (a seed file, a model's rewrite, a pool from before the split).

Held-out types, by default one per family whose skill another type of the
family trains: the suite then asks whether the skill transfers to a form the
student never saw. In each pair the held-out one is the type outside IFEval's
25 where there is one (numbered_list beside bullet lists, start_checker beside
end_checker), so every IFEval type but three stays trainable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evoinstruct.agents.constraints.phrasing import (
    SUITE,
    TRAIN,
    Phrasing,
    all_phrasings,
    get_phrasing,
    phrasing_ids,
    phrasings_for,
)
from evoinstruct.agents.constraints.registry import REGISTRY, Constraint
from evoinstruct.text.rules import normalize

# (held out, the trained type of the same family that teaches its skill)
DEFAULT_HELD_OUT: dict[str, str] = {
    "length_constraints:number_sentences": "length_constraints:number_words",
    "keywords:frequency": "keywords:existence",
    "detectable_format:numbered_list": "detectable_format:number_bullet_lists",
    "change_case:english_capital": "change_case:english_lowercase",
    "startend:start_checker": "startend:end_checker",
}


class HeldOutConfig(BaseModel):
    """Constraint types and phrasings no training example carries; the suite measures them."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HELD_OUT),
        description=(
            "Constraint types held out of training entirely (the suite's held-out-type part): "
            "by default one per family whose skill a sibling type trains."
        ),
    )
    suite_phrasings: list[str] | None = Field(
        None,
        description=(
            "Phrasing ids only the suite uses (its held-out-phrasing part); unset: those "
            'marked split = "suite" in prompts/phrasings/<language>.toml.'
        ),
    )

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown constraint id(s) {unknown}")
        return list(dict.fromkeys(value))

    @field_validator("suite_phrasings")
    @classmethod
    def _known_phrasings(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        known = {p.id for p in all_phrasings()}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown phrasing id(s) {unknown[:5]}")
        return list(dict.fromkeys(value))


@dataclass(frozen=True)
class ConstraintSplit:
    """The resolved split: held-out types and the ids of suite-only phrasings."""

    held_out_types: frozenset[str]
    suite_only: frozenset[str]

    @classmethod
    def from_config(cls, cfg: HeldOutConfig | None = None) -> ConstraintSplit:
        cfg = cfg or HeldOutConfig()
        return _resolve(
            tuple(cfg.types), None if cfg.suite_phrasings is None else tuple(cfg.suite_phrasings)
        )

    # --- what each side may use -----------------------------------------------------------
    def is_training_phrasing(self, phrasing: Phrasing) -> bool:
        return phrasing.type_id not in self.held_out_types and phrasing.id not in self.suite_only

    def training_phrasings(self, type_id: str, language: str) -> tuple[Phrasing, ...]:
        """What training examples may say for this type ((): the type is held out)."""
        return tuple(p for p in phrasings_for(type_id, language) if self.is_training_phrasing(p))

    def suite_phrasings(self, type_id: str, language: str) -> tuple[Phrasing, ...]:
        """The suite-only phrasings of a trained type (its held-out-phrasing part)."""
        if type_id in self.held_out_types:
            return ()
        return tuple(p for p in phrasings_for(type_id, language) if p.id in self.suite_only)

    def training_choices(self, language: str) -> dict[str, tuple[Phrasing, ...]]:
        """Type id -> its training phrasings, for every type that has some."""
        return {tid: found for tid in REGISTRY if (found := self.training_phrasings(tid, language))}

    # --- what training must not carry -------------------------------------------------------
    @property
    def forbidden(self) -> tuple[Phrasing, ...]:
        """Every phrasing training must not carry: suite-only ones, and all of held-out types."""
        return _forbidden(self)

    def violation(
        self,
        texts: Iterable[str],
        constraints: Sequence[Constraint | Mapping[str, Any]] = (),
        layout: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Why an example may not train (None: it may): a held-out type among its stored
        constraints, a suite-only phrasing its layout names, or either found in its text."""
        for c in constraints:
            cid = c.id if isinstance(c, Constraint) else c.get("id")
            if cid in self.held_out_types:
                return f"held_out_type:{cid}"
        for pid in phrasing_ids(layout):
            if pid in self.suite_only:
                return f"suite_phrasing:{pid}"
        normalized = [normalize(t) for t in texts if t]
        if not normalized:
            return None
        for phrasing in self.forbidden:
            if any(phrasing.found_in(n) for n in normalized):
                if phrasing.type_id in self.held_out_types:
                    return f"held_out_type:{phrasing.type_id}"
                return f"suite_phrasing:{phrasing.id}"
        return None


@cache
def _resolve(types: tuple[str, ...], suite: tuple[str, ...] | None) -> ConstraintSplit:
    if suite is None:
        suite_only = frozenset(p.id for p in all_phrasings() if p.split == SUITE)
    else:
        suite_only = frozenset(get_phrasing(i).id for i in suite)
    return ConstraintSplit(frozenset(types), suite_only)


@cache
def _forbidden(split: ConstraintSplit) -> tuple[Phrasing, ...]:
    return tuple(
        p for p in all_phrasings() if p.type_id in split.held_out_types or p.id in split.suite_only
    )


def default_split() -> ConstraintSplit:
    """The split of the default config (what a caller that names none gets)."""
    return ConstraintSplit.from_config()


__all__ = [
    "DEFAULT_HELD_OUT",
    "SUITE",
    "TRAIN",
    "ConstraintSplit",
    "HeldOutConfig",
    "default_split",
]
