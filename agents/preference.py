"""Preference pairs from verification: which answers of one draw may be chosen or rejected.

Rejection sampling (the responder) draws several answers to one prompt with verifiable
constraints and checks each; SPaR and Tülu 3 turn such draws into DPO pairs with no
judge at all. The rules, one place for all of them:

* **Chosen** passes every constraint of the prompt, strictly, as checked here. It is a
  whole answer (not cut at the token limit, even when the responder keeps cut answers:
  a cut answer that happens to pass would teach the student to stop mid-sentence) with
  some content (letters or digits: "." passes no_comma).
* **A repaired answer may be chosen** (`repaired_chosen`): the responder's programmatic
  repair (lowercase it, wrap it in quotes, append the end phrase...) is re-verified, so
  it passes strictly too, but its text is partly the repair's, not the model's. It is
  paired with the one answer it was repaired from and nothing else: the two differ in
  exactly what the failing constraint asks (SPaR's refinement pairs, built to keep
  differences that have nothing to do with the instruction out of the pair).
* **Rejected** fails at least one constraint strictly and has content. An answer cut
  at the token limit is not rejected by default (`truncated_rejected`): its failure may
  be the cut itself (an end phrase or postscript it never reached), and such a pair
  teaches "be short" more than "follow the instruction" — the loop's answers already
  shrink round by round.
* **No pair without a passing answer**, and none across prompts: both answers of a pair
  come from the same draw for the same prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.constraints import Constraint, check_all
from evoinstruct.models.base import Choice
from evoinstruct.store.records import PreferencePair


class PairsConfig(BaseModel):
    """Preference pairs from the responder's rejection sampling (METHODS 4)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Store verified pairs (an answer passing every constraint strictly, one failing at least one) of each constrained draw.",
    )
    repaired_chosen: bool = Field(
        True,
        description="A programmatically repaired answer (re-verified) may be chosen, paired only with the answer it was repaired from.",
    )
    truncated_rejected: bool = Field(
        False,
        description="An answer cut at max_tokens may be rejected (its failure may be the cut itself, so off by default).",
    )


def has_content(text: str) -> bool:
    """Letters or digits: an answer of punctuation alone is no answer."""
    return any(ch.isalnum() for ch in text)


def verified_pairs(
    example_id: str,
    choices: Sequence[Choice],
    constraints: Sequence[Constraint],
    config: PairsConfig,
    *,
    model_version: str | None = None,
    repaired: tuple[int, str, list[str]] | None = None,
) -> list[PreferencePair]:
    """Every (chosen, rejected) pair of one draw for one prompt, by the module's rules.

    `repaired` is the responder's repair of the draw, if it kept one: (index of the
    answer repaired, the repaired text, the constraint ids repaired).
    """
    if not config.enabled or not constraints:
        return []
    texts = [c.text.strip() for c in choices]
    whole = [c.finish_reason != "length" for c in choices]
    failed: list[list[str] | None] = []  # None: no content, never in a pair
    for text in texts:
        if not has_content(text):
            failed.append(None)
            continue
        results = check_all(list(constraints), text)
        failed.append([c.id for c, r in zip(constraints, results, strict=True) if not r.passed])
    chosen = [i for i, f in enumerate(failed) if f == [] and whole[i]]
    rejected = [i for i, f in enumerate(failed) if f and (whole[i] or config.truncated_rejected)]
    pairs: dict[tuple[str, str], PreferencePair] = {}

    def add(chosen_text: str, index: int, repairs: list[str]) -> None:
        key = (chosen_text, texts[index])
        if key not in pairs:
            pairs[key] = PreferencePair(
                example_id=example_id,
                chosen=chosen_text,
                rejected=texts[index],
                rejected_failed=list(failed[index] or []),
                chosen_repaired=repairs,
                rejected_truncated=not whole[index],
                model_version=model_version,
            )

    for c in chosen:
        for r in rejected:
            add(texts[c], r, [])
    if repaired is not None and config.repaired_chosen:
        index, text, repairs = repaired
        if index in rejected and _passes(text, constraints):
            add(text, index, list(repairs))
    return list(pairs.values())


def _passes(text: str, constraints: Sequence[Constraint]) -> bool:
    # The responder re-verified its repair; checked again here so that no chosen answer
    # is ever taken on another module's word.
    return has_content(text) and all(r.passed for r in check_all(list(constraints), text))
