"""`evoinstruct train | evaluate | eval | promote | rollback` and `models list`: the trainer by hand."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from evoinstruct.cli.common import (
    JsonOpt,
    ProjectOpt,
    SetOpt,
    console,
    open_project,
    print_json,
)

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.store import Store
    from evoinstruct.trainer.suite import SuiteBuild
    from evoinstruct.trainer.verifiable import SuiteResult


def train(
    project: ProjectOpt = Path("."),
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Discard a killed run instead of resuming it.")
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Optimizer steps (overrides epochs).")
    ] = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune the next student version on the pool (resumes a killed run).

    With [trainer.launch] asking for several processes (or an accelerate config file),
    training runs under `accelerate launch` as in the daemon.
    Example: evoinstruct train --set trainer.base_model=Qwen/Qwen2.5-0.5B-Instruct
    """
    proj = open_project(project)
    cfg = proj.load_config(set_ or []).trainer
    if max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": max_steps})
    if cfg.launch.launched:
        from evoinstruct.graph.round.training import TrainerSteps

        summary = asyncio.run(TrainerSteps(cfg, proj.root).train(fresh=fresh))
    else:
        from evoinstruct.trainer.train import train as run_training

        result = run_training(cfg, proj.root, fresh=fresh)
        summary = {
            "version": result.version,
            "path": str(result.path),
            "resumed_from": result.resumed_from,
            **result.metrics,
        }
    if as_json:
        print_json(summary)
    else:
        from evoinstruct.trainer.preference import describe

        console.print(
            f"Trained {summary['version']} in {summary.get('path')}: train loss "
            f"{summary.get('train_loss')}, held-out loss {summary.get('heldout_loss')}"
        )
        if line := describe(summary.get("dpo")):
            console.print(line, markup=False)


