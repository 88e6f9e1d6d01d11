"""The report's student plots: what the gate decided on (the held-out suite per part, with
held-out loss beside it as a diagnostic), training curves."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from evoinstruct.cli.report import palette
from evoinstruct.cli.report.plot_base import (
    _empty,
    _figure,
    _headroom,
    _nan,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from evoinstruct.cli.report.data import ReportData, StudentRow


PART_CODES = {
    "in_distribution": ("ID", "in-distribution (training's types and phrasings)"),
    "held_out_phrasing": ("HP", "held-out phrasing (suite-only sentences)"),
    "held_out_type": ("HT", "held-out type (never in training)"),
    "ifeval": ("IF", "IFEval-format rows"),
    "unsplit": ("all", "the whole suite (built before parts)"),
    "all": ("all", "the whole suite (built before parts)"),
}
GATED_SHADE = "#eceff1"  # pale blue-grey behind the parts the gate decided on
CANDIDATE = "#607d8b"  # blue-grey: a candidate's held-out loss (no verdict colour: not the gate)


def _student_figure() -> tuple[Figure, Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5.4), layout="constrained")
    FigureCanvasAgg(fig)
    suite_ax, loss_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3.2, 1]})
    return fig, suite_ax, loss_ax


def plot_student(data: ReportData) -> Figure:
    """What the gate decided on, per version: prompt-level strict accuracy of the candidate
    and the version it was compared with, per part of the held-out suite, with intervals and
    the verdict; held-out loss beside it as a diagnostic."""
    fig, ax, loss_ax = _student_figure()
    students = data.students
    if not students:
        _empty(ax, "No student versions registered yet.")
        loss_ax.set_axis_off()
        return fig
    _plot_suite(ax, students)
    _plot_loss(loss_ax, students)
    return fig


def _verdict_color(verdict: bool | None) -> str:
    return palette.ACCEPTED if verdict else palette.REJECTED if verdict is False else "white"


def _plot_suite(ax: Axes, students: list[StudentRow]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    width = max([len(s.suite) for s in students] + [1])
    step = 0.8 / width
    top = 0.0
    codes: dict[str, str] = {}
    for i, s in enumerate(students):
        color = _verdict_color(s.verdict)
        if not s.suite:
            ax.text(i, 0.02, "no suite result:\ngated on loss", ha="center", va="bottom",
                    fontsize="small", color="0.35", transform=ax.get_xaxis_transform())  # fmt: skip
        for j, part in enumerate(s.suite):
            x = i - 0.4 + step * (j + 0.5)
            code, label = PART_CODES.get(part.part, (part.part, part.part))
            codes[code] = label
            if part.gated:
                ax.axvspan(x - step / 2, x + step / 2, color=GATED_SHADE, zorder=0, linewidth=0)
            # Under the axis, above the version's label: points at 0% stay readable.
            ax.text(x, -0.015, code, ha="center", va="top", fontsize="x-small", color="0.35",
                    transform=ax.get_xaxis_transform())  # fmt: skip
            points = ((x - step * 0.18, part.baseline, palette.BASELINE),
                      (x + step * 0.18, part.candidate, color))  # fmt: skip
            shown = [(px, v) for px, v, _ in points if v]
            if len(shown) == 2:
                ax.plot([p[0] for p in shown], [100 * p[1]["value"] for p in shown],
                        color="0.6", linewidth=0.8, zorder=1)  # fmt: skip
            for px, value, c in points:
                if not value:
                    continue
                y = 100 * value["value"]
                err = [[y - 100 * value["low"]], [100 * value["high"] - y]]
                ax.errorbar([px], [y], yerr=err, fmt="o", color=c if c != "white" else "0.3",
                            markerfacecolor=c, markeredgecolor="0.25", capsize=2,
                            markersize=5, zorder=3)  # fmt: skip
                top = max(top, 100 * value["high"])
    ymax = max(top, 10.0) * 1.5
    ax.set_ylim(0, ymax)
    for i, s in enumerate(students):
        ax.annotate(_verdict_text(s), (i, top * 1.04 if top else 1), ha="center", va="bottom",
                    fontsize="small")  # fmt: skip
    ax.set_xticks(range(len(students)), [f"{s.version}\nvs {s.baseline_name}" for s in students])
    ax.tick_params(axis="x", length=0, pad=14)
    ax.set_xlim(
        -0.5 - 0.3 * max(0, 2 - len(students)),
        len(students) - 0.5 + 0.3 * max(0, 2 - len(students)),
    )
    ax.set_ylabel("held-out suite, prompt-level strict accuracy (%)")
    ax.set_title("What the gate decided on: each version against the one it was compared with")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=palette.BASELINE, label="compared with"),
        Line2D([], [], marker="o", linestyle="", color=palette.ACCEPTED,
               markeredgecolor="0.25", label="candidate, promoted"),
        Line2D([], [], marker="o", linestyle="", color=palette.REJECTED,
               markeredgecolor="0.25", label="candidate, refused"),
        Patch(color=GATED_SHADE, label="parts the gate decides on"),
    ]  # fmt: skip
    handles += [Patch(color="white", label=f"{code}: {label}") for code, label in codes.items()]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        fontsize="x-small",
        ncol=4,
        frameon=False,
    )


def _verdict_text(s: StudentRow) -> str:
    if s.verdict is None:
        head = "not evaluated"
    else:
        head = "gate: promote" if s.verdict else "gate: refused"
    if s.active:
        head += " (active)"
    if s.gated is None:
        return head
    d = s.gated
    where = "held-out parts" if s.gated_parts else "whole suite"
    line = (
        f"{where}: {100 * d['value']:+.1f} pts\n"
        f"(95% CI {100 * d['low']:+.1f}..{100 * d['high']:+.1f})"
    )
    if s.power is not None:
        line += f"\npower: +{s.power:.1f} pts at 80%"
    return f"{head}\n{line}"


def _plot_loss(ax: Axes, students: list[StudentRow]) -> None:
    x = np.arange(len(students))
    base = [_nan(s.baseline_loss) for s in students]
    held = [_nan(s.heldout_loss) for s in students]
    if all(math.isnan(v) for v in base + held):
        _empty(ax, "No held-out loss measured.")
        return
    ax.bar(x - 0.2, base, 0.4, color=palette.BASELINE, label="compared with")
    ax.bar(x + 0.2, held, 0.4, color=CANDIDATE, label="candidate")
    for i in range(len(students)):
        for dx, value in ((-0.2, base[i]), (0.2, held[i])):
            if not math.isnan(value):
                ax.annotate(f"{value:.3f}", (i + dx, value), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom",
                            fontsize="x-small")  # fmt: skip
    tops = np.nan_to_num(np.fmax(base, held), nan=0.0)
    _headroom(ax, float(tops.max()), 0.25)
    ax.set_xticks(x, [s.version for s in students])
    ax.set_xlim(-0.6, len(students) - 0.4)
    ax.set_ylabel("nats per response token")
    ax.set_title("Held-out loss on pool examples:\na diagnostic, not the gate", fontsize="small")
    ax.legend(fontsize="x-small", loc="upper right")


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
