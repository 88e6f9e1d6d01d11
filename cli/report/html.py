"""The report's one self-contained HTML page: PNGs as data URIs, every piece of text escaped."""

from __future__ import annotations

import base64
import html
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoinstruct.cli.report.diversity import METRIC_LABELS, METRICS, DiversityRow
from evoinstruct.store.records import Example

if TYPE_CHECKING:
    from evoinstruct.cli.report.data import ReportData
    from evoinstruct.graph.report_config import ReportConfig
    from evoinstruct.store import Store

_CSS = """
body{font-family:-apple-system,"Segoe UI","Helvetica Neue",Arial,"Noto Sans CJK SC",
"PingFang SC","Microsoft YaHei",sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em;line-height:1.4}
.scroll{overflow-x:auto;margin:.5em 0 1.5em}
table{border-collapse:collapse}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:right;font-size:.9em;vertical-align:top}
th{background:#f3f3f3}
td.l,th.l{text-align:left}td.reason,th.reason{text-align:left;min-width:16em}
table.compact td{white-space:nowrap}tr.sub td{border-top:none;color:#444}
.alert{background:#fde8e8;border-left:4px solid #c00;
padding:.5em 1em}.ok{background:#e8f6e8;border-left:4px solid #383;padding:.5em 1em}
.note{background:#f4f4f4;border-left:4px solid #999;padding:.5em 1em}
.pass{color:#2e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
.ex{border:1px solid #ddd;border-radius:4px;padding:.5em 1em;margin:.7em 0}
.ex pre{white-space:pre-wrap;word-wrap:break-word;background:#fafafa;padding:.4em;
margin:.2em 0}.meta{color:#555;font-size:.85em}
"""

_CAPTIONS = {
    "pool": "Accepted examples in the pool after each round (cumulative), stacked by source; "
    "the dashed line counts every stored example whatever its status.",
    "acceptance": "Left: examples made in each round (counted as examples) by their current "
    "status, labelled with the acceptance rate (accepted / (accepted + rejected); superseded "
    "originals were replaced by their rewrite). Right: rejection events recorded in each "
    "round, by stage (counted as rows of the rejections table: one example can have several, "
    "and a dropped draft never became an example); failed model calls are no verdict.",
    "funnel": "Each round's stages in pipeline order: a bar is the items that entered the "
    "stage, green the ones it kept, red the ones it dropped. generate and evolve count "
    "drafts (proposed before storing), the other stages stored examples, followed from the "
    "round that made them. Beside each bar: kept/entered and the top drop reasons as "
    "rejection events (×n; one item can have several). The table below lists every round.",
    "scores": "Scores of the examples made in each round, one panel per scorer and dimension: "
    "box plots with every value as a dot coloured by the example's fate; n is the number of "
    "scored examples. Dashed lines are the thresholds of the config each round stored. "
    "Lengths are in the next plot; measures with one value for every example are named "
    "below the panels instead of drawn.",
    "lengths": "Word counts (a CJK character counts as one word) of instructions with their "
    "input and of responses, by the example's fate, with the critic's length thresholds.",
    "diversity": "Distinct-1/2 (distinct n-grams / all n-grams) and embedding spread (mean "
    "pairwise cosine distance) of newly accepted instructions: per round, against the seed "
    "pool subsampled to the same size, and of all new instructions up to each round. "
    "Magenta rings mark alerts.",
    "depth": "How many evolution steps separate each accepted example from its origin.",
    "cost": "Model calls and tokens the round's stages spent, divided by the examples the "
    "round accepted.",
    "student": "What the gate decided on: per version, prompt-level strict accuracy on each "
    "part of the held-out suite (ID in-distribution, HP held-out phrasing, HT held-out type, "
    "IF IFEval rows) for the candidate (green: promoted; red: refused) and the version it was "
    "compared with (grey; the base model for the first), with 95% bootstrap intervals; the "
    "shaded parts are the ones the gate decides on, and the text above states the paired "
    "difference there and the gate's power. Right: held-out loss on pool examples, a "
    "diagnostic beside the suite.",
    "training": "Training loss each version's trainer logged, by optimizer step; the star is "
    "the version's held-out loss after training.",
    "weak_to_strong": "Weak-to-strong supervision, per experiment: the weak supervisor, the "
    "untuned strong model, the strong student trained on the weak model's answers (never "
    "checked) and the one trained on verified answers to the same prompts (the ceiling), on "
    "the held-out suite with 95% bootstrap intervals; above each group, PGR = (strong on weak "
    "- weak) / (ceiling - weak) with its joint bootstrap interval (∞: the ceiling does not "
    "clearly beat the weak model, so PGR is not meaningful).",
}
# Where each plot goes on the page.
_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Pool and rounds", ("pool", "acceptance", "funnel")),
    ("Scores and lengths", ("scores", "lengths")),
    ("Diversity", ("diversity",)),
    ("Evolution and cost", ("depth", "cost")),
    ("Student", ("student", "training", "weak_to_strong")),
    ("Generator", ()),
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[Any]],
    left: int = 1,
    classes: dict[int, str] | None = None,
    *,
    compact: bool = False,
    notes: Sequence[str] | None = None,
) -> str:
    """Cells are HTML already (escaped by the caller); the head is text. `notes[i]`, when
    given and not empty, is a full-width line under row i (HTML too)."""

    def cells(values: Sequence[Any], tag: str) -> str:
        out = []
        for i, v in enumerate(values):
            cls = (classes or {}).get(i) or ("l" if i < left else "")
            out.append(f"<{tag}{f' class={cls}' if cls else ''}>{v}</{tag}>")
        return "".join(out)

    body = []
    for i, r in enumerate(rows):
        body.append(f"<tr>{cells(r, 'td')}</tr>")
        if notes and notes[i]:
            body.append(f"<tr class=sub><td colspan={len(head)} class=l>{notes[i]}</td></tr>")
    opening = "<table class=compact>" if compact else "<table>"
    table = f"{opening}<tr>{cells([_e(h) for h in head], 'th')}</tr>{''.join(body)}</table>"
    return f'<div class="scroll">{table}</div>'


