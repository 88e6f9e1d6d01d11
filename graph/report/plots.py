"""The report's PNG plots, drawn with matplotlib's Agg canvas (no pyplot, no global backend).

matplotlib is imported inside the functions: `evoinstruct` commands that do
not plot never pay for it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.graph.report.diversity import METRIC_LABELS, METRICS
from evoinstruct.store.records import SOURCES, STATUSES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from evoinstruct.graph.report.config import ReportConfig
    from evoinstruct.graph.report.data import ReportData

PLOTS: tuple[str, ...] = ("pool", "acceptance", "scores", "diversity", "depth", "cost", "student")
# Judge dimensions first: they are what the selector thresholds on.
SCORER_ORDER = ("judge", "deita", "ifd", "instag", "stats")
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


@contextmanager
def _plotting() -> Iterator[None]:
    """Font fallback for CJK, and quiet about glyphs no installed font has."""
    import matplotlib
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    families = ["DejaVu Sans", *[f for f in CJK_FONTS if f in installed]]
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
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_axis_off()


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _round_axis(ax: Axes, numbers: Sequence[int]) -> None:
    step = max(1, math.ceil(len(numbers) / 20))  # at most ~20 labels, however many rounds
    ax.set_xticks(range(0, len(numbers), step), [str(n) for n in numbers][::step])
    ax.set_xlabel("round (0 = seeds)")


def _stacked(ax: Axes, numbers: Sequence[int], series: dict[str, list[float]]) -> None:
    bottom = np.zeros(len(numbers))
    for color, (label, heights) in zip(_colors(len(series)), series.items(), strict=True):
        ax.bar(range(len(numbers)), heights, bottom=bottom, label=label, color=color)
        bottom += np.asarray(heights, dtype=float)
    _round_axis(ax, numbers)


def plot_pool(data: ReportData) -> Figure:
    fig, axes = _figure(8, 4)
    ax = axes[0][0]
    numbers = [r.number for r in data.rounds]
    if not data.examples:
        _empty(ax, "The pool is empty: add seeds and run a round.")
        return fig
    accepted = Counter((e.round, e.source) for e in data.examples if e.status == "accepted")
    present = {source for _, source in accepted}
    sources = [s for s in SOURCES if s in present] + sorted(present - set(SOURCES))
    everything = Counter(e.round for e in data.examples)
    series = {
        s: list(np.cumsum([accepted[(n, s)] for n in numbers]).astype(float)) for s in sources
    }
    _stacked(ax, numbers, series)
    ax.plot(
        range(len(numbers)),
        np.cumsum([everything[n] for n in numbers]),
        "k.--",
        label="all stored (any status)",
    )
    ax.set_ylabel("examples")
    ax.set_title("Pool size after each round: accepted examples by source")
    fig.legend(loc="outside right upper")
    return fig


def plot_acceptance(data: ReportData, config: ReportConfig) -> Figure:
    fig, axes = _figure(12, 4.2, ncols=2)
    left, right = axes[0]
    numbers = [r.number for r in data.rounds]
    if not data.rounds:
        _empty(left, "No rounds yet.")
        _empty(right, "No rejections yet.")
        return fig
    statuses = [s for s in STATUSES if any(r.by_status.get(s) for r in data.rounds)]
    _stacked(left, numbers, {s: [r.by_status.get(s, 0) for r in data.rounds] for s in statuses})
    for x, row in enumerate(data.rounds):
        if row.acceptance is not None:
            total = sum(row.by_status.values())
            left.annotate(
                f"{row.acceptance:.0%}", (x, total), ha="center", va="bottom", fontsize="small"
            )
    left.set_ylabel("examples made in the round")
    left.set_title("Examples by status (label: accepted / (accepted + rejected))")
    left.legend(loc="upper left", bbox_to_anchor=(0, -0.18), ncols=4, fontsize="small")
    reasons = Counter()
    for row in data.rounds:
        for stage, by_reason in row.rejections.items():
            for reason, n in by_reason.items():
                reasons[f"{stage}: {reason}"] += n
    if not reasons:
        _empty(right, "No rejections recorded.")
        return fig
    top = [name for name, _ in reasons.most_common(config.max_reasons)]
    series: dict[str, list[float]] = {name: [] for name in top}
    if len(reasons) > len(top):
        series["other"] = []
    for row in data.rounds:
        flat = {f"{s}: {r}": n for s, by in row.rejections.items() for r, n in by.items()}
        for name in top:
            series[name].append(flat.get(name, 0))
        if "other" in series:
            series["other"].append(sum(n for k, n in flat.items() if k not in top))
    _stacked(right, numbers, series)
    right.set_ylabel("rejections")
    right.set_title("Rejections by stage: reason")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig


def _score_keys(data: ReportData, limit: int) -> list[tuple[str, str]]:
    def order(key: tuple[str, str]) -> tuple[int, str, str]:
        rank = SCORER_ORDER.index(key[0]) if key[0] in SCORER_ORDER else len(SCORER_ORDER)
        return rank, key[0], key[1]

    return sorted(data.scores, key=order)[:limit]


def plot_scores(data: ReportData, config: ReportConfig) -> Figure:
    keys = _score_keys(data, config.max_score_panels)
    ncols = min(3, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig, axes = _figure(4.2 * ncols, 3.2 * nrows, nrows, ncols)
    flat = [ax for row in axes for ax in row]
    if not keys:
        _empty(flat[0], "No scores recorded yet.")
    rng = np.random.default_rng(config.seed)
    for ax, key in zip(flat, keys, strict=False):
        by_round = data.scores[key]
        numbers = sorted(by_round)
        values = [by_round[n] for n in numbers]
        ax.boxplot(values, positions=range(len(numbers)), widths=0.6, showfliers=False)
        for x, v in enumerate(values):  # the points too: judge scores are few and discrete
            jitter = rng.uniform(-0.18, 0.18, len(v))
            ax.scatter(x + jitter, v, s=8, alpha=0.45, color="tab:blue", zorder=3)
        ax.set_xticks(
            range(len(numbers)), [f"{n}\nn={len(v)}" for n, v in zip(numbers, values, strict=True)]
        )
        ax.set_title(f"{key[0]} / {key[1]}")
        ax.set_xlabel("round")
    for ax in flat[len(keys) if keys else 1 :]:
        ax.set_axis_off()
    fig.suptitle("Score distributions per round (superseded originals left out)")
    return fig


def plot_diversity(data: ReportData) -> Figure:
    fig, axes = _figure(13, 3.8, ncols=3)
    div = data.diversity
    alerted = {a.round: a.metrics for a in div.alerts}
    for ax, metric in zip(axes[0], METRICS, strict=True):
        seed = div.seed_values.get(metric)
        if seed is None and not div.rows:
            _empty(ax, "Nothing to measure yet.")
            continue
        xs = [row.round for row in div.rows]
        if seed is not None:
            ax.plot([0], [seed], "*", color="tab:green", markersize=12, label="seed pool")
        ax.plot(xs, [row.values.get(metric) for row in div.rows], "o-", label="new in round")
        base = [row.seed_values.get(metric) for row in div.rows]
        if any(b is not None for b in base):
            ax.plot(xs, base, "--", color="0.5", label="seeds at the same size")
        for row in div.rows:
            if metric in alerted.get(row.round, {}):
                value = alerted[row.round][metric][0]
                ax.plot([row.round], [value], "o", color="red", markersize=11, fillstyle="none")
                ax.annotate(
                    "ALERT",
                    (row.round, value),
                    textcoords="offset points",
                    xytext=(0, -14),
                    ha="center",
                    color="red",
                    fontsize="small",
                    weight="bold",
                )
        ax.set_title(METRIC_LABELS[metric])
        ax.set_xlabel("round (0 = seeds)")
        ax.margins(x=0.15, y=0.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    fig.suptitle(f"Diversity of newly accepted instructions (embedding: {div.embedding})")
    return fig


def plot_depth(data: ReportData) -> Figure:
    fig, axes = _figure(7, 3.8)
    ax = axes[0][0]
    accepted = [e for e in data.examples if e.status == "accepted"]
    if not accepted:
        _empty(ax, "No accepted examples yet.")
        return fig
    depths = list(range(max(e.depth for e in accepted) + 1))
    counts = Counter((e.depth, e.source) for e in accepted)
    present = {e.source for e in accepted}
    sources = [s for s in SOURCES if s in present] + sorted(present - set(SOURCES))
    bottom = np.zeros(len(depths))
    for color, source in zip(_colors(len(sources)), sources, strict=True):
        heights = np.array([counts[(d, source)] for d in depths], dtype=float)
        ax.bar(depths, heights, bottom=bottom, label=source, color=color)
        bottom += heights
    ax.set_xticks(depths)
    ax.set_xlabel("evolution depth (0 = not evolved; a rewrite keeps its parent's depth)")
    ax.set_ylabel("accepted examples")
    ax.set_title("Evolution depth of accepted examples")
    fig.legend(loc="outside right upper")
    return fig


def plot_cost(data: ReportData) -> Figure:
    fig, axes = _figure(12, 4, ncols=2)
    rows = [r for r in data.rounds if r.calls or r.tokens]
    for ax, attr, label in zip(
        axes[0], ("calls", "tokens"), ("model calls", "tokens"), strict=True
    ):
        if not rows:
            _empty(ax, f"No {label} recorded by any round.")
            continue
        stages = sorted({s for r in rows for s in getattr(r, attr)})
        series = {
            s: [getattr(r, attr).get(s, 0) / r.accepted if r.accepted else 0 for r in rows]
            for s in stages
        }
        _stacked(ax, [r.number for r in rows], series)
        for x, r in enumerate(rows):
            if not r.accepted:
                ax.annotate(
                    "0 accepted",
                    (x, 0),
                    ha="center",
                    va="bottom",
                    rotation=90,
                    color="red",
                    fontsize="small",
                )
        ax.set_ylabel(f"{label} per accepted example")
        ax.set_title(f"{label.capitalize()} per accepted example, by stage")
    handles, labels = axes[0][1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return fig


def plot_student(data: ReportData) -> Figure:
    fig, axes = _figure(8, 4)
    ax = axes[0][0]
    versions = data.versions
    if not versions:
        _empty(ax, "No student versions registered yet.")
        return fig
    x = np.arange(len(versions))
    metric = [(v["metrics"] or {}) for v in versions]

    def values(key: str) -> list[float]:
        return [m.get(key) if isinstance(m.get(key), int | float) else np.nan for m in metric]

    held = values("heldout_loss")
    colors = ["tab:green" if v["promoted"] else "tab:red" for v in versions]
    ax.bar(x - 0.2, held, 0.4, color=colors, label="held-out loss (green: promoted)")
    ax.bar(x + 0.2, values("baseline_loss"), 0.4, color="0.6", label="baseline held-out loss")
    ax.plot(x, values("train_loss"), "kD", label="train loss")
    for i, v in enumerate(versions):
        tag = "promoted" if v["promoted"] else "not promoted"
        if v.get("active"):
            tag += ", active"
        top = np.nanmax([held[i], values("baseline_loss")[i], 0.0])
        ax.annotate(
            tag, (i, top), textcoords="offset points", xytext=(0, 4), ha="center", fontsize="small"
        )
    ax.set_xticks(x, [v["version"] for v in versions])
    ax.set_ylabel("loss")
    ax.margins(y=0.15)
    ax.set_title("Student versions: held-out loss against the baseline")
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi, format="png")
    return path


def save_plots(data: ReportData, config: ReportConfig, out_dir: Path) -> dict[str, Path]:
    """Draw every plot of `PLOTS` into `out_dir/<name>.png`."""
    makers: dict[str, Callable[[], Figure]] = {
        "pool": lambda: plot_pool(data),
        "acceptance": lambda: plot_acceptance(data, config),
        "scores": lambda: plot_scores(data, config),
        "diversity": lambda: plot_diversity(data),
        "depth": lambda: plot_depth(data),
        "cost": lambda: plot_cost(data),
        "student": lambda: plot_student(data),
    }
    pngs = {}
    with _plotting():
        for name in PLOTS:
            pngs[name] = _save(makers[name](), out_dir / f"{name}.png", config.dpi)
    return pngs
