"""The report's colours: one meaning per colour across every plot (and the HTML page).

A status colour (accepted green, rejected red) never stands for a source, a
stage or a version anywhere, so a reader who learnt "red = rejected" on one
plot can trust it on the next. Ordered things (pipeline stages, student
versions) get light-to-dark shades of blue-grey, a family no status or
source uses. Nothing here imports matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence

# What became of an example (store.records.STATUSES).
STATUS: dict[str, str] = {
    "accepted": "#2e7d32",  # green
    "rejected": "#c62828",  # red
    "candidate": "#f9a825",  # amber: still waiting for a stage
    "superseded": "#bdbdbd",  # light grey: replaced by its ReAlign rewrite
}
# Where an example came from (store.records.SOURCES).
SOURCE: dict[str, str] = {
    "seed": "#1a237e",  # navy: the human seeds
    "generated": "#4fc3f7",  # sky blue
    "evolved": "#8e24aa",  # purple
    "rewritten": "#ef6c00",  # orange
    "filter_input": "#6d4c41",  # brown
}
ACCEPTED = STATUS["accepted"]
REJECTED = STATUS["rejected"]
SEED = SOURCE["seed"]
BASELINE = "#757575"  # grey: what a student is compared against
THRESHOLD = "#212121"  # near-black, always drawn dashed
ALERT = "#c51162"  # magenta ring: a diversity alert (not a rejection)
FAILED_CALL = "#ffcc80"  # pale orange, hatched: a model call that gave no verdict
ENTERED = "#e0e0e0"  # pale grey: the part of a funnel bar that was not kept
UNKNOWN = "#9e9e9e"

_RAMP = (
    "#eceff1",
    "#cfd8dc",
    "#b0bec5",
    "#90a4ae",
    "#78909c",
    "#607d8b",
    "#546e7a",
    "#455a64",
    "#37474f",
    "#263238",
)
# Neighbouring shades are close: every other item of a stack is hatched as well (a pattern
# that only separates neighbours, not a colour with a meaning).
HATCH = "//"


def status_color(status: str) -> str:
    return STATUS.get(status, UNKNOWN)


def source_color(source: str) -> str:
    return SOURCE.get(source, UNKNOWN)


def ramp(n: int) -> list[str]:
    """`n` blue-grey shades, light to dark (pipeline or time order)."""
    if n <= 0:
        return []
    if n == 1:
        return [_RAMP[-3]]
    # From the third shade on: the palest ones vanish on white.
    first = 2
    return [_RAMP[first + round(i * (len(_RAMP) - 1 - first) / (n - 1))] for i in range(n)]


def ordered_colors(names: Sequence[str]) -> dict[str, str]:
    return dict(zip(names, ramp(len(names)), strict=True))


def ordered_hatches(names: Sequence[str]) -> dict[str, str]:
    return {name: HATCH if i % 2 else "" for i, name in enumerate(names)}
