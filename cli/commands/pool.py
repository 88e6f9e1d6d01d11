"""The pool commands: init, seed add, status, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evoinstruct.cli.common import (
    JsonOpt,
    ProjectOpt,
    console,
    open_project,
    print_json,
)
from evoinstruct.store.seeds import FORMATS_HELP

seed_app = typer.Typer(help="Seed the pool with your own task prompts.", no_args_is_help=True)


def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the project in.")] = Path(
        "."
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing evoinstruct.toml.")] = False,
    language: Annotated[
        str | None,
        typer.Option(
            "--language",
            help="Prompt language, en or zh: set as project.language; its seeds are listed first.",
            show_default="en",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A real model as teacher and student, fetched offline (smollm2: "
            "SmolLM2-135M-Instruct), with the weak-model profile that makes it work.",
        ),
    ] = None,
) -> None:
    """Create a project: a commented evoinstruct.toml and example seeds in English and Chinese.

    Example: evoinstruct init my-project --language zh
    Example: evoinstruct init my-project --model smollm2
    """
    from evoinstruct.graph.project import example_seeds, init_project

    if model is None:
        project = init_project(directory, force=force, language=language)
    else:
        project = _init_on_real_model(directory, model, force=force, language=language)
    console.print(f"Created {project.config_path}", markup=False)
    ours, *others = example_seeds(project, language or "en")
    # The generator writes in project.language and takes its demos and parents in it only:
    # seeds of another language would sit unused (or, bilingual, grow a second pool).
    console.print(
        f"Example seeds in {project.root / 'seeds'}; add the project language's with:",
        markup=False,
    )
    # Commands print whole, never wrapped, so they can be copied.
    console.print(
        f"  evoinstruct seed add {ours} --project {project.root}", soft_wrap=True, markup=False
    )
    for other in others:
        console.print(
            f"  (for a bilingual project set project.bilingual = true and add {other} too)",
            soft_wrap=True,
            markup=False,
        )
    if model is not None:
        console.print("Then run a round (the README says how long one takes):", markup=False)
        console.print(
            f"  evoinstruct run --rounds 1 --project {project.root}", soft_wrap=True, markup=False
        )
        return
    console.print(
        "Then point [models.teacher] in evoinstruct.toml at your model server and run:",
        markup=False,
    )
    console.print(
        f"  evoinstruct models check --project {project.root}", soft_wrap=True, markup=False
    )


def _init_on_real_model(directory: Path, model: str, *, force: bool, language: str | None) -> Any:
    from evoinstruct.cli.progress import quiet_libraries
    from evoinstruct.graph.project import CONFIG_NAME, init_project
    from evoinstruct.graph.real_project import REAL_MODELS, smollm2_config
    from evoinstruct.store.errors import InputError, ProjectError

    if model not in REAL_MODELS:
        known = ", ".join(REAL_MODELS)
        raise InputError(f"unknown model {model!r}; one of: {known}", field="--model")
    if (directory / CONFIG_NAME).exists() and not force:
        # Before a fetch that may take a minute.
        raise ProjectError(
            f"{CONFIG_NAME} already exists (pass --force to overwrite, or run "
            f"`evoinstruct models fetch {model} --project {directory}` to switch it)",
            file=str(directory / CONFIG_NAME),
        )
    quiet_libraries()  # the conversion's progress bars would bury the one line that matters
    setup = smollm2_config(progress=lambda text: console.print(text, soft_wrap=True, markup=False))
    console.print(
        f"{REAL_MODELS[model]} is in {setup.model_dir}; profile: {setup.profile.name}",
        soft_wrap=True,
        markup=False,
    )
    return init_project(
        directory,
        setup.config,
        force=force,
        language=language,
        header=setup.header,
        notes=setup.notes,
    )


@seed_app.command("add")
def seed_add(
    files: Annotated[list[Path], typer.Argument(help="Seed files to import.")],
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"{FORMATS_HELP} (default: detect)."),
    ] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Import task prompts; each file is read whole before anything is written.

    Example: evoinstruct seed add seeds/seed_tasks_zh.jsonl --format selfinstruct
    """
    from evoinstruct.store.seeds import import_seeds, read_seed_file

    proj = open_project(project)
    # Read every file whole first, so one bad file writes nothing at all; then write them
    # in one transaction, from what was read (a file changed in between is not read twice).
    seed_files = [read_seed_file(file, format) for file in files]
    with proj.open_store() as store, store.transaction():
        reports = [import_seeds(store, seeds) for seeds in seed_files]
    if as_json:
        print_json([r.__dict__ for r in reports])
        return
    for r in reports:
        console.print(
            f"{r.path}: {r.format}, {r.records} records, {r.examples} examples: "
            f"{r.inserted} new, {r.duplicates} already in the pool; "
            f"{r.accepted} with an answer, {r.waiting_for_output} waiting for one"
        )


