"""What the steps of `evoinstruct filter` mean for each agent's config: the filter's plan.

The user names steps (`--steps dedup,judge,rewrite`); `plan_filter` turns them
into the critic's sub-configs, a model-free first selection (dedup, novelty,
decontamination), a final selection on the scores the steps produce (thresholds,
diversity, the budget) and the rewriter's config. The plan's fingerprint decides
whether a run resumes the work store's last generation or starts a new one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evoinstruct.agents.critic import CriticConfig, score_dimensions
from evoinstruct.agents.rewriter import RewriterConfig
from evoinstruct.agents.selector import ALL_STEPS as SELECTOR_STEPS
from evoinstruct.agents.selector import SelectorConfig
from evoinstruct.cli.filtering.steps import DEFAULT_STEPS, STEPS
from evoinstruct.graph.config import require_tags_for_instag
from evoinstruct.store.errors import InputError

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig

# The work store's layout, part of every fingerprint: a work directory an older layout
# wrote starts a new generation (every decision made anew, model answers from the cache).
# 2: inputs are "filter_input" (no longer seeds) and rewrites carry the daemon's marks.
LAYOUT = 2


def parse_steps(steps: str | Sequence[str] | None) -> list[str]:
    """`"dedup,judge"` (or a list) → the steps in canonical order; unknown names are an InputError."""
    if steps is None:
        return list(DEFAULT_STEPS)
    items = (
        steps.split(",")
        if isinstance(steps, str)
        else [s for part in steps for s in part.split(",")]
    )
    names = [s.strip().lower() for s in items if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown or not names:
        what = f"unknown step {unknown[0]!r}" if unknown else "no step given"
        raise InputError(f"{what}; choose from {','.join(STEPS)}", field="--steps")
    return [s for s in STEPS if s in names]


def default_work_dir(out_path: str | Path) -> Path:
    return Path(f"{out_path}.work")


def report_path_for(out_path: str | Path) -> Path:
    return Path(f"{out_path}.rejections.json")


@dataclass
class FilterPlan:
    """The agents' configs for a set of steps: cheap selection, critique, final selection, rewrite."""

    steps: list[str]
    critic: CriticConfig
    cheap: SelectorConfig
    final: SelectorConfig
    rewriter: RewriterConfig | None
    # The config's thresholds on dimensions no chosen step scores ("selector.min_scores.quality"),
    # left out of the final selection and named in the summary.
    unscored_thresholds: list[str] = field(default_factory=list)

    @property
    def critic_models(self) -> bool:
        """Whether the critique needs the judge model (judge, tags and Deita fall back to it)."""
        return any(s in self.steps for s in ("judge", "tags", "deita"))

    def fingerprint(self, config: RunConfig) -> str:
        """What decides the outcome: a change starts a new generation of the work store."""
        material = {
            "layout": LAYOUT,
            "steps": self.steps,
            "critic": self.critic.model_dump(),
            "cheap": self.cheap.model_dump(),
            "final": self.final.model_dump(),
            "rewriter": self.rewriter.model_dump() if self.rewriter else None,
            "language": config.project.language,
            "seed": config.project.seed,
            "roles": config.roles.model_dump(),
            # Prices change what a run costs, not what it decides.
            "models": {
                k: v.model_dump(exclude={"price_per_mtok_in", "price_per_mtok_out"})
                for k, v in config.models.items()
            },
        }
        text = json.dumps(material, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _dimensions(critic_cfg: CriticConfig) -> set[str]:
    """Score dimensions the enabled scorers produce: the config's thresholds and ranking
    on the others are left out (a step not chosen scores nothing; the config's own
    keys were checked against every part's dimensions when it was loaded)."""
    parts = score_dimensions(critic_cfg)
    return {d for part, dims in parts.items() if getattr(critic_cfg, part).enabled for d in dims}


def _rank_by(configured: list[str], dims: set[str], critic_cfg: CriticConfig, steps: Sequence[str]):
    """The configured ranking if it is scored, else the judge, else IFD (high first), else input order."""
    if configured and all(d in dims for d in configured):
        return configured
    if "judge" in steps:
        return list(critic_cfg.judge.dimensions)
    return ["ifd"] if "ifd" in steps else []


def plan_filter(config: RunConfig, steps: Sequence[str], budget: int | None) -> FilterPlan:
    """Map the user-facing steps onto the critic's sub-configs and the selector's steps."""
    if budget is not None and budget < 0:
        raise InputError("must be 0 or more", field="--budget")
    base = config.selector
    if "decontaminate" in steps and not base.decontam.eval_files:
        raise InputError(
            "the decontaminate step needs evaluation files: --eval-file FILE "
            "(or selector.decontam.eval_files in the config)",
            field="--steps",
        )
    critic_cfg = config.critic.model_copy(deep=True)
    critic_cfg.judge.enabled = "judge" in steps
    critic_cfg.ifd.enabled = "ifd" in steps
    critic_cfg.instag.enabled = "tags" in steps
    critic_cfg.deita.enabled = "deita" in steps
    cheap_steps = (["exact_dedup", "near_dedup"] if "dedup" in steps else []) + [
        s for s in ("novelty", "decontaminate") if s in steps
    ]
    cheap = base.model_copy(update={"steps": cheap_steps, "budget": None})
    dims = _dimensions(critic_cfg)
    bounds = {
        "min_scores": {d: v for d, v in base.min_scores.items() if d in dims},
        "max_scores": {d: v for d, v in base.max_scores.items() if d in dims},
    }
    unscored = [
        f"selector.{bound}.{d}"
        for bound in ("min_scores", "max_scores")
        for d in getattr(base, bound)
        if d not in dims
    ]
    scored = any(s in steps for s in ("judge", "ifd", "tags", "deita"))
    final_steps = ["thresholds"] if scored and any(bounds.values()) else []
    if "diversity" in steps or "tags" in steps:
        final_steps.append("diversity")
    method = "instag" if "tags" in steps else base.diversity.method
    require_tags_for_instag(
        method,
        tagging="tags" in steps,
        diversity="diversity" in final_steps,
        tagging_setting="the tags step (--steps ...,tags)",
    )
    final = base.model_copy(
        update={
            **bounds,
            "steps": [s for s in SELECTOR_STEPS if s in final_steps],
            "budget": budget if budget is not None else base.budget,
            "rank_by": _rank_by(base.rank_by, dims, critic_cfg, steps),
            "diversity": base.diversity.model_copy(update={"method": method}),
            "decontam": base.decontam.model_copy(update={"eval_files": []}),
        }
    )
    rewrite_cfg = (
        config.rewriter.model_copy(update={"enabled": True}) if "rewrite" in steps else None
    )
    return FilterPlan(list(steps), critic_cfg, cheap, final, rewrite_cfg, unscored)
