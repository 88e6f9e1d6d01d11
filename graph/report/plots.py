"""The report's PNG plots, drawn with matplotlib's Agg canvas (no pyplot, no global backend).

Each plot draws one dataclass of `report.data` and nothing else; colours come
from `report.palette`, so green means accepted and red rejected on every one.
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

from evoinstruct.graph.report import palette
from evoinstruct.graph.report.diversity import METRIC_LABELS, METRICS
from evoinstruct.graph.report.funnel import STAGE_ORDER
from evoinstruct.graph.report.thresholds import Threshold
from evoinstruct.store.records import SOURCES, STATUSES, Rejection

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from evoinstruct.graph.report.config import ReportConfig
    from evoinstruct.graph.report.data import ReportData, ScoreKey

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


def plot_pool(data: ReportData) -> Figure:
    fig, axes = _figure(9, 4)
    ax = axes[0][0]
    numbers = [r.number for r in data.rounds]
    if not data.examples:
        _empty(ax, "The pool is empty: add seeds and run a round.")
        return fig
    accepted = Counter((e.round, e.source) for e in data.examples if e.status == "accepted")
    sources = _ordered_sources({source for _, source in accepted})
    everything = Counter(e.round for e in data.examples)
    series = {
        s: list(np.cumsum([accepted[(n, s)] for n in numbers]).astype(float)) for s in sources
    }
    _stacked(ax, numbers, series, palette.SOURCE)
    total = np.cumsum([everything[n] for n in numbers])
    ax.plot(range(len(numbers)), total, "k.--", label="all stored (any status)")
    _headroom(ax, float(total[-1]) if len(total) else 0.0, 0.08)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("examples (count, cumulative)")
    ax.set_title("Pool size after each round: accepted examples by source")
    fig.legend(loc="outside right upper", title="source")
    return fig


def plot_acceptance(data: ReportData, config: ReportConfig) -> Figure:
    fig, axes = _figure(13, 4.6, ncols=2)
    left, right = axes[0]
    numbers = [r.number for r in data.rounds]
    if not data.rounds:
        _empty(left, "No rounds yet.")
        _empty(right, "No rejections yet.")
        return fig
    statuses = [s for s in STATUSES if any(r.by_status.get(s) for r in data.rounds)]
    tops = _stacked(
        left,
        numbers,
        {s: [r.by_status.get(s, 0) for r in data.rounds] for s in statuses},
        palette.STATUS,
    )
    for x, row in enumerate(data.rounds):
        if row.acceptance is not None:
            left.annotate(
                f"{row.acceptance:.0%}",
                (x, tops[x]),
                textcoords="offset points",
                xytext=(0, 2),
                ha="center",
                va="bottom",
                fontsize="small",
            )
    _headroom(left, float(tops.max()) if len(tops) else 0.0)
    left.yaxis.get_major_locator().set_params(integer=True)
    left.set_ylabel("examples made in the round (count)")
    left.set_title("Examples by current status\n(label: accepted / (accepted + rejected))")
    # Below the axes: inside, the legend would hide the labels of the tallest bars.
    left.legend(
        loc="upper left", bbox_to_anchor=(0, -0.14), fontsize="small", title="status", ncols=4
    )
    # Rejection events by stage: rows of the rejections table, not examples.
    events: dict[str, list[float]] = {}
    failed = [0.0] * len(data.rounds)
    for i, row in enumerate(data.rounds):
        for stage, by_reason in row.rejections.items():
            for reason, n in by_reason.items():
                if Rejection(stage, reason).is_verdict:
                    events.setdefault(stage, [0.0] * len(data.rounds))[i] += n
                else:
                    failed[i] += n
    if not events and not any(failed):
        _empty(right, "No rejections recorded.")
        return fig
    series = {s: events[s] for s in sorted(events, key=_stage_key)}
    colors = dict(STAGE_COLORS)
    hatches = palette.ordered_hatches(list(series))
    if any(failed):
        series["failed model call (no verdict)"] = failed
        colors["failed model call (no verdict)"] = palette.FAILED_CALL
        hatches["failed model call (no verdict)"] = "xx"
    tops = _stacked(right, numbers, series, colors, hatches)
    _headroom(right, float(tops.max()), 0.1)
    right.yaxis.get_major_locator().set_params(integer=True)
    right.set_ylabel("rejection events (rows; one example may have several)")
    right.set_title("Rejection events by stage (events, not examples)")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title="stage")
    return fig


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_funnel(data: ReportData) -> Figure:
    funnels = [f for f in data.funnels if f.stages][-FUNNEL_ROUNDS:]
    ncols = 2 if len(funnels) > 1 else 1
    nrows = max(1, math.ceil(len(funnels) / ncols))
    height = max((len(f.stages) for f in funnels), default=3) * 0.42 + 1.4
    fig, axes = _figure(7.2 * ncols, height * nrows, nrows, ncols)
    flat = [ax for row in axes for ax in row]
    if not funnels:
        _empty(flat[0], "No round has made or proposed anything yet.")
        return fig
    from matplotlib.ticker import MaxNLocator

    widest = max(s.entered for f in funnels for s in f.stages) or 1
    for ax, funnel in zip(flat, funnels, strict=False):
        y = np.arange(len(funnel.stages))
        kept = [s.kept for s in funnel.stages]
        dropped = [s.dropped for s in funnel.stages]
        ax.barh(y, kept, color=palette.ACCEPTED, label="kept")
        ax.barh(y, dropped, left=kept, color=palette.REJECTED, label="dropped")
        for i, stage in enumerate(funnel.stages):
            top = sorted(stage.reasons.items(), key=lambda kv: -kv[1])[:2]
            text = f"{stage.kept}/{stage.entered}"
            if top:
                text += "  " + ", ".join(f"{_short(r)} ×{n}" for r, n in top)
                if len(stage.reasons) > 2:
                    text += ", …"
            elif stage.note:
                text += f"  {stage.note}"
            ax.text(stage.entered + widest * 0.02, i, text, va="center", fontsize="small")
        ax.set_yticks(y, [f"{s.name} ({s.unit})" for s in funnel.stages], fontsize="small")
        ax.invert_yaxis()
        # Bars take the left 40 %; the rest holds the counts and top reasons.
        ax.set_xlim(0, widest * 2.5)
        ticks = MaxNLocator(nbins=5, integer=True).tick_values(0, widest)
        ax.set_xticks([t for t in ticks if 0 <= t <= widest])
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xlabel("items entering the stage (drafts or stored examples, as labelled)")
        extra = []
        if funnel.failed_calls:
            extra.append(f"{sum(funnel.failed_calls.values())} failed calls (no verdict)")
        if funnel.waiting:
            extra.append(f"{funnel.waiting} waiting")
        title = f"Round {funnel.round}: {funnel.accepted} accepted"
        ax.set_title(title + (f"; {', '.join(extra)}" if extra else ""), fontsize="medium")
    for ax in flat[len(funnels) :]:
        ax.set_axis_off()
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    shown = f"newest {len(funnels)} of {len([f for f in data.funnels if f.stages])} rounds"
    fig.suptitle(
        f"Stage funnel per round ({shown}): bars count items; reasons are rejection events (×n)"
    )
    return fig


def _score_panels(data: ReportData, limit: int) -> tuple[list[ScoreKey], list[str]]:
    """Panels worth drawing, judge first, and a line for each constant measure left out."""

    def order(key: ScoreKey) -> tuple[int, str, str]:
        rank = SCORER_ORDER.index(key[0]) if key[0] in SCORER_ORDER else len(SCORER_ORDER)
        return rank, key[0], key[1]

    panels, constant = [], []
    for key in sorted(data.scores.panels(), key=order):
        if key in LENGTH_KEYS:
            continue
        values = [v.value for vs in data.scores.values.get(key, {}).values() for v in vs]
        if len(values) > 1 and len(set(values)) == 1 and key not in data.scores.unparseable:
            # A flat panel shows nothing a sentence cannot say.
            constant.append(f"{key[0]}/{key[1]} = {values[0]:g} for all {len(values)}")
            continue
        panels.append(key)
    return panels[:limit], constant


def _score_unit(key: ScoreKey) -> str:
    scorer, dimension = key
    if scorer == "judge":
        return "judge score (0–5)"
    if scorer == "ifd":
        return "IFD (loss ratio, unitless)"
    if scorer == "deita":
        return f"Deita {dimension} score"
    if scorer == "instag":
        return "tags per example"
    return {
        "mtld": "MTLD (tokens per factor)",
        "repetition": "repeated n-gram share (0–1)",
        "refusal": "refusal found (0/1)",
    }.get(dimension, f"{dimension} (value)")


def _threshold_steps(
    ax: Axes, numbers: Sequence[int], by_round: dict[int, list[Threshold]]
) -> None:
    """One dashed line per setting, at its value in each round (a step where it changed)."""
    keys = sorted({t.key for found in by_round.values() for t in found})
    for key in keys:
        values = []
        for n in numbers:
            match = [t for t in by_round.get(n, []) if t.key == key]
            values.append(match[0].value if match else np.nan)
        xs = np.arange(len(numbers) + 1) - 0.5
        some = next(t for found in by_round.values() for t in found if t.key == key)
        ax.stairs(
            values,
            xs,
            color=palette.THRESHOLD,
            linestyle="--",
            linewidth=1.2,
            label=f"threshold: {some.label}",
            baseline=None,
        )


def plot_scores(data: ReportData, config: ReportConfig) -> Figure:
    keys, constant = _score_panels(data, config.max_score_panels)
    ncols = min(3, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig, axes = _figure(max(4.6 * ncols, 9.0), 3.5 * nrows + 0.4, nrows, ncols)
    flat = [ax for row in axes for ax in row]
    if not keys:
        _empty(flat[0], "No scores recorded yet." if not constant else "No varying scores.")
    rng = np.random.default_rng(config.seed)
    seen_groups: set[str] = set()
    for ax, key in zip(flat, keys, strict=False):
        by_round = data.scores.values.get(key, {})
        thresholds = data.scores.thresholds.get(key, {})
        numbers = sorted(by_round)
        unreadable = data.scores.unparseable.get(key, 0)
        title = f"{key[0]} / {key[1]}"
        if unreadable:
            title += (
                f"\n({unreadable} unparseable answer{'' if unreadable == 1 else 's'}, not drawn)"
            )
        ax.set_title(title, fontsize="medium")
        if not by_round:
            rules = {t.label for found in thresholds.values() for t in found}
            _empty(
                ax,
                "no parseable score"
                + ("\n" + "\n".join(sorted(rules)) if rules else "")
                + f"\n(n = {unreadable} unparseable)",
            )
            continue
        values = [[v.value for v in by_round[n]] for n in numbers]
        # A box of fewer than five values says less than the values themselves.
        boxed = [x for x, v in enumerate(values) if len(v) >= 5]
        if boxed:
            ax.boxplot(
                [values[x] for x in boxed],
                positions=boxed,
                widths=0.6,
                showfliers=False,
                medianprops={"color": "0.2"},
            )
        for x, n in enumerate(numbers):
            points = by_round.get(n, [])
            jitter = rng.uniform(-0.18, 0.18, len(points))
            for group in GROUP_COLORS:
                mask = [p.group == group for p in points]
                if any(mask):
                    seen_groups.add(group)
                    ax.scatter(
                        (x + jitter)[mask],
                        [p.value for p, m in zip(points, mask, strict=True) if m],
                        s=14,
                        alpha=0.75,
                        color=GROUP_COLORS[group],
                        zorder=3,
                    )
        _threshold_steps(ax, numbers, thresholds)
        ax.set_xticks(
            range(len(numbers)), [f"{n}\nn={len(v)}" for n, v in zip(numbers, values, strict=True)]
        )
        ax.set_xlim(-0.6, len(numbers) - 0.4)
        if key[0] == "judge":
            ax.set_ylim(-0.2, 5.3)
        ax.set_xlabel("round (n = scored examples)")
        ax.set_ylabel(_score_unit(key))
        if thresholds:
            ax.legend(loc="best", fontsize="x-small")
    for ax in flat[len(keys) if keys else 1 :]:
        ax.set_axis_off()
    _group_legend(fig, seen_groups)
    fig.suptitle("Score distributions per round (superseded originals left out)")
    if constant:
        fig.supxlabel("Constant, not drawn: " + "; ".join(constant), fontsize="small")
    return fig


def _group_legend(fig: Figure, groups: set[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=GROUP_COLORS[g], label=GROUP_LABELS[g])
        for g in GROUP_COLORS
        if g in groups
    ]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small", title="example")


def plot_lengths(data: ReportData) -> Figure:
    fig, axes = _figure(13, 5, ncols=2)
    titles = {
        "instruction": "Instruction length (with its input)",
        "response": "Response length",
    }
    for ax, hist in zip(axes[0], data.lengths, strict=True):
        if not any(hist.sizes.values()):
            _empty(ax, f"No {hist.field}s to measure yet.")
            continue
        for group, counts in hist.counts.items():
            ax.stairs(
                counts,
                hist.edges,
                color=GROUP_COLORS.get(group, palette.UNKNOWN),
                linewidth=1.8,
                label=f"{GROUP_LABELS.get(group, group)} (n={hist.sizes[group]})",
            )
        for t, style in zip(hist.thresholds, ("--", ":", "-."), strict=False):
            ax.axvline(
                t.value,
                color=palette.THRESHOLD,
                linestyle=style,
                linewidth=1.2,
                label=f"threshold: {t.label}",
            )
        ax.set_xlim(0, hist.edges[-1])
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("words (a CJK character counts as one)")
        ax.set_ylabel("examples (count)")
        title = titles[hist.field]
        if hist.left_out:
            title += f"; {hist.left_out} without a response left out"
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.16), fontsize="small", ncols=2)
    source = (
        f"thresholds from round {data.config_round}'s config"
        if data.config_round >= 0
        else "no round stored a config, so no thresholds"
    )
    fig.suptitle(f"Lengths by fate (superseded originals left out; {source})")
    return fig


def plot_diversity(data: ReportData) -> Figure:
    div = data.diversity
    if not div.rows and not div.cumulative:
        fig, axes = _figure(13, 2.6)
        _empty(axes[0][0], div.not_measured_note())
        fig.suptitle("Diversity of newly accepted instructions: not measured")
        return fig
    fig, axes = _figure(14, 4.2, ncols=3)
    alerted = {a.round: a.metrics for a in div.alerts}
    rounds = sorted({r.round for r in div.rows} | {r.round for r in div.cumulative})
    for ax, metric in zip(axes[0], METRICS, strict=True):
        drawn: list[float] = []
        seed = div.seed_values.get(metric)
        if seed is not None and metric == "spread":
            # Spread does not depend on the set's size: the whole seed pool is the reference.
            ax.axhline(
                seed, color=palette.SEED, linewidth=1.2, label=f"seed pool (all {div.seeds_n})"
            )
            drawn.append(seed)
        for rows, fmt, filled, what in (
            (div.rows, "o-", True, "new in the round"),
            (div.cumulative, "s:", False, "all new up to the round"),
        ):
            if not rows:
                continue
            xs = [row.round for row in rows]
            face = {} if filled else {"markerfacecolor": "white"}
            ys = [_nan(row.values.get(metric)) for row in rows]
            _line(ax, drawn, xs, ys, fmt, color=palette.ACCEPTED, label=what, **face)
            if metric != "spread":
                # Distinct-n falls as a set grows: the seeds are measured at the same size.
                base = [_nan(row.seed_values.get(metric)) for row in rows]
                if not all(math.isnan(b) for b in base):
                    marker = "x" if filled else "+"
                    label = f"seeds at the size of: {what}"
                    _line(ax, drawn, xs, base, marker, color=palette.SEED, ms=9, label=label)
        for row in div.rows:
            if metric in alerted.get(row.round, {}):
                value = alerted[row.round][metric][0]
                ring = {"ms": 13, "fillstyle": "none", "mew": 2}
                ax.plot([row.round], [value], "o", color=palette.ALERT, label="alert", **ring)
        ax.set_title(METRIC_LABELS[metric])
        ax.set_xlabel("round")
        ax.set_ylabel(
            "mean cosine distance (0–1)" if metric == "spread" else "distinct / all n-grams (0–1)"
        )
        ax.set_ylim(*_unit_range(drawn))
        ax.set_xticks(rounds)
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    handles, labels = [], []
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    fig.suptitle(f"Diversity of newly accepted instructions (embedding: {div.embedding})")
    if div.unmeasured:
        fig.supxlabel(div.unmeasured_note(), fontsize="small")
    return fig


def _line(
    ax: Axes, drawn: list[float], xs: list[int], ys: list[float], fmt: str, **kwargs: Any
) -> None:
    """Plot, and remember the values for the axis range."""
    drawn.extend(y for y in ys if not math.isnan(y))
    ax.plot(xs, ys, fmt, **kwargs)


def _unit_range(values: Sequence[float], span: float = 0.25) -> tuple[float, float]:
    """A y-range inside [0, 1] around the values, at least `span` wide: wide enough that
    sampling noise looks small, narrow enough that a 5 % drop (an alert) shows."""
    if not values:
        return 0.0, 1.02
    lo, hi = min(values), max(values)
    pad = max((span - (hi - lo)) / 2, 0.03)
    lo, hi = lo - pad, hi + pad
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > 1.02:
        lo, hi = max(0.0, lo - (hi - 1.02)), 1.02
    return lo, hi


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def plot_depth(data: ReportData) -> Figure:
    fig, axes = _figure(8, 3.8)
    ax = axes[0][0]
    accepted = [e for e in data.examples if e.status == "accepted"]
    if not accepted:
        _empty(ax, "No accepted examples yet.")
        return fig
    depths = list(range(max(e.depth for e in accepted) + 1))
    counts = Counter((e.depth, e.source) for e in accepted)
    bottom = np.zeros(len(depths))
    for source in _ordered_sources({e.source for e in accepted}):
        heights = np.array([counts[(d, source)] for d in depths], dtype=float)
        ax.bar(depths, heights, bottom=bottom, label=source, color=palette.source_color(source))
        bottom += heights
    _headroom(ax, float(bottom.max()), 0.08)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xticks(depths)
    ax.set_xlabel("evolution depth (steps from the origin; a rewrite keeps its parent's)")
    ax.set_ylabel("accepted examples (count)")
    ax.set_title("Evolution depth of accepted examples")
    fig.legend(loc="outside right upper", title="source")
    return fig


def plot_cost(data: ReportData) -> Figure:
    fig, axes = _figure(13, 4, ncols=2)
    rows = [r for r in data.rounds if r.calls or r.tokens]
    for ax, attr, label in zip(
        axes[0], ("calls", "tokens"), ("model calls", "tokens"), strict=True
    ):
        if not rows:
            _empty(ax, f"No {label} recorded by any round.")
            continue
        stages = sorted({s for r in rows for s in getattr(r, attr)}, key=_stage_key)
        series = {
            s: [getattr(r, attr).get(s, 0) / r.accepted if r.accepted else 0 for r in rows]
            for s in stages
        }
        hatches = palette.ordered_hatches(stages)
        tops = _stacked(ax, [r.number for r in rows], series, STAGE_COLORS, hatches)
        _headroom(ax, float(tops.max()), 0.1)
        for x, r in enumerate(rows):
            if not r.accepted:
                ax.annotate(
                    "0 accepted",
                    (x, 0),
                    ha="center",
                    va="bottom",
                    rotation=90,
                    color=palette.REJECTED,
                    fontsize="small",
                )
        ax.set_ylabel(f"{label} per accepted example")
        ax.set_title(f"{label.capitalize()} per accepted example, by stage")
    handles, labels = axes[0][1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", title="stage")
    return fig


def plot_student(data: ReportData) -> Figure:
    fig, axes = _figure(9, 4.4)
    ax = axes[0][0]
    students = data.students
    if not students:
        _empty(ax, "No student versions registered yet.")
        return fig
    from matplotlib.patches import Patch

    x = np.arange(len(students))
    base = [_nan(s.baseline_loss) for s in students]
    held = [_nan(s.heldout_loss) for s in students]
    colors = [
        palette.ACCEPTED if s.verdict else palette.REJECTED if s.verdict is False else "white"
        for s in students
    ]
    ax.bar(x - 0.2, base, 0.4, color=palette.BASELINE)
    ax.bar(x + 0.2, held, 0.4, color=colors, edgecolor="0.3", linewidth=0.6)
    tops = np.nan_to_num(np.fmax(base, held), nan=0.0)
    for i, s in enumerate(students):
        for dx, value in ((-0.2, base[i]), (0.2, held[i])):
            if not math.isnan(value):
                ax.annotate(
                    f"{value:.3f}", (i + dx, value), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize="x-small",
                )  # fmt: skip
        if s.verdict is None:
            verdict = "not evaluated"
        else:
            verdict = "gate: promote" if s.verdict else "gate: keep the baseline"
        if s.active:
            verdict += "\n(active)"
        ax.annotate(
            verdict, (i, tops[i]), xytext=(0, 14), textcoords="offset points",
            ha="center", va="bottom", fontsize="small",
        )  # fmt: skip
    _headroom(ax, float(tops.max()), 0.3)
    ax.set_xticks(x, [f"{s.version}\nvs {s.baseline_name}" for s in students])
    ax.set_xlim(
        -0.5 - 0.3 * max(0, 3 - len(students)),
        len(students) - 0.5 + 0.3 * max(0, 3 - len(students)),
    )
    ax.set_ylabel("held-out loss (nats per response token)")
    ax.set_title("Held-out loss: each version against the one it was compared with")
    handles = [Patch(color=palette.BASELINE, label="baseline (compared with)")]
    if any(s.verdict for s in students):
        handles.append(Patch(color=palette.ACCEPTED, label="candidate, gate passed"))
    if any(s.verdict is False for s in students):
        handles.append(Patch(color=palette.REJECTED, label="candidate, gate failed"))
    if any(s.verdict is None for s in students):
        handles.append(Patch(facecolor="white", edgecolor="0.3", label="candidate, no verdict"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def plot_training(data: ReportData) -> Figure:
    fig, axes = _figure(9, 4.2)
    ax = axes[0][0]
    curves = [c for c in data.curves if c.steps]
    if not curves:
        text = (
            "No per-step training loss logged (a run shorter than trainer.logging_steps logs none)."
            if data.curves
            else "No student versions registered yet."
        )
        _empty(ax, text)
        return fig
    colors = palette.ramp(len(curves))
    markers = "os^Dv<>p"
    for i, (color, curve) in enumerate(zip(colors, curves, strict=True)):
        marker = markers[i % len(markers)]
        ax.plot(curve.steps, curve.losses, marker=marker, color=color, label=curve.version)
        if curve.heldout_loss is not None:
            at = curve.global_step or curve.steps[-1]
            ax.plot([at], [curve.heldout_loss], marker="*", markersize=13, color=color,
                    markeredgecolor="black", linestyle="")  # fmt: skip
    ax.plot([], [], marker="*", markersize=11, color="white", markeredgecolor="black",
            linestyle="", label="held-out loss after training")  # fmt: skip
    missing = [c.version for c in data.curves if not c.steps]
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats per response token)")
    title = "Training loss per student version (trainer log)"
    if missing:
        title += f"\nno per-step log: {', '.join(missing)}"
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(loc="outside right upper", fontsize="small", title="version")
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi, format="png")
    return path


def save_plots(data: ReportData, config: ReportConfig, out_dir: Path) -> dict[str, Path]:
    """Draw every plot of `PLOTS` into `out_dir/<name>.png`."""
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
    pngs = {}
    with _plotting():
        for name in PLOTS:
            pngs[name] = _save(makers[name](), out_dir / f"{name}.png", config.dpi)
    return pngs