def _summary_html(data: ReportData) -> str:
    pool = data.pool
    status = ", ".join(f"{_e(k)} {_e(v)}" for k, v in pool.get("by_status", {}).items())
    active = next((s.version for s in data.students if s.active), None)
    lines = [
        f"<p><b>{_e(pool.get('total', 0))}</b> examples ({status}); "
        f"{_e(pool.get('rounds_finished', 0))} rounds finished; "
        f"{_e(pool.get('rejections', 0))} rejection events recorded; active student: "
        f"{_e(active or 'none (the teacher generates)')}.</p>"
    ]
    div = data.diversity
    measured = {row.round: row for row in div.rows}
    # Diversity columns only when something was measured; otherwise the note says why.
    with_diversity = bool(measured) or any(v is not None for v in div.seed_values.values())
    alerted = {a.round for a in div.alerts}
    rows = []
    for r in data.rounds:
        events = sum(n for by in r.rejections.values() for n in by.values())
        calls, tokens = sum(r.calls.values()), sum(r.tokens.values())
        row = [
            _e(r.number),
            _e(r.phase or ("seeds" if r.number == 0 else "–")),
            _e(sum(r.by_status.values())),
            _e(r.accepted),
            _e(r.by_status.get("rejected", 0)),
            _e(r.by_status.get("superseded", 0)),
            _fmt(r.acceptance, 2),
            _e(events),
            _fmt(int(calls)) if calls else "–",
            _fmt(int(tokens)) if tokens else "–",
            _fmt(tokens / r.accepted, 0) if tokens and r.accepted else "–",
        ]
        if with_diversity:
            row += _diversity_cells(data, r.number, measured.get(r.number), r.number in alerted)
        rows.append(row)
    head = ["round", "phase", "made", "accepted", "rejected", "superseded", "acceptance",
            "rejection events", "calls", "tokens", "tokens / accepted"]  # fmt: skip
    if with_diversity:
        head += ["distinct-2 (seeds)", "spread (seeds)", "diversity"]
    table = _table(head, rows, left=2, compact=True) if rows else "<p>No rounds yet.</p>"
    resumed = [
        f"<li>round {_e(r.number)}, {_e(line)}</li>" for r in data.rounds for line in r.starts
    ]
    if resumed:
        table += (
            "<p>Resumed rounds: each later start ran the remaining steps with its own "
            f"settings.</p><ul>{''.join(resumed)}</ul>"
        )
    return "\n".join(lines) + table


