"""The report's student plots: held-out loss per version, training curves."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from evoinstruct.graph.report import palette
from evoinstruct.graph.report.plot_base import (
    _empty,
    _figure,
    _headroom,
    _nan,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from evoinstruct.graph.report.data import ReportData


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
