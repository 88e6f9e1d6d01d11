"""The report's settings: light to import, so loading a project's config needs no numpy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReportConfig(BaseModel):
    """Report settings: diversity sampling and alert margin, sizes of the page's samples."""

    model_config = ConfigDict(extra="forbid")

    samples_per_round: int = Field(
        3, ge=0, description="Accepted examples shown per round in the HTML page."
    )
    text_chars: int = Field(
        600, ge=50, description="Longest instruction/input/output text shown per sample."
    )
    diversity_sample: int = Field(
        200, ge=2, description="Most instructions per set used for distinct-n and embedding spread."
    )
    diversity_repeats: int = Field(
        5, ge=1, description="Random subsamples averaged when distinct-n compares unequal sets."
    )
    diversity_min_examples: int = Field(
        5, ge=2, description="Rounds with fewer newly accepted instructions are not measured."
    )
    alert_margin: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Alert when a round's diversity is below (1 - margin) x the seed pool's; "
        "the margin absorbs subsampling noise (distinct-2 near 1 on both sides differs by 1e-4).",
    )
    max_score_panels: int = Field(
        12, ge=1, description="Most scorer/dimension panels in the score plot (judge first)."
    )
    max_reasons: int = Field(
        10, ge=1, description="Rejection reasons drawn separately; the rest are 'other'."
    )
    seed: int = Field(0, description="Seed of the report's sampling (samples, subsets).")
    dpi: int = Field(110, ge=50, description="Resolution of the PNGs.")
