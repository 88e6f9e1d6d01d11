"""The weak-to-strong experiment's settings: the run config's `[weak_to_strong]` table.

The experiment trains with the `[trainer]` settings (the same budget for both students)
and scores on the trainer's suite; which configured model is weak is `roles.weak`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.trainer.config import SuiteMetric

KIND = "weak_to_strong"  # the kind of the stored experiments (store.experiments)


class WeakToStrongConfig(BaseModel):
    """Weak-to-strong supervision (Burns et al. 2023), measured on the held-out suite.

    The weak model (`roles.weak`) answers verified constrained prompts of the pool once;
    the strong student (`trainer.base_model`) is trained on those answers as they are,
    never checked (strong-on-weak), and, with the same budget, on the pool's verified
    answers to the same prompts (the ceiling). The weak model, the untuned strong model
    and both students answer the suite, and PGR = (strong-on-weak - weak) / (ceiling -
    weak) is reported with a bootstrap interval. With `enabled`, the loop's training
    branch runs this experiment instead of training a version (nothing is promoted).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description=(
            "The training branch runs the weak-to-strong experiment on fresh prompts instead "
            "of training a student version (the generator stays as it is)."
        ),
    )
    prompts: int = Field(
        200,
        ge=1,
        description=(
            "Prompts per experiment at most: a seeded sample of accepted examples with "
            "verifiable constraints whose stored answer passes them all, unused by earlier "
            "experiments."
        ),
    )
    min_prompts: int = Field(
        20,
        ge=1,
        description="The loop runs an experiment once this many such unused prompts wait.",
    )
    max_tokens: int = Field(512, ge=1, description="Token limit of one weak label.")
    temperature: float = Field(
        0.0, ge=0, description="Sampling temperature of the weak labels (0: greedy, one answer)."
    )
    batch_size: int = Field(16, ge=1, description="Prompts handed to the weak model per call.")
    metric: SuiteMetric = Field(
        "prompt_strict", description="The suite accuracy PGR is computed from."
    )