def _diversity_cells(
    data: ReportData, number: int, row: DiversityRow | None, alert: bool
) -> list[str]:
    div = data.diversity
    if number == 0 and div.seeds_n:
        seeds = [_fmt(div.seed_values.get(m)) for m in ("distinct2", "spread")]
        return [seeds[0], seeds[1], "seed pool (reference)"]
    if row is not None:
        verdict = "<b style='color:#c51162'>ALERT</b>" if alert else "ok"
        return [_pair(row, "distinct2"), _pair(row, "spread"), verdict]
    if number in div.unmeasured:
        return ["–", "–", f"too few ({div.unmeasured[number]} &lt; {div.min_examples})"]
    return ["–", "–", "none new"]


def _pair(row: DiversityRow, metric: str) -> str:
    return f"{_fmt(row.values.get(metric))} ({_fmt(row.seed_values.get(metric))})"


def _alerts_html(data: ReportData) -> str:
    div = data.diversity
    parts = [f'<div class="alert">{_e(a.message)}</div>' for a in div.alerts]
    if not div.rows:
        text = div.not_measured_note().replace("\n", " ")
        parts.append(f'<div class="note">Diversity per round not measured. {_e(text)}</div>')
    elif not parts:
        text = (
            "No diversity alerts: no measured round is less diverse than the seed pool."
            if div.seeds_n
            else "No diversity alerts (no seed pool to compare with)."
        )
        parts.append(f'<div class="ok">{_e(text)}</div>')
    seeds = ", ".join(f"{METRIC_LABELS[m]} {_fmt(div.seed_values.get(m))}" for m in METRICS)
    parts.append(f"<p class=meta>Seed pool: {_e(div.seeds_n)} instructions; {seeds}; "
                 f"embedding: {_e(div.embedding)}.</p>")  # fmt: skip
    if div.cumulative:
        last = div.cumulative[-1]
        values = ", ".join(f"{METRIC_LABELS[m]} {_fmt(last.values.get(m))}" for m in METRICS)
        parts.append(
            f"<p class=meta>All {_e(last.n)} new instructions up to round {_e(last.round)}: "
            f"{values}.</p>"
        )
    # The per-round "too few" notes are summed up in one line (or in the box above).
    small = tuple(f"round {r}:" for r in div.unmeasured)
    if div.unmeasured and div.rows:
        parts.append(f"<p class=meta>{_e(div.unmeasured_note())}</p>")
    parts += [f"<p class=meta>{_e(n)}</p>" for n in div.notes if not n.startswith(small)]
    return "\n".join(parts)


def _reasons(reasons: dict[str, int], limit: int) -> str:
    """The `limit` most frequent reasons by name, the rest as "other"."""
    top = sorted(reasons.items(), key=lambda kv: -kv[1])
    shown = [f"{_e(r)} ×{_e(n)}" for r, n in top[:limit]]
    if len(top) > limit:
        shown.append(f"other ×{_e(sum(n for _, n in top[limit:]))}")
    return ", ".join(shown)


def _funnel_html(data: ReportData, config: ReportConfig) -> str:
    if not data.funnels:
        return ""
    rows = []
    for f in data.funnels:
        for i, stage in enumerate(f.stages):
            reasons = _reasons(stage.reasons, config.max_reasons)
            rows.append(
                [
                    _e(f.round) if i == 0 else "",
                    _e(stage.name),
                    _e(stage.unit),
                    _e(stage.entered),
                    _e(stage.kept),
                    _e(stage.dropped) if stage.dropped else "",
                    reasons or _e(stage.note),
                ]
            )
        books = [f"{f.accepted} accepted", f"{f.waiting} waiting"]
        if f.failed_calls:
            calls = ", ".join(f"{s} {n}" for s, n in f.failed_calls.items())
            books.append(f"failed model calls (no verdict): {calls}")
        if f.recorded_only:
            books.append(f"{f.recorded_only} verdicts recorded that dropped nothing")
        if f.unaccounted:
            books.append(f"{f.unaccounted} kept by the funnel but not accepted or waiting")
        rows.append(["", "<i>end</i>", "", "", "", "", _e("; ".join(books))])
    head = ["round", "stage", "counts", "entered", "kept", "dropped",
            "top drop reasons (rejection events)"]  # fmt: skip
    return _table(head, rows, left=3, classes={6: "reason"})


