"""`evoinstruct report [-o DIR] [--json]`: write a project's plots and HTML page, print where.

The plots and the page come from `cli.report.build.build_report`; this module only
opens the project, wires the configured embedder (if the config names one)
and prints.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from evoinstruct.cli.common import JsonOpt, ProjectOpt


@contextmanager
def _configured_embedder(config: Any, store: Any) -> Iterator[Any]:
    """`roles.embedder`'s model as a sync function, or None when the config names none.

    One event loop serves every call and the close: an async client must not
    outlive the loop it was used on.
    """
    if config.roles.embedder is None:
        yield None
        return
    from evoinstruct.models.factory import ModelSet

    models = ModelSet(config.models, config.roles, cache=store)
    loop = asyncio.new_event_loop()

    def embed(texts: Any) -> Any:
        # Built on first use, inside build_report, so a model that cannot load
        # (an EvoError) falls back to the hashed TF-IDF instead of ending the report.
        return loop.run_until_complete(models.for_role("embedder").embed(list(texts)))

    try:
        yield embed
    finally:
        loop.run_until_complete(models.aclose())
        loop.close()


def report_command(project_root: Path, out: Path | None, as_json: bool) -> int:
    """Write the report of the project at `project_root` into `out` (default `<project>/reports/`)."""
    from evoinstruct.cli.report.build import build_report
    from evoinstruct.graph.project import Project

    project = Project(Path(project_root).resolve()).require()
    config = project.load_config()
    report_config = config.report
    store = project.open_store()
    try:
        with _configured_embedder(config, store) as embedder:
            result = build_report(
                store,
                Path(out) if out is not None else project.reports_dir,
                embedder=embedder,
                config=report_config,
                title=project.root.name,
            )
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return 0
    lines = [f"Report: {result.html}", "Plots:"]
    lines += [f"  {path}" for path in result.pngs.values()]
    lines += [alert.message for alert in result.alerts]
    if not result.alerts:
        lines.append("No diversity alerts.")
    diversity = result.data.diversity if result.data is not None else None
    if diversity is not None and not diversity.rows and diversity.unmeasured:
        # "No alerts" alone would read as "diverse enough"; say nothing was measured.
        lines.append(diversity.unmeasured_note())
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def report(
    project: ProjectOpt = Path("."),
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory (default <project>/reports)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write PNG plots and one self-contained HTML page about the pool, the rounds and the students.

    Example: evoinstruct report -o /tmp/report
    """
    raise typer.Exit(report_command(project, out, as_json))