def evaluate(
    version: Annotated[str, typer.Argument(help="Version to evaluate, e.g. v2.")],
    project: ProjectOpt = Path("."),
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The promotion gate's verdict on a version: the held-out suite against the incumbent
    (when the gate uses it), held-out loss, and the pairwise judge if enabled.

    Example: evoinstruct evaluate v2
    """
    from evoinstruct.graph.round.training import TrainerSteps
    from evoinstruct.prompts.library import PromptLibrary

    proj = open_project(project)
    config = proj.load_config(set_ or [])
    steps = TrainerSteps(config.trainer, proj.root)
    prompts = PromptLibrary(config.project.language, override_dir=proj.prompts_dir)
    with proj.open_store() as store:
        evaluation = asyncio.run(
            _with_models(
                config, store, lambda models: steps.evaluate(store, version, models, prompts)
            )
        )
    metrics = evaluation.metrics()
    if as_json:
        print_json({"version": version, **metrics})
    else:
        verdict = "would be promoted" if evaluation.decision.promote else "would not be promoted"
        console.print(f"{version} {verdict}: {evaluation.decision.reason}")


async def _with_models(
    config: RunConfig, store: Store, work: Callable[[Any], Awaitable[Any]]
) -> Any:
    """Run `work(models)` with the project's models, closing them afterwards."""
    from evoinstruct.models.factory import ModelSet

    models = ModelSet(config.models, config.roles, cache=store)
    try:
        return await work(models)
    finally:
        await models.aclose()


def eval_suite(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A trained version (v2), base (the untuned student) or teacher; "
            "default: the active generator.",
            show_default=False,
        ),
    ] = None,
    project: ProjectOpt = Path("."),
    ifeval: Annotated[
        list[Path] | None,
        typer.Option(
            "--ifeval",
            help="Add the rows of an IFEval-format JSONL file to the suite (repeatable); "
            "rows that cannot be scored are skipped and named with the reason.",
        ),
    ] = None,
    only: Annotated[
        bool,
        typer.Option(
            "--only",
            help="Score the --ifeval file(s) alone, as a suite of their own (stored and "
            "reused; never the gate's), without the packaged tasks.",
        ),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option("--rebuild", help="Draw the suite's task prompts again (a new suite)."),
    ] = False,
    rerun: Annotated[
        bool,
        typer.Option("--rerun", help="Answer again even if this model's result is stored."),
    ] = False,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a model on the held-out verifiable suite: IFEval's four accuracies with 95%
    bootstrap intervals, per source and per constraint type; the result is stored.

    The suite is built on first use from task prompts the pool never trains on.
    Example: evoinstruct eval base --ifeval ifeval_input_data.jsonl [--only]
    """
    from evoinstruct.store.errors import InputError
    from evoinstruct.trainer.suite import ensure_suite, ifeval_suite
    from evoinstruct.trainer.targets import evaluate_target

    if only and rebuild:
        raise InputError("--only scores IFEval files alone; --rebuild redraws the project's tasks")
    proj = open_project(project)
    config = proj.load_config(set_ or [])
    cfg = config.trainer
    with proj.open_store() as store:
        if only:
            build = ifeval_suite(store, cfg.suite, ifeval or [])
        else:
            build = ensure_suite(store, cfg.suite, ifeval_files=ifeval or [], rebuild=rebuild)
        if not as_json:
            console.print(_suite_line(build))
        with _progress(not as_json) as progress:
            result = asyncio.run(
                _with_models(
                    config,
                    store,
                    lambda models: evaluate_target(
                        store, models, build.suite, cfg, target, reuse=not rerun, progress=progress
                    ),
                )
            )
        others = [
            r
            for r in store.eval_results(build.suite.hash, with_items=True)
            if r["identity"] != result.identity
        ]
    power = _power(cfg, result, others)
    if as_json:
        print_json(
            {
                "suite": {
                    "hash": build.suite.hash,
                    "prompts": len(build.suite),
                    "counts": build.suite.counts(),
                    "parts": build.suite.part_counts(),
                    "created": build.created,
                    "added": build.added,
                    "skipped": build.skipped,
                    "skipped_rows": [r.to_dict() for r in build.skipped_rows],
                    "only": only,
                },
                "result": result.to_dict(),
                "power": power,
                "others": [
                    {"label": r["label"], "version": r["version"], **r["metrics"]["accuracy"]}
                    for r in others
                ],
            }
        )
        return
    _print_result(result, others)
    from evoinstruct.trainer.evaluate import part_label, power_text

    console.print(
        f"The gate decides on {part_label(tuple(power['parts']))}: {power_text(power)}, "
        f"at {cfg.gate.confidence:.0%} confidence."
    )


def _power(cfg: Any, result: SuiteResult, others: list[dict[str, Any]]) -> dict[str, Any]:
    """The gate's power on this suite, at the discordance against the base model's stored
    result when there is one (else the assumed one)."""
    from evoinstruct.trainer.evaluate import suite_power
    from evoinstruct.trainer.verifiable import result_from_row

    base = next((r for r in others if r["label"] == "base"), None)
    reference = result_from_row(base) if base is not None and result.label != "base" else None
    return suite_power(cfg, result, reference)


def _suite_line(build: SuiteBuild) -> str:
    suite = build.suite
    parts = ", ".join(f"{k} {v}" for k, v in suite.counts().items())
    state = "built" if build.created else "stored"
    line = f"suite {suite.short} ({state}): {len(suite)} prompts ({parts})"
    from evoinstruct.trainer.evaluate import part_label

    split = ", ".join(f"{part_label((k,))} {v}" for k, v in suite.part_counts().items())
    line += f"; parts: {split}"
    if build.added:
        line += f"; {build.added} added"
    if build.skipped:
        line += "; skipped " + ", ".join(f"{k} {v}" for k, v in sorted(build.skipped.items()))
    for row in build.skipped_rows:
        at = f" ({row.instruction_id})" if row.instruction_id else ""
        line += f"\n  skipped {row.source} key {row.key}{at}: {row.reason}"
    return line


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on a terminal; nothing when output is piped or JSON."""
    if not (enabled and sys.stdout.isatty()):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "answering", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("answering", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _interval(found: dict[str, float] | None) -> tuple[str, str]:
    from evoinstruct.trainer.verifiable import percent

    if not found:
        return "-", "-"
    return percent(found["value"]), f"{percent(found['low'])} .. {percent(found['high'])}"


def _print_result(result: SuiteResult, others: list[dict[str, Any]]) -> None:
    from evoinstruct.trainer.config import part_order
    from evoinstruct.trainer.evaluate import part_label
    from evoinstruct.trainer.verifiable import percent

    m = result.metrics
    confidence = m["bootstrap"]["confidence"]
    how = "stored result" if result.cached else f"{result.seconds:.0f} s"
    console.print(
        f"{result.label}: {m['answered']} of {m['n']} prompts answered "
        f"({m['failed']} failed, {m['truncated']} truncated; {how})"
    )
    table = Table(title=f"{result.label} on suite {result.suite[:12]}")
    for column in ("accuracy", "value", f"{confidence:.0%} interval"):
        table.add_column(column)
    for name in ("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose"):
        table.add_row(name.replace("_", "-level ", 1), *_interval(m["accuracy"].get(name)))
    console.print(table)
    parts = Table(title="by part of the suite (the gate decides on the held-out parts)")
    for column in ("part", "prompts", "prompt strict", f"{confidence:.0%} interval"):
        parts.add_column(column)
    for column in ("instruction strict", f"{confidence:.0%} interval", "prompt loose"):
        parts.add_column(column)
    for name, entry in sorted(m.get("by_part", {}).items(), key=lambda kv: part_order(kv[0])):
        accuracy = entry["accuracy"]
        parts.add_row(
            part_label((name,)),
            str(entry["n"]),
            *_interval(accuracy.get("prompt_strict")),
            *_interval(accuracy.get("instruction_strict")),
            _interval(accuracy.get("prompt_loose"))[0],
        )
    console.print(parts)
    sources = Table(title="prompt-level strict by source")
    for column in ("source", "prompts", "value", f"{confidence:.0%} interval"):
        sources.add_column(column)
    for name, entry in m["by_source"].items():
        sources.add_row(name, str(entry["n"]), *_interval(entry["prompt_strict"]))
    console.print(sources)
    types = Table(title="instruction-level by constraint type")
    for column in ("constraint", "n", "strict", f"strict {confidence:.0%}", "loose"):
        types.add_column(column)
    for cid, entry in m["by_type"].items():
        strict, strict_ci = _interval(entry["strict"])
        types.add_row(cid, str(entry["n"]), strict, strict_ci, _interval(entry["loose"])[0])
    console.print(types)
    if others:
        scores = ", ".join(
            f"{r['label']} {percent((r['metrics']['accuracy'].get('prompt_strict') or {}).get('value'))}"
            for r in others
        )
        console.print(f"Also on this suite (prompt-level strict): {scores}")


def promote(
    version: Annotated[str, typer.Argument(help="Version to make the generator.")],
    project: ProjectOpt = Path("."),
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "promoted by hand",
) -> None:
    """Make a trained version the next round's generator.

    Example: evoinstruct promote v2 --reason "won the pairwise comparison"
    """
    from evoinstruct.trainer.promote import promote as do_promote

    with open_project(project).open_store() as store:
        do_promote(store, version, reason)
    console.print(f"{version} is now the active student; the next round generates with it.")


def rollback(
    project: ProjectOpt = Path("."),
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "rollback by hand",
) -> None:
    """Return to the version that was active before the current one (or to the teacher).

    Example: evoinstruct rollback
    """
    from evoinstruct.trainer.promote import rollback as do_rollback

    with open_project(project).open_store() as store:
        row = do_rollback(store, reason)
    console.print(
        f"Active student: {row['version'] if row else 'none (the teacher generates again)'}"
    )


def models_list(project: ProjectOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Student versions with their metrics, which one is active, and which were promoted.

    Example: evoinstruct models list --json
    """
    from evoinstruct.trainer.promote import versions_table

    with open_project(project).open_store() as store:
        rows = versions_table(store)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No student versions yet: `evoinstruct train` makes the first.")
        return
    from rich import box

    def number(value: object, digits: int = 3) -> str:
        # Losses arrive with 15 digits; three decimals tell versions apart.
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else ""

    # The figures that compare versions, within 80 columns; the gate's reason, the path
    # and the full precision are in --json.
    table = Table(
        title="student versions", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True
    )
    for column in ("version", "state", "method", "round", "train", "held-out", "baseline"):
        table.add_column(column, justify="right" if column == "round" else "left")
    table.add_column("win", justify="right")
    table.add_column("created")
    for row in rows:
        state = "active" if row.get("active") else "promoted" if row.get("promoted") else ""
        table.add_row(
            str(row.get("version") or ""),
            state,
            str(row.get("method") or ""),
            "" if row.get("round") is None else str(row["round"]),
            number(row.get("train_loss")),
            number(row.get("heldout_loss")),
            number(row.get("baseline_loss")),
            number(row.get("winning_score"), 2),
            str(row.get("created_at") or "")[:10],
        )
    console.print(table)