def _students_html(data: ReportData) -> str:
    if not data.students:
        return "<p>No student versions registered yet.</p>"
    rows, notes = [], []
    for s in data.students:
        delta = (
            s.heldout_loss - s.baseline_loss
            if s.heldout_loss is not None and s.baseline_loss is not None
            else None
        )
        if s.verdict is None:
            verdict = "not evaluated"
        elif s.verdict:
            verdict = "<span class=pass>promote</span>"
        else:
            verdict = "<span class=fail>keep baseline</span>"
        state = "active" if s.active else "promoted earlier" if s.promoted else "never promoted"
        rows.append(
            [
                _e(s.version),
                _e(s.method),
                _e(s.round),
                _gated_html(s),
                _fmt(s.train_loss),
                _e(s.baseline_name),
                _fmt(s.baseline_loss),
                _fmt(s.heldout_loss),
                _fmt(delta),
                _e(s.heldout_examples) if s.heldout_examples is not None else "–",
                _fmt(s.winning_score),
                verdict,
                _e(state),
            ]
        )
        notes.append(f"gate: {_e(s.reason)}" if s.reason else "")
    head = ["version", "method", "round", "suite, gated parts: Δ (95% CI)", "train loss",
            "baseline", "baseline loss",
            "held-out loss", "Δ held-out − baseline", "held-out examples", "winning score",
            "gate verdict", "now"]  # fmt: skip
    note = (
        "<p class=meta>Losses are mean cross-entropy per response token (nats) on the "
        "version's held-out examples; the baseline is the version active when it was "
        "evaluated (the base model for the first), measured on the same examples. The line "
        "under each version is the gate's reason.</p>"
    )
    return note + _table(head, rows, notes=notes)


def _gated_html(s: Any) -> str:
    """'+6.5 (+3.0..+10.0), 22.0% vs 15.5%' for the paired difference the gate decided on."""
    if s.gated is None:
        return "–"
    d = s.gated
    parts = [p for p in s.suite if p.gated]
    n = sum(p.n for p in parts)
    text = f"{100 * d['value']:+.1f} ({100 * d['low']:+.1f}..{100 * d['high']:+.1f}), n={n}"
    if s.power is not None:
        text += f"; finds +{s.power:.1f} at 80%"
    return _e(text)


def _generator_html(data: ReportData, config: ReportConfig) -> str:
    if not data.generator:
        return "<p>No generation calls recorded yet.</p>"
    rows, notes = [], []
    for g in data.generator:
        rows.append(
            [
                _e(g.version),
                _e(", ".join(str(r) for r in g.rounds)),
                _e(g.calls),
                _e(g.tasks),
                _e(g.accepted),
                f"{g.per_call:.2f} [{g.low:.2f}, {g.high:.2f}]",
                _e(g.pending),
                _fmt(g.diversity.get("distinct2")),
                _fmt(g.seed_diversity.get("distinct2")),
                _reasons(g.drops, config.max_reasons),
            ]
        )
        notes.append(
            "accepted, e.g.: " + " | ".join(_e(_clip(t, 120)) for t in g.sample) if g.sample else ""
        )
    head = ["generator", "rounds", "calls", "tasks written", "accepted",
            "accepted per call [95% CI]", "pending", "distinct-2", "distinct-2 (seeds)",
            "drops (generate step; later stages as stage:reason)"]  # fmt: skip
    note = (
        "<p class=meta>Each generation call's tasks, by the model version that served the "
        "generator: how many the answers held, how many the pool accepted (per call, with a "
        "bootstrap interval over calls), and where the rest went. Distinct-2 of the accepted "
        "instructions is measured next to the seed pool's at the same sample size.</p>"
    )
    return note + _table(head, rows, left=2, classes={9: "reason"}, notes=notes)


