"""`evoinstruct inspect`: rounds, checkpoints, one example's lineage, rejections, prompts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from evoinstruct.cli.common import (
    JsonOpt,
    ProjectOpt,
    SetOpt,
    console,
    open_project,
    print_json,
)
from evoinstruct.store.stages import Stage

inspect_app = typer.Typer(
    help="Look into rounds, checkpoints, lineages, rejections and the prompts stages send.",
    no_args_is_help=True,
)


@inspect_app.command("rounds")
def inspect_rounds(project: ProjectOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Counts per stage, timings, tokens and cost, and the resolved config of every round.

    Costs need prices: models.NAME.price_per_mtok_in / price_per_mtok_out.
    Example: evoinstruct inspect rounds --json
    """
    from evoinstruct.cli.costs import human_cost, human_tokens, load_prices
    from evoinstruct.cli.inspect import rounds_report
    from evoinstruct.store.starts import describe_starts

    proj = open_project(project)
    prices = load_prices(proj.config_path)
    with proj.open_store() as store:
        rows = rounds_report(store, prices)
    if as_json:
        print_json(rows)
        return
    priced = any(r["cost"] is not None for r in rows)
    table = Table(title="rounds", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    columns = ["round", "started", "took", "new", "acc.", "tokens"]
    columns += ["cost", "cost/acc"] if priced else []
    for column in [*columns, "generator"]:
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
    for r in rows:
        # A finished round shows how long it took, any other its phase (running, failed).
        took = _took(r["started_at"], r["finished_at"]) if r["phase"] == "finished" else ""
        cells = [
            str(r["round"]),
            _when(r["started_at"]),
            took or r["phase"] or "",
            human_tokens(r["created"] or 0),
            human_tokens(r["by_status"].get("accepted", 0)),
            human_tokens(r["tokens"]),
        ]
        if priced:
            cells += [human_cost(r["cost"]), human_cost(r["cost_per_accepted"])]
        table.add_row(*cells, r["model_version"] or "teacher")
    console.print(table)
    if not priced and any(r["tokens"] for r in rows):
        console.print("Costs: set models.NAME.price_per_mtok_in and price_per_mtok_out.")
    for r in rows:
        if r.get("failed"):
            console.print(f"round {r['round']} failed: {r['failed']}", markup=False, soft_wrap=True)
        for line in describe_starts(r["starts"]):
            console.print(f"round {r['round']} {line}", markup=False, soft_wrap=True)


TEXT_COLUMNS = {"started", "took", "generator", "node run", "what changed", "next", "time"}


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _when(text: str | None) -> str:
    """MM-DD HH:MM: the year and the seconds do not help tell rounds apart."""
    moment = _parse_time(text)
    return moment.strftime("%m-%d %H:%M") if moment else (text or "")


def _took(start: str | None, end: str | None) -> str:
    began, ended = _parse_time(start), _parse_time(end)
    if began is None or ended is None:
        return ""
    seconds = max(int((ended - began).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@inspect_app.command("checkpoints")
def inspect_checkpoints(
    round: Annotated[int, typer.Option("--round", "-r", min=1, help="Round number.")],
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """The LangGraph checkpoint history of one round: step, node, time, what changed.

    Example: evoinstruct inspect checkpoints --round 3
    """
    import asyncio

    from evoinstruct.cli.inspect import checkpoints_report
    from evoinstruct.store.errors import InputError

    proj = open_project(project)
    with proj.open_store() as store:
        last = store.last_round()
    if last is None or round > last["number"]:
        known = f"rounds 1-{last['number']}" if last else "no rounds yet"
        raise InputError(f"there is no round {round} ({known})", field="--round")
    rows = asyncio.run(checkpoints_report(proj, round))
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"No checkpoints for round {round} (never run, or pruned).")
        return
    day = _parse_time(rows[0]["created_at"])
    title = f"checkpoints of round {round}" + (f", {day:%Y-%m-%d}" if day else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for column in ("step", "node run", "time", "what changed", "next"):
        # A long counter name folds onto the next line rather than losing its number.
        overflow = "fold" if column == "what changed" else "ellipsis"
        table.add_column(
            column, justify="left" if column in TEXT_COLUMNS else "right", overflow=overflow
        )
    for r in rows:
        moment = _parse_time(r["created_at"])
        table.add_row(
            str(r["step"]),
            r["node"] or r["source"] or "",
            f"{moment:%H:%M:%S}" if moment else "",
            describe_delta(r["delta"]),
            ", ".join(r["next"]),
        )
    console.print(table)


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        from evoinstruct.cli.costs import human_tokens

        return human_tokens(value) if value >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return _short(value, 40)


def describe_delta(delta: dict[str, Any]) -> str:
    """A step's changes, one line per state key: a stage's new counts, appended notes."""
    lines = []
    for key, value in delta.items():
        if key == "counts" and isinstance(value, dict):
            for stage, counters in value.items():
                if isinstance(counters, dict):
                    inner = " ".join(f"{k}={_number(v)}" for k, v in counters.items())
                    lines.append(f"{stage}: {inner}")
                else:
                    lines.append(f"{stage}={_number(counters)}")
        elif key == "notes" and isinstance(value, list):
            lines.extend(f"note: {_short(note, 60)}" for note in value)
        elif isinstance(value, list):
            lines.append(f"{key}: +{len(value)}")
        else:
            lines.append(f"{key}={_number(value)}")
    return "\n".join(lines)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@inspect_app.command("example")
def inspect_example(
    example_id: Annotated[
        str, typer.Argument(help="Example id (from export --with-lineage or inspect).")
    ],
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """One example's lineage as a tree: ancestors, operations, scores, rewrites, rejected siblings.

    Example: evoinstruct inspect example 3f2a9c0d1e4b5a6f7081
    """
    from evoinstruct.cli.inspect import example_tree
    from evoinstruct.cli.lineage_view import render_tree

    with open_project(project).open_store() as store:
        tree = example_tree(store, example_id)
    if as_json:
        print_json(tree)
    else:
        console.print(render_tree(tree))


@inspect_app.command("rejections")
def inspect_rejections(
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    samples: Annotated[int, typer.Option(help="Samples shown per group.")] = 3,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Rejections grouped by stage and reason, with samples and their evidence.

    Example: evoinstruct inspect rejections --stage select
    """
    from evoinstruct.cli.inspect import rejections_report

    with open_project(project).open_store() as store:
        groups = rejections_report(store, stage=stage, reason=reason, samples=samples)
    if as_json:
        print_json(groups)
        return
    for g in groups:
        console.print(f"{g['stage']} / {g['reason']}: {g['count']}", markup=False, style="bold")
        for sample in g["samples"]:
            text = sample["text"]
            shown = _short(text, 150) if text else "(no text: the model call gave none)"
            console.print(f"  - {shown}", markup=False, highlight=False)
            if sample.get("parent"):
                console.print(f"    evolved from: {_short(sample['parent'], 100)}", markup=False)
            if sample["evidence"] not in (None, {}, ""):
                console.print(f"    evidence: {_short(sample['evidence'], 100)}", markup=False)


@inspect_app.command("prompt")
def inspect_prompt(
    stage: Annotated[
        str,
        typer.Argument(
            help="generate, instances, evolve, eliminate, respond, judge, deita, instag, "
            "classify or rewrite.",
            show_default=False,
        ),
    ],
    example: Annotated[
        str | None,
        typer.Option("--example", help="Example id (default: a fitting one from the pool)."),
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", help="en or zh (default: project.language).")
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            help="Only one: an evolve operation, a judge dimension, a deita kind, an "
            "instances template or a rewrite task type (default: all).",
        ),
    ] = None,
    project: ProjectOpt = Path("."),
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The prompt a stage would send for an example, with the project's overrides applied.

    Templates come from the project's prompts/ first, settings from evoinstruct.toml
    and --set. With an empty pool a stand-in example is used.
    Example: evoinstruct inspect prompt evolve --example 3f2a9c0d1e4b5a6f7081 --language zh
    """
    from evoinstruct.cli.prompt_preview import project_preview

    used, previews = project_preview(
        open_project(project),
        stage,
        example_id=example,
        language=language,
        variant=variant,
        overrides=list(set_ or []),
    )
    if as_json:
        shown = None if stage == Stage.GENERATE else used.id
        print_json({"example_id": shown, "requests": [p.to_dict() for p in previews]})
        return
    source = "a stand-in example" if used.id == "sample" else f"example {used.id}"
    if stage == Stage.GENERATE:
        source = "demos drawn as the next round draws them"
    for p in previews:
        r = p.request
        settings = f"temperature {r.temperature:g}, max_tokens {r.max_tokens}"
        if r.n > 1:
            settings += f", n {r.n}"
        head = f"── {p.stage}" + (f" · {p.variant}" if p.variant else "")
        console.print(f"{head} · {p.template}", markup=False, style="bold", soft_wrap=True)
        detail = f"   {source} · {settings}" + (f" · {p.note}" if p.note else "")
        console.print(detail, markup=False, soft_wrap=True)
        for message in r.messages:
            console.print(f"[{message['role']}]", markup=False, style="dim")
            # Printed as is: the prompt's own line breaks, no wrapping added.
            console.print(message["content"], markup=False, highlight=False, soft_wrap=True)
        if r.stop:
            console.print(f"[stop] {', '.join(map(repr, r.stop))}", markup=False, style="dim")
        console.print()
