"""`evoinstruct report` as a library: PNG plots of a project's pool and one self-contained HTML page.

`build_report(store, out_dir)` reads the pool through the Store API into the
dataclasses of `report.data` (each plot draws one of them and nothing else),
measures the diversity of each round's new instructions against the seeds
(`report.diversity`), draws the PNGs of `PLOTS` (`report.plots`: pool size,
acceptance and rejection events, the stage funnel, score distributions with
their thresholds, length histograms, diversity, evolution depth, model cost,
the student's held-out loss against its baseline, training loss curves) and
writes `report.html` (`report.html`), which embeds them as base64 data URIs
and needs no other file. Every piece of model text in the page goes through
`html.escape`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoinstruct.cli.report.data import ReportData, collect
from evoinstruct.cli.report.diversity import (
    Alert,
    Diversity,
    Embedder,
    distinct_n,
    mean_pairwise_distance,
    measure_diversity,
)
from evoinstruct.cli.report.plots import PLOTS
from evoinstruct.graph.report_config import ReportConfig

if TYPE_CHECKING:
    from evoinstruct.store import Store


@dataclass
class ReportResult:
    """What `build_report` wrote, the alerts it raised, and the data every plot drew."""

    pngs: dict[str, Path]
    html: Path
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: ReportData | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "html": str(self.html),
            "pngs": {k: str(v) for k, v in self.pngs.items()},
            "alerts": [{"round": a.round, "message": a.message} for a in self.alerts],
            "notes": self.notes,
        }


def build_report(
    store: Store,
    out_dir: Path,
    *,
    embedder: Embedder | None = None,
    config: ReportConfig | None = None,
    title: str | None = None,
) -> ReportResult:
    """Write the PNGs and `report.html` into `out_dir`; returns their paths and the alerts.

    `embedder` maps texts to vectors (sync or async, e.g. `model.embed`); without
    one, or when it raises an EvoError, the hashed TF-IDF of `agents.selection.diversity`
    is used. An async embedder is run with `asyncio.run`: call this outside an
    event loop (or through `asyncio.to_thread`).
    """
    from evoinstruct.cli.report.html import render_html
    from evoinstruct.cli.report.plots import save_plots

    config = config or ReportConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(store, config, embedder, title or store.path.parent.name)
    pngs = save_plots(data, config, out_dir)
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(store, data, pngs, config), encoding="utf-8")
    return ReportResult(pngs, html_path, data.diversity.alerts, data.diversity.notes, data)


__all__ = [
    "PLOTS",
    "Alert",
    "Diversity",
    "ReportConfig",
    "ReportData",
    "ReportResult",
    "build_report",
    "distinct_n",
    "mean_pairwise_distance",
    "measure_diversity",
]
