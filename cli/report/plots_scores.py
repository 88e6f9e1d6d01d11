"""The report's score plots: score distributions, lengths, diversity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.cli.report import palette
from evoinstruct.cli.report.diversity import METRIC_LABELS, METRICS
from evoinstruct.cli.report.plot_base import (
    GROUP_COLORS,
    GROUP_LABELS,
    LENGTH_KEYS,
    SCORER_ORDER,
    _empty,
    _figure,
    _nan,
)
from evoinstruct.cli.report.thresholds import Threshold

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from evoinstruct.cli.report.data import ReportData, ScoreKey
    from evoinstruct.graph.report_config import ReportConfig


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