def status(project: ProjectOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Pool counts by status, source and round; the active model; the daemon.

    Example: evoinstruct status --json
    """
    from evoinstruct.cli.status import status_report

    report = status_report(open_project(project))
    if as_json:
        print_json(report)
        return
    ex = report["examples"]
    table = Table(title=f"Pool: {ex['total']} examples, {report['rounds']} rounds finished")
    table.add_column("by status")
    table.add_column("n", justify="right")
    table.add_column("by source")
    table.add_column("n", justify="right")
    statuses = list(ex["by_status"].items())
    sources = list(ex["by_source"].items())
    for i in range(max(len(statuses), len(sources))):
        s = statuses[i] if i < len(statuses) else ("", "")
        o = sources[i] if i < len(sources) else ("", "")
        table.add_row(s[0], str(s[1]), o[0], str(o[1]))
    console.print(table)
    rounds = ", ".join(f"{k}: {v}" for k, v in ex["by_round"].items())
    console.print(f"Examples by round: {rounds or 'none'}")
    console.print(f"Rejections recorded: {report['rejections']}")
    for line in _cost_lines(report["cost"]):
        console.print(line, markup=False)
    console.print(f"Active student: {report['active_model'] or 'none (the teacher generates)'}")
    daemon = report["daemon"]
    if daemon and daemon.get("running"):
        console.print(
            f"Daemon: running, pid {daemon['pid']}, round {daemon['round']}, stage {daemon['stage']}, "
            f"last heartbeat {daemon['heartbeat_at']}",
            markup=False,
            soft_wrap=True,
        )
        if daemon.get("activity"):
            from evoinstruct.cli.progress import activity_text

            # Since this daemon started, the step running now included (its tokens reach the
            # Tokens line above when the step ends).
            console.print(
                f"Daemon {activity_text(daemon['activity'])}", markup=False, soft_wrap=True
            )
    else:
        console.print("Daemon: not running")


def _cost_lines(summary: dict[str, Any]) -> list[str]:
    from evoinstruct.cli.costs import human_cost, human_tokens

    if not summary["rounds"]:
        return ["Cost: no rounds yet"]
    tokens = f"Tokens: {human_tokens(summary['tokens'])} in {summary['rounds']} rounds"
    if summary["cost"] is None:
        return [tokens, "Cost: set models.NAME.price_per_mtok_in/out to see it"]
    if summary["unpriced_tokens"]:
        tokens += f" ({human_tokens(summary['unpriced_tokens'])} without a price)"
    cost = f"Cost: {human_cost(summary['cost'])}"
    if summary["cost_per_accepted"] is not None:
        cost += f", {human_cost(summary['cost_per_accepted'])} per accepted example"
    return [tokens, cost]


def export(
    out: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (.json, .jsonl, .parquet).")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="alpaca|sharegpt|openai|parquet, or dpo: verified preference pairs (prompt/chosen/rejected).",
        ),
    ] = "alpaca",
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Statuses to include, or 'all' (default accepted)."),
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Sources to include.")
    ] = None,
    round: Annotated[
        int | None, typer.Option("--round", help="Only examples created in this round.")
    ] = None,
    min_score: Annotated[
        list[str] | None,
        typer.Option("--min-score", help="DIM=X: keep examples scoring at least X on DIM."),
    ] = None,
    with_lineage: Annotated[
        bool,
        typer.Option(
            "--with-lineage",
            help="Add id, parent, operation, round, model, scores and constraints.",
        ),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Dataset name in the card and dataset_info.json (default: the file's stem).",
        ),
    ] = None,
    no_card: Annotated[
        bool,
        typer.Option(
            "--no-card", help="Write the data file only: no README.md card, no dataset_info.json."
        ),
    ] = False,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="REPO",
            help="Also upload to this Hugging Face dataset repo (needs HF_TOKEN).",
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="With --push-to-hub: a private repo.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Export the pool for LLaMA-Factory, TRL or `datasets`, with a Hub dataset card.

    Beside the data go README.md (the card: the Hub's YAML header, provenance, filters,
    acceptance by stage) and a dataset_info.json entry for LLaMA-Factory. `--format dpo`
    writes the verified preference pairs of the selected examples instead, for TRL's
    DPOTrainer and LLaMA-Factory's preference training.
    Example: evoinstruct export --format sharegpt -o mydata/train.jsonl --min-score accuracy=4.5
    """
    from evoinstruct.store.errors import InputError
    from evoinstruct.store.export import (
        CardOptions,
        ExportFilter,
        check_hub_push,
        export_dataset,
        model_aliases,
        parse_min_score,
    )
    from evoinstruct.store.export import push_to_hub as run_push

    filt = ExportFilter(
        statuses=list(status or ["accepted"]),
        sources=list(source or []),
        round=round,
        min_scores=parse_min_score(list(min_score or [])),
    )
    if private and not push_to_hub:
        raise InputError("--private applies to --push-to-hub only", field="--private")
    proj = open_project(project)
    config = proj.load_config()
    card = None
    if not no_card:
        card = CardOptions(
            name=name if name is not None else out.stem,
            license=config.project.license,
            language=config.project.language,
            version=_version(),
        )
    if push_to_hub:
        check_hub_push(push_to_hub)  # before anything is written
    aliases = model_aliases({n: m.model_dump() for n, m in config.models.items()})
    with proj.open_store() as store:
        from evoinstruct.trainer.suite import training_guard

        # Nothing the held-out suite measures leaves the project, as nothing of it trains.
        filt.withhold = training_guard(store, config.trainer.suite).hit
        result = export_dataset(
            store, format, out, filt, with_lineage=with_lineage, card=card, aliases=aliases
        )
    what = "preference pairs" if format == "dpo" else "examples"
    console.print(f"Wrote {result.count} {what} to {out} ({format})", markup=False)
    withheld = sum(result.withheld.values())
    if withheld:
        console.print(
            f"Withheld {withheld} examples the held-out suite measures "
            "(its prompts, held-out constraint types, suite-only phrasings)",
            markup=False,
        )
    if result.card is not None and result.dataset_info is not None:
        console.print(
            f"Card: {result.card}; LLaMA-Factory: {result.dataset_info} (dataset {result.name!r})",
            markup=False,
            soft_wrap=True,
        )
    if push_to_hub:
        console.print(f"Pushing to the Hub as {push_to_hub}…", markup=False)
        url = run_push(result, push_to_hub, private=private)
        console.print(f"Pushed to {url}", markup=False, soft_wrap=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evoinstruct")
    except PackageNotFoundError:  # a source tree that was never pip-installed
        return "unknown"


# --- the daemon -------------------------------------------------------------------------
