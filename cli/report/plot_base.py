"""What every report plot shares: the colour and order constants, CJK font fallback,
and the figure helpers. Split out of `report.plots`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.cli.report import palette
from evoinstruct.cli.report.funnel import STAGE_ORDER
from evoinstruct.store.records import SOURCES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# Judge dimensions first: they are what the critic thresholds on.
SCORER_ORDER = ("judge", "deita", "ifd", "instag", "stats")
# Drawn in lengths.png (with their thresholds), not again among the scores.
LENGTH_KEYS = {("stats", "instruction_words"), ("stats", "output_words")}
FUNNEL_ROUNDS = 6  # newest rounds drawn; the page's table lists every round
GROUP_LABELS = {
    "seed": "seed (human)",
    "accepted": "accepted",
    "rejected": "rejected",
    "candidate": "candidate (waiting)",
}
GROUP_COLORS = {
    "seed": palette.SEED,
    "accepted": palette.ACCEPTED,
    "rejected": palette.REJECTED,
    "candidate": palette.STATUS["candidate"],
}
STAGE_COLORS = palette.ordered_colors(STAGE_ORDER)
# Installed families are tried in this order per glyph, so Chinese labels render where a
# CJK font exists and fall back to boxes (not a crash) where none does.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Heiti SC",
    "Arial Unicode MS",
)


# File names of CJK fonts, for fonts installed after matplotlib cached its font list.
_CJK_FILES = ("cjk", "wqy", "wenquanyi", "sourcehan", "droidsansfallback", "msyh", "simhei")


def _cjk_families() -> list[str]:
    """The installed CJK families of CJK_FONTS, preferred first.

    matplotlib caches the system's fonts once; a CJK font installed later (e.g.
    `apt-get install fonts-noto-cjk`) is missing from the cache, and Chinese
    labels would come out as boxes. Such fonts are added to this process's list.
    """
    from matplotlib import font_manager

    manager = font_manager.fontManager
    installed = {f.name for f in manager.ttflist}
    if not any(f in installed for f in CJK_FONTS):
        known = {f.fname for f in manager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known and any(k in Path(path).name.lower() for k in _CJK_FILES):
                try:
                    manager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue  # an unreadable font file: the others may still do
        installed = {f.name for f in manager.ttflist}
    return [f for f in CJK_FONTS if f in installed]


@contextmanager
def _plotting() -> Iterator[None]:
    """Font fallback for CJK, and quiet about glyphs no installed font has."""
    import matplotlib

    families = ["DejaVu Sans", *_cjk_families()]
    with (
        matplotlib.rc_context({"font.family": families, "axes.titlesize": "medium"}),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph .* missing from.*")
        logger = logging.getLogger("matplotlib.font_manager")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Figure, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _empty(ax: Axes, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="0.3",
        wrap=True,
    )
    ax.set_axis_off()


def _round_axis(ax: Axes, numbers: Sequence[int]) -> None:
    step = max(1, math.ceil(len(numbers) / 20))  # at most ~20 labels, however many rounds
    ax.set_xticks(range(0, len(numbers), step), [str(n) for n in numbers][::step])
    ax.set_xlabel("round (0 = seeds)")


def _stacked(
    ax: Axes,
    numbers: Sequence[int],
    series: dict[str, list[float]],
    colors: dict[str, str],
    hatches: dict[str, str] | None = None,
) -> np.ndarray:
    bottom = np.zeros(len(numbers))
    for label, heights in series.items():
        ax.bar(
            range(len(numbers)),
            heights,
            bottom=bottom,
            label=label,
            color=colors.get(label, palette.UNKNOWN),
            edgecolor="white",
            linewidth=0.6,
            hatch=(hatches or {}).get(label),
        )
        bottom += np.asarray(heights, dtype=float)
    _round_axis(ax, numbers)
    return bottom


def _headroom(ax: Axes, top: float, share: float = 0.22) -> None:
    """Room above the tallest bar for its label, so it never meets the title."""
    ax.set_ylim(0, max(top, 1.0) * (1 + share))


def _ordered_sources(present: set[str]) -> list[str]:
    return [s for s in SOURCES if s in present] + sorted(present - set(SOURCES))


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
