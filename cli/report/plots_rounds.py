"""The report's per-round plots: pool size, acceptance, the filter funnel, depth, cost."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from evoinstruct.cli.report import palette
from evoinstruct.cli.report.funnel import STAGE_ORDER
from evoinstruct.cli.report.plot_base import (
    FUNNEL_ROUNDS,
    STAGE_COLORS,
    _empty,
    _figure,
    _headroom,
    _ordered_sources,
    _stacked,
)
from evoinstruct.store.records import STATUSES, Rejection

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from evoinstruct.cli.report.data import ReportData
    from evoinstruct.graph.report_config import ReportConfig


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
