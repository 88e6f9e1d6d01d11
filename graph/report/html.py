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

from evoinstruct.graph.report.diversity import METRIC_LABELS, METRICS, Diversity, DiversityRow
from evoinstruct.store.records import Example

if TYPE_CHECKING:
    from evoinstruct.graph.report.config import ReportConfig
    from evoinstruct.graph.report.data import ReportData
    from evoinstruct.store import Store

_CSS = """
body{font-family:-apple-system,"Segoe UI","Helvetica Neue",Arial,"Noto Sans CJK SC",
"PingFang SC","Microsoft YaHei",sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:right;font-size:.9em}th{background:#f3f3f3}
td.l,th.l{text-align:left}.alert{background:#fde8e8;border-left:4px solid #c00;
padding:.5em 1em}.ok{background:#e8f6e8;border-left:4px solid #383;padding:.5em 1em}
figure{margin:1.5em 0}figure img{max-width:100%}figcaption{color:#555;font-size:.9em}
.ex{border:1px solid #ddd;border-radius:4px;padding:.5em 1em;margin:.7em 0}
.ex pre{white-space:pre-wrap;word-wrap:break-word;background:#fafafa;padding:.4em;
margin:.2em 0}.meta{color:#555;font-size:.85em}
"""

_CAPTIONS = {
    "pool": "Accepted examples in the pool after each round, stacked by source; the dashed "
    "line counts every stored example whatever its status.",
    "acceptance": "Left: examples made in each round by their current status, labelled with "
    "the acceptance rate (accepted / (accepted + rejected); superseded originals were "
    "replaced by their rewrite). Right: recorded rejections by stage and reason.",
    "scores": "Scores of the examples made in each round, one panel per scorer and "
    "dimension: box plots with every value as a dot; n is the number of scored examples.",
    "diversity": "Distinct-1/2 (distinct n-grams / all n-grams) of the instructions newly "
    "accepted in each round, against the seed pool subsampled to the same size (dashed), "
    "and embedding spread (mean pairwise cosine distance). Red rings mark alerts.",
    "depth": "How many evolution steps separate each accepted example from its origin.",
    "cost": "Model calls and tokens the round's stages spent, divided by the examples the "
    "round accepted.",
    "student": "Each registered student version: its held-out loss (green if promoted, red "
    "if not) against the baseline it was compared with, and its training loss.",
}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    def cells(values: Sequence[Any], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=l' if i < left else ''}>{v}</{tag}>" for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><tr>{cells([_e(h) for h in head], 'th')}</tr>{body}</table>"


def _summary_html(data: ReportData) -> str:
    pool = data.pool
    status = ", ".join(f"{_e(k)} {_e(v)}" for k, v in pool.get("by_status", {}).items())
    active = next((v["version"] for v in data.versions if v.get("active")), None)
    lines = [
        f"<p><b>{_e(pool.get('total', 0))}</b> examples ({status}); "
        f"{_e(pool.get('rounds_finished', 0))} rounds finished; "
        f"{_e(pool.get('rejections', 0))} rejections recorded; active student: "
        f"{_e(active or 'none (the teacher generates)')}.</p>"
    ]
    div = {row.round: row for row in data.diversity.rows}
    alerted = {a.round for a in data.diversity.alerts}
    rows = []
    for r in data.rounds:
        rejected = sum(n for by in r.rejections.values() for n in by.values())
        calls, tokens = sum(r.calls.values()), sum(r.tokens.values())
        d = div.get(r.number)
        rows.append(
            [
                _e(r.number),
                _e(r.phase or ("seeds" if r.number == 0 else "–")),
                _e(sum(r.by_status.values())),
                _e(r.accepted),
                _e(r.by_status.get("rejected", 0)),
                _e(r.by_status.get("superseded", 0)),
                _fmt(r.acceptance, 2),
                _e(rejected),
                _fmt(int(calls)) if calls else "–",
                _fmt(int(tokens)) if tokens else "–",
                _fmt(tokens / r.accepted, 0) if tokens and r.accepted else "–",
                _pair(d, "distinct2"),
                _pair(d, "spread"),
                "<b style='color:#c00'>ALERT</b>" if r.number in alerted else "",
            ]
        )
    head = ["round", "phase", "made", "accepted", "rejected", "superseded", "acceptance",
            "rejections", "calls", "tokens", "tokens/accepted", "distinct-2 (seeds)",
            "spread (seeds)", "diversity"]  # fmt: skip
    return "\n".join(lines) + (_table(head, rows, left=2) if rows else "<p>No rounds yet.</p>")


def _pair(row: DiversityRow | None, metric: str) -> str:
    if row is None:
        return "–"
    return f"{_fmt(row.values.get(metric))} ({_fmt(row.seed_values.get(metric))})"


def _alerts_html(div: Diversity) -> str:
    parts = [f'<div class="alert">{_e(a.message)}</div>' for a in div.alerts]
    if not parts:
        text = (
            "No diversity alerts: no measured round is less diverse than the seed pool."
            if div.rows and div.seeds_n
            else "No diversity alerts (nothing to compare yet)."
        )
        parts.append(f'<div class="ok">{_e(text)}</div>')
    seeds = ", ".join(f"{METRIC_LABELS[m]} {_fmt(div.seed_values.get(m))}" for m in METRICS)
    parts.append(f"<p class=meta>Seed pool: {_e(div.seeds_n)} instructions; {seeds}; "
                 f"embedding: {_e(div.embedding)}.</p>")  # fmt: skip
    parts += [f"<p class=meta>{_e(n)}</p>" for n in div.notes]
    return "\n".join(parts)


def _versions_html(versions: list[dict[str, Any]]) -> str:
    if not versions:
        return "<p>No student versions registered yet.</p>"
    rows = []
    for v in versions:
        m = v["metrics"] or {}
        gate = m.get("gate") if isinstance(m.get("gate"), dict) else {}
        pairwise = m.get("pairwise") if isinstance(m.get("pairwise"), dict) else {}
        rows.append(
            [
                _e(v["version"]),
                _e(v.get("method")),
                _e(v.get("round")),
                _fmt(m.get("train_loss")),
                _fmt(m.get("heldout_loss")),
                _fmt(m.get("baseline_loss")),
                _fmt(pairwise.get("winning_score")),
                "yes" if v["promoted"] else "no",
                "yes" if v.get("active") else "",
                f'<span style="text-align:left">{_e(gate.get("reason", ""))}</span>',
            ]
        )
    head = ["version", "method", "round", "train loss", "held-out loss", "baseline loss",
            "winning score", "promoted", "active", "gate"]  # fmt: skip
    return _table(head, rows)


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
    figures = []
    for name, path in pngs.items():
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        figures.append(
            f'<figure id="{_e(name)}"><img alt="{_e(name)} plot" '
            f'src="data:image/png;base64,{encoded}"><figcaption>{_e(_CAPTIONS[name])}</figcaption></figure>'
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>evoinstruct report: {_e(data.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>evoinstruct report: {_e(data.title)}</h1><p class=meta>made {_e(stamp)}</p>",
            "<h2>Summary</h2>",
            _summary_html(data),
            "<h2>Diversity alerts</h2>",
            _alerts_html(data.diversity),
            "<h2>Plots</h2>",
            *figures,
            "<h2>Student versions</h2>",
            _versions_html(data.versions),
            "<h2>Accepted examples by round (a sample, with lineage)</h2>",
            _samples_html(store, data, config),
            "</body></html>",
        ]
    )
