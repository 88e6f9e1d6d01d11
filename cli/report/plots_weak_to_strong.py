"""The weak-to-strong plot: the four models' suite accuracies and PGR, per experiment.

One panel per experiment (the newest few): for every prompts group (all prompts, then each
suite part when the suite has parts) the weak model, the untuned strong model, the strong
student trained on the weak labels and the one trained on verified answers (the ceiling),
each with its bootstrap interval, and PGR with its interval above the group. The report
draws it when the project ran the experiment; `bench/weak_to_strong.py` saves the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evoinstruct.cli.report import palette
from evoinstruct.cli.report.plot_base import _empty, _figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABELS = {
    "weak": "weak supervisor",
    "strong_base": "strong, untuned",
    "strong_on_weak": "strong on weak labels",
    "ceiling": "strong on verified answers (ceiling)",
}
COLORS = {
    "weak": palette.ramp(10)[1],
    "strong_base": palette.BASELINE,
    "strong_on_weak": palette.ramp(10)[5],
    "ceiling": palette.ramp(10)[9],
}
MAX_PANELS = 3


def _pgr_label(found: Mapping[str, Any]) -> str:
    if found.get("pgr") is None:
        return "PGR undefined\n(no gap)"

    def end(value: float | None, sign: str) -> str:
        return f"{sign}∞" if value is None else f"{value:.2f}"

    text = f"PGR {found['pgr']:.2f}\n[{end(found['low'], '−')}, {end(found['high'], '')}]"
    return text if found.get("meaningful") else text + "\ngap not clear"


def _groups(pgr: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    groups = [(f"all prompts\n(n={pgr['all']['n']})", pgr["all"])]
    groups += [
        (f"{name.replace('_', ' ')}\n(n={found['n']})", found)
        for name, found in pgr.get("by_part", {}).items()
    ]
    return groups


def _panel(ax: Any, experiment: Mapping[str, Any]) -> None:
    from evoinstruct.trainer.pgr import MODELS

    groups = _groups(experiment["pgr"])
    width = 0.8 / len(MODELS)
    top = 0.0
    for g, (_, found) in enumerate(groups):
        for m, model in enumerate(MODELS):
            acc = found["accuracy"][model]
            x = g - 0.4 + width * (m + 0.5)
            value = 100 * acc["value"]
            error = [[value - 100 * acc["low"]], [100 * acc["high"] - value]]
            ax.bar(x, value, width, color=COLORS[model], edgecolor="0.3", linewidth=0.5,
                   label=LABELS[model] if g == 0 else None)  # fmt: skip
            ax.errorbar(x, value, yerr=error, color="0.15", capsize=2, linewidth=0.8)
            ax.annotate(
                f"{value:.0f}", (x, 100 * acc["high"]), xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize="x-small",
            )  # fmt: skip
            top = max(top, 100 * acc["high"])
        tallest = max(100 * found["accuracy"][m]["high"] for m in MODELS)
        ax.annotate(
            _pgr_label(found), (g, tallest), xytext=(0, 14), textcoords="offset points",
            ha="center", va="bottom", fontsize="small",
        )  # fmt: skip
    ax.set_xticks(range(len(groups)), [label for label, _ in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, max(top * 1.5, 5))
    ax.set_ylabel(f"suite accuracy, {experiment['metric'].replace('_', ' ')} (%)")
    labels = experiment.get("labels", {})
    ax.set_title(
        f"{experiment['name']}: students trained on {labels.get('answered', '?')} prompts "
        f"({labels.get('truncated', 0)} weak labels cut at the token limit)"
    )


def plot_weak_to_strong(experiments: Sequence[Mapping[str, Any]]) -> Figure:
    """The newest MAX_PANELS finished experiments (results as `store.finish_experiment` keeps
    them), one panel each."""
    shown = list(experiments)[-MAX_PANELS:]
    groups = max((1 + len(e["pgr"].get("by_part", {})) for e in shown), default=1)
    fig, axes = _figure(
        min(4 + 2.2 * groups, 12), 4.6 * max(len(shown), 1), nrows=max(len(shown), 1)
    )
    if not shown:
        _empty(axes[0][0], "No weak-to-strong experiment has finished.")
        return fig
    for row, experiment in zip(axes, shown, strict=True):
        _panel(row[0], experiment)
    fig.legend(
        *axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=2,
        fontsize="small",
    )  # fmt: skip
    return fig