def _clip(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + " …"


def _samples_html(store: Store, data: ReportData, config: ReportConfig) -> str:
    by_round: dict[int, list[Example]] = defaultdict(list)
    for e in data.examples:
        if e.status == "accepted":
            by_round[e.round].append(e)
    if not by_round or config.samples_per_round == 0:
        return "<p>No accepted examples yet.</p>"
    rng = random.Random(f"{config.seed}:samples")
    parts = []
    for r in sorted(by_round):
        pool = sorted(by_round[r], key=lambda e: e.id)
        picked = rng.sample(pool, min(config.samples_per_round, len(pool)))
        parts.append(f"<h3>Round {_e(r)} ({_e(len(pool))} accepted)</h3>")
        scores = store.scores_for([e.id for e in picked])
        parts += [_example_html(store, e, scores[e.id], config) for e in picked]
    return "\n".join(parts)


def _lineage(store: Store, example: Example) -> list[Example]:
    chain, seen, parent_id = [], {example.id}, example.parent_id
    while parent_id and parent_id not in seen and len(chain) < 50:
        parent = store.get(parent_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.id)
        parent_id = parent.parent_id
    return chain[::-1]


def _example_html(store: Store, e: Example, scores: list[Any], config: ReportConfig) -> str:
    def step(x: Example) -> str:
        op = f" ({_e(x.operation)})" if x.operation else ""
        return f"<code>{_e(x.id[:10])}</code> {_e(x.source)}{op} r{_e(x.round)}"

    chain = _lineage(store, e)
    lineage = " → ".join([step(x) for x in chain] + [step(e)])
    parent = chain[-1] if chain else None
    shown = ", ".join(
        f"{_e(s.scorer)}/{_e(s.dimension)} {_fmt(s.value, 2)}"
        for s in scores
        if s.scorer != "stats" and s.value is not None
    )
    limit = config.text_chars
    out = [
        '<div class="ex">',
        f"<div class=meta>lineage: {lineage}; depth {_e(e.depth)}; model "
        f"{_e(e.model_version or '–')}{'; scores: ' + shown if shown else ''}</div>",
        f"<b>Instruction</b><pre>{_e(_clip(e.instruction, limit))}</pre>",
    ]
    if e.input:
        out.append(f"<b>Input</b><pre>{_e(_clip(e.input, limit))}</pre>")
    out.append(f"<b>Output</b><pre>{_e(_clip(e.output, limit))}</pre>")
    if parent is not None and parent.instruction != e.instruction:  # ReAlign keeps it
        out.append(
            f"<div class=meta>parent instruction: {_e(_clip(parent.instruction, limit // 2))}</div>"
        )
    out.append("</div>")
    return "\n".join(out)


def render_html(store: Store, data: ReportData, pngs: dict[str, Path], config: ReportConfig) -> str:
    def figure(name: str) -> str:
        encoded = base64.b64encode(pngs[name].read_bytes()).decode("ascii")
        return (
            f'<figure id="{_e(name)}"><img alt="{_e(name)} plot" '
            f'src="data:image/png;base64,{encoded}"><figcaption>{_e(_CAPTIONS[name])}'
            "</figcaption></figure>"
        )

    sections = []
    for heading, names in _SECTIONS:
        sections.append(f"<h2>{_e(heading)}</h2>")
        if heading == "Diversity":
            sections.append(_alerts_html(data))
        if heading == "Student":
            sections.append(_students_html(data))
        if heading == "Generator":
            sections.append(_generator_html(data, config))
        for name in (n for n in names if n in pngs):
            sections.append(figure(name))
            if name == "funnel":
                sections.append(_funnel_html(data, config))
    placed = {name for _, names in _SECTIONS for name in names}
    sections += [figure(name) for name in pngs if name not in placed]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>evoinstruct report: {_e(data.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>evoinstruct report: {_e(data.title)}</h1><p class=meta>made {_e(stamp)}</p>",
            "<h2>Summary</h2>",
            _summary_html(data),
            *sections,
            "<h2>Accepted examples by round (a sample, with lineage)</h2>",
            _samples_html(store, data, config),
            "</body></html>",
        ]
    )
