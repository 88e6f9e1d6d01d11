"""The `dpo` export: verified preference pairs as prompt/chosen/rejected rows.

One row per pair (`store.preferences`): `prompt` is the user turn (instruction, then the
input after a blank line), `chosen` an answer that passes every verifiable constraint of
the prompt strictly, `rejected` an answer to the same prompt, from the same draw, that
fails at least one; `system` the system prompt both were drawn with. TRL's DPOTrainer
reads the rows as they are (its standard preference format), and LLaMA-Factory as an
alpaca-formatted preference data set (`ranking: true`, the dataset_info.json entry).

The export filter applies to the example a pair belongs to (status, source) and to the
round the pair was drawn in; with the default status, only pairs of accepted examples go
out, so what the pool dropped (duplicates, contamination, the suite's prompts) never does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.export.names import model_name
from evoinstruct.store.export.rows import constraints_of, user_text
from evoinstruct.store.export.selection import ExportFilter
from evoinstruct.store.records import Example
from evoinstruct.text.rules import language_of

PAIRS_FORMAT = "dpo"
COLUMNS = [
    ("prompt", "the user turn: the instruction, then its input after a blank line"),
    ("chosen", "an answer that passes every verifiable constraint of the prompt (strict check)"),
    ("rejected", "an answer to the same prompt, from the same draw, failing at least one"),
    ("system", "system prompt both answers were drawn with (may be empty)"),
]
LINEAGE_COLUMNS = [
    ("id", "content-hash id of the pair"),
    ("example_id", "the pool example whose prompt was answered (`evoinstruct inspect example ID`)"),
    ("round", "the round the answers were drawn in"),
    ("model_version", "the model that drew both answers, by name"),
    ("rejected_failed", "the constraint ids the rejected answer fails (strict)"),
    (
        "chosen_repaired",
        "constraint ids the chosen answer was repaired on in code (empty: as drawn)",
    ),
    ("rejected_truncated", "whether the rejected answer was cut at the token limit"),
    ("constraints", "the prompt's verifiable constraints `{id, params}` (IFEval ids)"),
]


def check_filter(filt: ExportFilter) -> None:
    if filt.min_scores:
        raise InputError(
            "--min-score filters examples by their scores; a dpo export takes the pairs of the "
            "examples that --status and --source select",
            field="--min-score",
        )


def pair_record(
    pair: Mapping[str, Any],
    example: Example,
    *,
    with_lineage: bool = False,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One pair as a prompt/chosen/rejected row; `with_lineage` adds where it came from."""
    record: dict[str, Any] = {
        "prompt": user_text(example),
        "chosen": pair["chosen"],
        "rejected": pair["rejected"],
        "system": example.system,
    }
    if with_lineage:
        record.update(
            id=pair["id"],
            example_id=example.id,
            round=pair["round"],
            model_version=model_name(pair["model_version"], aliases),
            rejected_failed=list(pair["rejected_failed"]),
            chosen_repaired=list(pair["chosen_repaired"]),
            rejected_truncated=bool(pair["rejected_truncated"]),
            constraints=constraints_of(example),
        )
    return record


@dataclass
class PairStats:
    """What a dpo export held, counted while it streams: the card is written from it."""

    count: int = 0
    prompts: set[str] = field(default_factory=set)
    languages: Counter[str] = field(default_factory=Counter)
    rounds: Counter[int] = field(default_factory=Counter)
    writers: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    repaired: int = 0
    truncated: int = 0
    # Held back by the filter's `withhold`, by the kind of its reason, as for examples.
    withheld: Counter[str] = field(default_factory=Counter)

    def add(
        self, pair: Mapping[str, Any], example: Example, aliases: Mapping[str, str] | None
    ) -> None:
        self.count += 1
        self.prompts.add(example.id)
        language = example.language or language_of(f"{example.instruction} {example.input}")
        self.languages[language] += 1
        self.rounds[pair["round"]] += 1
        writer = model_name(pair["model_version"], aliases)
        if writer:
            self.writers[writer] += 1
        self.failed.update(pair["rejected_failed"])
        self.repaired += bool(pair["chosen_repaired"])
        self.truncated += bool(pair["rejected_truncated"])

    def lines(self) -> list[str]:
        """The card's composition section."""
        total = self.count
        out = [f"- Prompts: {len(self.prompts)} ({total} pairs)"]
        if self.languages:
            out.append(
                "- Languages: " + ", ".join(f"{k} {n}" for k, n in self.languages.most_common())
            )
        if self.rounds:
            out.append(
                "- By round drawn in: "
                + ", ".join(f"{r}: {n}" for r, n in sorted(self.rounds.items()))
            )
        if self.writers:
            out.append(
                "- Drawn by: " + ", ".join(f"{k} {n}" for k, n in self.writers.most_common())
            )
        if self.failed:
            out.append(
                "- Constraints the rejected answers fail: "
                + ", ".join(f"`{k}` {n}" for k, n in self.failed.most_common())
            )
        out.append(
            f"- Chosen answers repaired in code (re-verified; paired only with the answer "
            f"they were repaired from): {self.repaired} of {total}"
        )
        out.append(f"- Rejected answers cut at the token limit: {self.truncated} of {total}")
        if self.withheld:
            out.append(
                f"- Withheld: {sum(self.withheld.values())} pairs whose prompts the "
                "project's held-out suite measures"
            )
        return out


def iter_pair_export(
    store: Any,
    filt: ExportFilter,
    *,
    with_lineage: bool = False,
    aliases: Mapping[str, str] | None = None,
    stats: PairStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of the pairs whose examples the filter selects, oldest first."""
    check_filter(filt)
    for pair, example in store.iter_preference_pairs(
        status=filt.statuses or None, source=filt.sources or None, round=filt.round
    ):
        reason = filt.withhold(example) if filt.withhold is not None else None
        if reason is not None:
            if stats is not None:
                stats.withheld[reason.split(":", 1)[0]] += 1
            continue
        if stats is not None:
            stats.add(pair, example, aliases)
        yield pair_record(pair, example, with_lineage=with_lineage, aliases=aliases)
