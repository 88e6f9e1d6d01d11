"""Does DPO on verified pairs help? Each version trained SFT-only and SFT+DPO, on the same rounds.

The loop's versions are SFT-only. For each one, this trains its SFT+DPO twin: the same
plan (the same training examples, so the same verified pairs available), SFT being the
version itself, then the DPO stage exactly as `trainer.objective = "sft+dpo"` runs it
(`trainer.preference.train_dpo`: the version's adapter as reference, the SFT term on the
chosen answers). Both answer the project's held-out verifiable suite, and the twin is
compared with its SFT version on the same prompts (paired bootstrap interval, McNemar),
and both with the base model. The loop itself is untouched: later rounds learned from
the SFT versions, so each pair of variants shares everything but the DPO stage.

It takes the project an earlier run left (`--project`, e.g. an arm of bench/evolution.py
run after preference pairs were stored), or runs `--rounds` of the real-model loop
(SmolLM2-135M-Instruct, offline) into `--out` first. It prints, per version, both
accuracies with 95% intervals, the paired difference, the DPO stage's figures (pairs,
reward margin and accuracy), and writes `preference.json` and `preference.png` in --out.
Twins already trained (and suite results already stored) are reused.

Run: .venv/bin/python bench/preference.py --rounds 2 [--evolve 16 --suite 40 --steps 20]
     .venv/bin/python bench/preference.py --project bench/out/evolution/responder
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRIC = "prompt_strict"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def answered(label: str, every_s: float = 30.0) -> Callable[[int, int], None]:
    """A model's suite answers so far, a line every `every_s`: 720 answers take minutes."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        if done == total or time.monotonic() - last[0] >= every_s:
            say(f"suite: {label} {done}/{total}")
            last[0] = time.monotonic()

    return report


# --- the loop's rounds (only with --rounds) ----------------------------------------------
def run_rounds(args: argparse.Namespace) -> Path:
    """The real-model loop for --rounds more rounds in --out/loop (made on first use)."""
    from evoinstruct.cli.progress import quiet_libraries
    from evoinstruct.cli.real_demo import RealSettings, prepare_real_project
    from evoinstruct.graph.daemon.loop import DaemonOptions
    from evoinstruct.graph.daemon.runner import run_daemon
    from evoinstruct.graph.project import Project
    from evoinstruct.trainer.suite import ensure_suite

    quiet_libraries()
    root = Path(args.out) / "loop"
    if (root / "evoinstruct.toml").is_file():
        project = Project(root).require()
    else:
        settings = RealSettings(
            evolve=args.evolve,
            samples=args.samples,
            steps=args.steps,
            min_new=args.min_new,
            suite=args.suite,
            pick="shortest",
            answer_tokens=args.answer_tokens,
            seed_tasks=args.seed_tasks,
            student_serves=("generator", "responder"),
        )
        project = prepare_real_project(root, settings, force=True)
    config = project.load_config()
    with project.open_store() as store:
        # Before any round: the suite's prompts stay out of every training set.
        suite = ensure_suite(store, config.trainer.suite).suite
    say(f"loop project {root}, suite of {len(suite.items)} prompts ({suite.hash[:12]})")

    def progress(kind: str, event: dict[str, Any]) -> None:
        if kind == "event" and event.get("final"):
            brief = {k: event[k] for k in ("done", "total", "accepted") if k in event}
            say(f"round {event.get('round')} {event.get('stage')}: {json.dumps(brief)}")
        elif kind == "note":
            say(event["text"])

    for _ in range(args.rounds):
        asyncio.run(run_daemon(project, list(args.set), DaemonOptions(rounds=1), progress))
    return root


# --- the SFT+DPO twin of a version --------------------------------------------------------
def twin_config(row: dict[str, Any], args: argparse.Namespace) -> Any:
    """The version's own trainer config, with the DPO stage's settings."""
    from evoinstruct.trainer.config import TrainerConfig

    stored = {k: v for k, v in row["config"].items() if k in TrainerConfig.model_fields}
    dpo = {
        **stored.get("dpo", {}),
        "beta": args.beta,
        "sft_weight": args.sft_weight,
        "max_steps": args.dpo_steps,
        "min_pairs": args.min_pairs,
        "pairs_per_prompt": args.pairs_per_prompt,
    }
    if args.dpo_lr:
        dpo["learning_rate"] = args.dpo_lr
    return TrainerConfig.model_validate({**stored, "objective": "sft+dpo", "dpo": dpo})


