"""The critic: scores a batch of examples and says which ones fail, cheapest checks first.

EasyInstruct's order: model-free statistics and the check of verifiable
constraints first, then the scorers that need a model — IFD (the student's
losses), InsTag tags, Deita scores — and the LLM judge last, so an example a
cheap rule already rejected costs no model call. Verification only records
verdicts (the selector drops a failing example, naming the constraint); with
`verify.skip_failed` the model parts spend no call on such an example either.
Each part has its own config with an `enabled` flag; this module only
composes them and keeps the books.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.scoring import ifd, instag, verify
from evoinstruct.agents.scoring.deita import DIMENSIONS as DEITA_DIMENSIONS
from evoinstruct.agents.scoring.deita import DeitaConfig, deita_scores
from evoinstruct.agents.scoring.ifd import IFDConfig, ifd_scores
from evoinstruct.agents.scoring.instag import InsTagConfig, tag_examples
from evoinstruct.agents.scoring.judge import JudgeConfig, judge_examples
from evoinstruct.agents.scoring.stats import DIMENSIONS as STATS_DIMENSIONS
from evoinstruct.agents.scoring.stats import StatsConfig, run_stats
from evoinstruct.agents.scoring.verify import VerifyConfig, verify_examples
from evoinstruct.models.base import ChatModel, model_version
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, Rejection, Score
from evoinstruct.store.stages import Stage


class CriticConfig(BaseModel):
    """Every critic part, each with METHODS defaults and an `enabled` flag."""

    model_config = ConfigDict(extra="forbid")

    stats: StatsConfig = Field(default_factory=StatsConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    ifd: IFDConfig = Field(default_factory=IFDConfig)
    instag: InsTagConfig = Field(default_factory=InsTagConfig)
    deita: DeitaConfig = Field(default_factory=DeitaConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    skip_rejected: bool = Field(
        True, description="Later (costlier) parts skip examples an earlier part rejected."
    )


def score_dimensions(config: CriticConfig) -> dict[str, tuple[str, ...]]:
    """The dimensions each part of this critic scores, by part (its field name here),
    enabled or not; verification's, one per constraint id, are `verify.is_dimension`'s."""
    return {
        "stats": STATS_DIMENSIONS,
        "judge": tuple(config.judge.dimensions),
        "ifd": (ifd.DIMENSION,),
        "instag": (instag.DIMENSION,),
        "deita": DEITA_DIMENSIONS,
    }


def unknown_dimension(name: str, config: CriticConfig) -> str | None:
    """None when a part of this critic scores `name`; else one line saying so, with the
    known names and the closest of them (a threshold on a dimension nothing scores
    filters nothing, or everything)."""
    known = sorted({d for dims in score_dimensions(config).values() for d in dims})
    if name in known or verify.is_dimension(name):
        return None
    close = difflib.get_close_matches(name, [*known, verify.ALL, *verify.REGISTRY], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"no critic scores {name!r}; {hint}known: {', '.join(known)}, "
        f"{verify.ALL} or a constraint id (each also with '{verify.LOOSE}')"
    )


@dataclass
class CriticOutcome(AgentOutcome):
    """Scores, rejections (stage CRITIQUE), tags and languages per example id, the books.

    `kept` lists the ids no part rejected (nor left unjudged by a failed call);
    `skipped` the ids that had no response to critique (left for the responder);
    `unverified` maps the ids failing a verifiable constraint to the constraint
    ids they fail ([] when their constraints cannot be read); they stay "kept"
    here, since the selector gives that verdict.
    """

    stage = Stage.CRITIQUE

    scores: list[Score] = field(default_factory=list)
    tags: dict[str, list[str]] = field(default_factory=dict)
    languages: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    model_versions: dict[str, str] = field(default_factory=dict)
    unverified: dict[str, list[str]] = field(default_factory=dict)

    def add(self, scores: Sequence[Score], rejections: Sequence[Rejection]) -> None:
        self.scores.extend(scores)
        self.rejections.extend(rejections)


def _alive(batch: Sequence[Example], outcome: CriticOutcome, config: CriticConfig) -> list[Example]:
    """The examples a next part should see."""
    gone = set(outcome.unverified) if config.verify.skip_failed else set()
    if config.skip_rejected:
        gone |= {r.example_id for r in outcome.rejections}
    return [e for e in batch if e.id not in gone]


async def critique(
    batch: Sequence[Example],
    *,
    judge: ChatModel | None,
    prompts: PromptLibrary,
    config: CriticConfig,
    rng: random.Random,
    scorer: ChatModel | None = None,
    student: ChatModel | None = None,
    tagger: ChatModel | None = None,
) -> CriticOutcome:
    """Critique a batch: statistics, constraints, IFD, tags, Deita, then the judge.

    Each model part makes one batched call.

    `judge` also tags when no `tagger` is given and answers Deita's prompts
    when no `scorer` can. IFD runs only with a `student` (a model with
    losses). `rng` is accepted for the agent contract: every part is
    deterministic. Tags come back normalized; which are rare is decided at
    selection, against the pool's tag counts.
    """
    outcome = CriticOutcome()
    todo = [e for e in batch if e.output]
    outcome.skipped = [e.id for e in batch if not e.output]
    outcome.counters["no_output"] += len(outcome.skipped)
    counters = outcome.counters

    if config.stats.enabled:
        stats = run_stats(todo, config.stats)
        outcome.add(stats.scores, stats.rejections)
        outcome.languages = stats.languages
    if config.verify.enabled:
        verified = verify_examples(todo, config.verify, counters)
        outcome.scores.extend(verified.scores)
        outcome.unverified = {**verified.failed, **{i: [] for i in verified.unreadable}}
    if config.ifd.enabled:
        if student is None:
            counters["ifd_skipped_no_model"] += 1
        else:
            result = await ifd_scores(_alive(todo, outcome, config), student, config.ifd, counters)
            outcome.add(result.scores, result.rejections)
            outcome.model_versions["ifd"] = model_version(student)
    tag_model = tagger or judge
    if config.instag.enabled and tag_model is not None:
        tagged = await tag_examples(
            _alive(todo, outcome, config),
            tag_model,
            prompts,
            config.instag,
            counters,
        )
        outcome.add(tagged.scores, tagged.rejections)
        outcome.tags = tagged.tags
        outcome.model_versions["instag"] = model_version(tag_model)
    elif config.instag.enabled:
        counters["instag_skipped_no_model"] += 1
    if config.deita.enabled:
        scored = await deita_scores(
            _alive(todo, outcome, config),
            scorer=scorer,
            judge=judge,
            prompts=prompts,
            config=config.deita,
            counters=counters,
        )
        outcome.add(scored.scores, scored.rejections)
        if scored.model_version is not None:
            outcome.model_versions["deita"] = scored.model_version
    if config.judge.enabled and judge is not None:
        judged = await judge_examples(
            _alive(todo, outcome, config), judge, prompts, config.judge, counters
        )
        outcome.add(judged.scores, judged.rejections)
        outcome.model_versions["judge"] = model_version(judge)
    elif config.judge.enabled:
        counters["judge_skipped_no_model"] += 1

    rejected = {r.example_id for r in outcome.rejections}
    outcome.kept = [e.id for e in todo if e.id not in rejected]
    counters["kept"] += len(outcome.kept)
    counters["rejected"] += len({e.id for e in todo} & rejected)
    for rejection in outcome.rejections:
        counters[f"rejected:{rejection.reason}"] += 1
    return outcome
