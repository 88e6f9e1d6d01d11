"""The report's PNG plots, drawn with matplotlib's Agg canvas (no pyplot, no global backend).

Each plot draws one dataclass of `report.data` and nothing else; colours come
from `report.palette`, so green means accepted and red rejected on every one.
matplotlib is imported inside the functions: `evoinstruct` commands that do
not plot never pay for it.

The plots live in `report.plots_rounds`, `report.plots_scores` and `report.plots_student`
(shared helpers in `report.plot_base`); this module lists them and draws them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from evoinstruct.cli.report.plot_base import (
    CJK_FONTS,
    FUNNEL_ROUNDS,
    GROUP_COLORS,
    GROUP_LABELS,
    LENGTH_KEYS,
    SCORER_ORDER,
    STAGE_COLORS,
    _plotting,
)
from evoinstruct.cli.report.plots_rounds import (
    plot_acceptance,
    plot_cost,
    plot_depth,
    plot_funnel,
    plot_pool,
)
from evoinstruct.cli.report.plots_scores import (
    plot_diversity,
    plot_lengths,
    plot_scores,
)
from evoinstruct.cli.report.plots_student import (
    plot_student,
    plot_training,
)
from evoinstruct.cli.report.plots_weak_to_strong import plot_weak_to_strong

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from evoinstruct.cli.report.data import ReportData
    from evoinstruct.graph.report_config import ReportConfig

__all__ = [
    "CJK_FONTS",
    "FUNNEL_ROUNDS",
    "GROUP_COLORS",
    "GROUP_LABELS",
    "LENGTH_KEYS",
    "OPTIONAL_PLOTS",
    "PLOTS",
    "SCORER_ORDER",
    "STAGE_COLORS",
    "plot_acceptance",
    "plot_cost",
    "plot_depth",
    "plot_diversity",
    "plot_funnel",
    "plot_lengths",
    "plot_pool",
    "plot_scores",
    "plot_student",
    "plot_training",
    "plot_weak_to_strong",
    "save_plots",
]

PLOTS: tuple[str, ...] = (
    "pool",
    "acceptance",
    "funnel",
    "scores",
    "lengths",
    "diversity",
    "depth",
    "cost",
    "student",
    "training",
)
OPTIONAL_PLOTS: tuple[str, ...] = ("weak_to_strong",)


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi, format="png")
    return path


def save_plots(data: ReportData, config: ReportConfig, out_dir: Path) -> dict[str, Path]:
    """Draw every plot of `PLOTS` into `out_dir/<name>.png`, and those of `OPTIONAL_PLOTS`
    the project has data for."""
    makers: dict[str, Callable[[], Figure]] = {
        "pool": lambda: plot_pool(data),
        "acceptance": lambda: plot_acceptance(data, config),
        "funnel": lambda: plot_funnel(data),
        "scores": lambda: plot_scores(data, config),
        "lengths": lambda: plot_lengths(data),
        "diversity": lambda: plot_diversity(data),
        "depth": lambda: plot_depth(data),
        "cost": lambda: plot_cost(data),
        "student": lambda: plot_student(data),
        "training": lambda: plot_training(data),
    }
    # Drawn only for a project that ran the experiment.
    if data.weak_to_strong:
        makers["weak_to_strong"] = lambda: plot_weak_to_strong(data.weak_to_strong)
    pngs = {}
    with _plotting():
        for name in (*PLOTS, *OPTIONAL_PLOTS):
            if name in makers:
                pngs[name] = _save(makers[name](), out_dir / f"{name}.png", config.dpi)
    return pngs