def train_twin(
    store: Any, row: dict[str, Any], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """The version's SFT+DPO twin in out/<version>+dpo (trained once; reused after)."""
    from transformers import AutoTokenizer

    from evoinstruct.trainer.preference import SFT_DIR, plan_pairs, skipped, train_dpo
    from evoinstruct.trainer.progress import StepSay

    version = row["version"]
    label = f"{version}+dpo"
    final = out / label
    if (final / "dpo_metrics.json").is_file():
        return json.loads((final / "dpo_metrics.json").read_text())
    cfg = twin_config(row, args)
    trained = store.get_many(store.training_manifest(version, role="train"))
    pairs = plan_pairs(store, trained, cfg.dpo)
    if len(pairs) < cfg.dpo.min_pairs:
        return skipped(
            f"{len(pairs)} pairs, fewer than --min-pairs {cfg.dpo.min_pairs}", len(pairs)
        )
    work = out / f".{label}.partial"
    if not (work / SFT_DIR).is_dir():
        # The stage starts from the SFT result in the run's folder: here, the version itself.
        work.mkdir(parents=True, exist_ok=True)
        shutil.copytree(row["path"], work / f"{SFT_DIR}.tmp", dirs_exist_ok=True)
        os.replace(work / f"{SFT_DIR}.tmp", work / SFT_DIR)
    say(f"{label}: DPO on {len(pairs)} pairs of {len(trained)} training examples")
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    steps = StepSay(say, version)  # its lines read "v1 dpo: step 3/20, ..."
    trainer, metrics = train_dpo(cfg, store, pairs, work, tokenizer, [steps])
    tmp = out / f".{label}.out"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.config.use_cache = True
    trainer.save_model(str(tmp))
    metrics = {k: v for k, v in metrics.items() if k != "log_history"}
    (tmp / "dpo_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    os.replace(tmp, final)
    shutil.rmtree(work)
    return metrics


# --- scoring ----------------------------------------------------------------------------
async def score(project: Any, twins: dict[str, Path]) -> dict[str, Any]:
    """Suite results of the base model, every version and every twin (stored ones reused)."""
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.trainer.promote import hand_off
    from evoinstruct.trainer.suite import load_suite
    from evoinstruct.trainer.targets import evaluate_target
    from evoinstruct.trainer.verifiable import run_suite

    config = project.load_config()
    deps = deps_for_project(project, config)
    results: dict[str, Any] = {}
    try:
        suite = load_suite(deps.store)
        if suite is None:
            raise SystemExit("the project has no held-out suite: run rounds with --rounds first")
        results["base"] = await evaluate_target(
            deps.store, deps.models, suite, config.trainer, "base", progress=answered("base")
        )
        for row in deps.store.model_versions():
            version = row["version"]
            say(f"suite: {version}")
            results[version] = await evaluate_target(
                deps.store, deps.models, suite, config.trainer, version, progress=answered(version)
            )
            path = twins.get(version)
            if path is None:
                continue
            say(f"suite: {version}+dpo")
            # Cached: a run stopped mid-suite keeps the answers it made for the next one.
            student = deps.models.fresh(deps.models.roles.student, cached=True)
            try:
                await hand_off(student, {"version": f"{version}+dpo", "path": str(path)})
                results[f"{version}+dpo"] = await run_suite(
                    deps.store,
                    suite,
                    student,
                    config.trainer.suite,
                    label=f"{version}+dpo",
                    adapter_path=str(path),
                    confidence=config.trainer.gate.confidence,
                    progress=answered(f"{version}+dpo"),
                )
            finally:
                await student.aclose()
    finally:
        await deps.models.aclose()
        deps.store.close()
    return results


def rows_of(
    store_rows: list[dict[str, Any]], results: dict[str, Any], dpo: dict[str, Any]
) -> list[dict[str, Any]]:
    from evoinstruct.trainer.verifiable import compare

    base = results["base"]
    rows = []
    for row in store_rows:
        version = row["version"]
        sft = results[version]
        entry: dict[str, Any] = {
            "version": version,
            "promoted": row["promoted"],
            "sft": sft.metrics["accuracy"],
            "sft_vs_base": compare(sft, base, METRIC).to_dict(),
            "dpo_stage": dpo.get(version),
        }
        twin = results.get(f"{version}+dpo")
        if twin is not None:
            entry["dpo"] = twin.metrics["accuracy"]
            entry["dpo_vs_sft"] = compare(twin, sft, METRIC).to_dict()
            entry["dpo_vs_sft_instruction"] = compare(twin, sft, "instruction_strict").to_dict()
            entry["dpo_vs_base"] = compare(twin, base, METRIC).to_dict()
        rows.append(entry)
    return rows


def pct(found: dict[str, Any]) -> str:
    return f"{100 * found['value']:.1f}% [{100 * found['low']:.1f}, {100 * found['high']:.1f}]"


def paired(found: dict[str, Any]) -> str:
    return (
        f"{100 * found['diff']:+.1f} points [{100 * found['low']:+.1f}, {100 * found['high']:+.1f}], "
        f"p={found['p_value']:.3g}"
    )


def plot(rows: list[dict[str, Any]], base: dict[str, Any], out: Path) -> Path:
    """Left, each variant's accuracy with its own interval; right, what the comparison rests
    on: the paired difference SFT+DPO minus SFT per version, prompt- and instruction-level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, paired) = plt.subplots(
        1, 2, figsize=(11, 4.5), dpi=110, gridspec_kw={"width_ratios": [3, 2]}
    )
    base_acc = base[METRIC]
    ax.axhspan(100 * base_acc["low"], 100 * base_acc["high"], color="#999999", alpha=0.15)
    ax.axhline(
        100 * base_acc["value"], color="#666666", linestyle=":", label="base model (95% CI band)"
    )
    for key, label, color, shift in (
        ("sft", "SFT only", "#1f6f8b", -0.08),
        ("dpo", "SFT + DPO (same plan)", "#b5651d", 0.08),
    ):
        points = [(i, r[key][METRIC]) for i, r in enumerate(rows) if key in r]
        if points:
            _errorbars(ax, [(i + shift, p) for i, p in points], color, label, "-o")
    versions = [r["version"] for r in rows]
    for axis in (ax, paired):
        axis.set_xticks(range(len(rows)), versions)
        axis.set_xlim(-0.5, len(rows) - 0.5)
        axis.grid(alpha=0.3)
    ax.set_xlabel("student version (the loop's SFT versions, and each one's DPO twin)")
    paired.set_xlabel("student version")
    ax.set_ylabel("held-out suite, prompt-level strict (%)")
    ax.set_title("each variant, 95% intervals", fontsize=10)
    ax.legend(fontsize=8)
    paired.axhline(0, color="#666666", linewidth=1)
    for key, label, marker, shift in (
        ("dpo_vs_sft", "prompt-level strict", "o", -0.06),
        ("dpo_vs_sft_instruction", "instruction-level strict", "s", 0.06),
    ):
        points = [(i + shift, r[key]) for i, r in enumerate(rows) if key in r]
        if points:
            found = [
                (x, {"value": d["diff"], "low": d["low"], "high": d["high"]}) for x, d in points
            ]
            _errorbars(paired, found, "#b5651d", label, marker)
    paired.set_ylabel("SFT+DPO minus SFT, paired (points)")
    paired.set_title("the comparison: paired difference, 95% bootstrap CI", fontsize=10)
    paired.legend(fontsize=8)
    fig.suptitle("SFT-only vs SFT+DPO on verified pairs, same rounds, same prompts")
    fig.tight_layout()
    path = out / "preference.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _errorbars(
    ax: Any, points: list[tuple[float, dict[str, float]]], color: str, label: str, fmt: str
) -> None:
    ax.errorbar(
        [x for x, _ in points],
        [100 * p["value"] for _, p in points],
        yerr=[
            [100 * (p["value"] - p["low"]) for _, p in points],
            [100 * (p["high"] - p["value"]) for _, p in points],
        ],
        fmt=fmt,
        capsize=3,
        color=color,
        label=label,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", help="a project an earlier run left (else --rounds makes one)")
    parser.add_argument(
        "--rounds", type=int, default=0, help="loop rounds to run first (--out/loop)"
    )
    parser.add_argument("--evolve", type=int, default=16, help="evolutions per round")
    parser.add_argument("--samples", type=int, default=4, help="answers drawn per constrained task")
    parser.add_argument("--steps", type=int, default=30, help="SFT steps per version")
    parser.add_argument("--min-new", type=int, default=10, help="new examples a version waits for")
    parser.add_argument("--suite", type=int, default=40, help="held-out English suite prompts")
    parser.add_argument("--answer-tokens", type=int, default=320, help="token limit per answer")
    parser.add_argument(
        "--seed-tasks", type=int, default=None, help="packaged task prompts seeded (unset: all)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the loop's rounds (repeatable), e.g. loop.generate_calls=0",
    )
    parser.add_argument("--beta", type=float, default=0.1, help="DPO's beta")
    parser.add_argument("--sft-weight", type=float, default=1.0, help="SFT term on chosen answers")
    parser.add_argument("--dpo-steps", type=int, default=20, help="DPO steps per twin")
    parser.add_argument(
        "--dpo-lr", type=float, default=None, help="DPO learning rate (unset: SFT's / 10)"
    )
    parser.add_argument("--min-pairs", type=int, default=8, help="fewer pairs: no twin")
    parser.add_argument("--pairs-per-prompt", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "preference"))
    args = parser.parse_args()
    if not args.project and not args.rounds:
        parser.error("give --project DIR, or --rounds N to run the loop first")
    from evoinstruct.models.threads import sleep_idle_threads

    sleep_idle_threads()  # as the product runs: idle OpenMP threads sleep
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from evoinstruct.graph.project import Project

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    root = Path(args.project) if args.project else run_rounds(args)
    project = Project(root).require()
    twins_dir = out / "twins" / root.name
    twins_dir.mkdir(parents=True, exist_ok=True)
    dpo: dict[str, Any] = {}
    twins: dict[str, Path] = {}
    with project.open_store() as store:
        versions = store.model_versions()
        say(
            f"{len(versions)} versions, {store.count_preference_pairs()} preference pairs in the pool"
        )
        for row in versions:
            dpo[row["version"]] = train_twin(store, row, args, twins_dir)
            if (twins_dir / f"{row['version']}+dpo").is_dir():
                twins[row["version"]] = twins_dir / f"{row['version']}+dpo"
    results = asyncio.run(score(project, twins))
    rows = rows_of(versions, results, dpo)
    base = results["base"].metrics["accuracy"]
    report = {
        "project": str(root),
        "seconds": time.monotonic() - started,
        "base": base,
        "versions": rows,
    }
    (out / "preference.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nbase model: {pct(base[METRIC])}  ({METRIC}, {len(results['base'].outcomes)} prompts)")
    for row in rows:
        print(
            f"\n{row['version']}{' (promoted)' if row['promoted'] else ''}: SFT {pct(row['sft'][METRIC])}, vs base {paired(row['sft_vs_base'])}"
        )
        stage = row["dpo_stage"] or {}
        if "dpo" not in row:
            print(f"  no DPO twin: {stage.get('skipped', 'not trained')}")
            continue
        margins = (stage.get("rewards") or {}).get("rewards/margins") or {}
        accuracies = (stage.get("rewards") or {}).get("rewards/accuracies") or {}
        print(
            f"  SFT+DPO {pct(row['dpo'][METRIC])}: vs SFT {paired(row['dpo_vs_sft'])}; "
            f"instruction-level vs SFT {paired(row['dpo_vs_sft_instruction'])}; vs base {paired(row['dpo_vs_base'])}"
        )
        print(
            f"  DPO stage: {stage.get('pairs')} pairs on {stage.get('prompts')} prompts, "
            f"{stage.get('global_step')} steps, reward margin {margins.get('first')} -> {margins.get('last')}, "
            f"reward accuracy {accuracies.get('first')} -> {accuracies.get('last')}"
        )
    print(f"\nplot: {plot(rows, base, out)}; {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
