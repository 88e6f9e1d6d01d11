"""Training as its own process: `python -m evoinstruct.trainer train --project DIR`.

`accelerate launch -m evoinstruct.trainer train --project DIR` runs the same entry on
several GPUs (FSDP or DeepSpeed come from the accelerate config); the daemon does so
itself when `[trainer.launch]` asks for it. The trainer config is the `[trainer]` table
of the project's `evoinstruct.toml`, or a TOML/JSON file given with `--config`; flags
override single fields. The main process prints the result as one JSON line; a failing
process prints an `{"error": ...}` line, then the error on stderr, and exits with the
error's exit code.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evoinstruct.models.threads import sleep_idle_threads
from evoinstruct.store.errors import ConfigError, EvoError, Interrupted
from evoinstruct.trainer.config import TrainerConfig


def load_config(
    project: Path, config_file: Path | None, overrides: dict[str, Any]
) -> TrainerConfig:
    """Trainer config from --config or the project's [trainer] table, then the flags."""
    path = config_file or project / "evoinstruct.toml"
    data: dict[str, Any] = {}
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            loaded = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(exc), file=str(path)) from exc
        # The project file holds the whole run config; a --config file may be the table alone.
        data = loaded.get("trainer", {}) if config_file is None else loaded.get("trainer", loaded)
    elif config_file is not None:
        raise ConfigError("config file not found", file=str(path))
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"], file=str(path), field=f"trainer.{field}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evoinstruct.trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "train",
        help="train the next student version on the pool",
        description="Example: python -m evoinstruct.trainer train --project ./myproj --max-steps 200",
    )
    run.add_argument("--project", type=Path, default=Path("."), help="project directory")
    run.add_argument("--config", type=Path, default=None, help="TOML/JSON trainer config")
    run.add_argument("--base-model", default=None, help="base model directory or hub id")
    run.add_argument("--method", default=None, help="lora | full | prefix | prompt | ia3 | qlora")
    run.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    run.add_argument(
        "--fresh", action="store_true", help="discard a killed run instead of resuming"
    )
    w2s = sub.add_parser(
        "weak-to-strong",
        help="train the two students of a planned weak-to-strong experiment",
        description=(
            "Trains strong_on_weak (on the weak labels) and ceiling (on the verified answers) "
            "of an experiment the loop planned and labelled; resumes a killed run. "
            "Example: python -m evoinstruct.trainer weak-to-strong --project ./myproj "
            "--experiment w2s-1"
        ),
    )
    w2s.add_argument("--project", type=Path, default=Path("."), help="project directory")
    w2s.add_argument("--config", type=Path, default=None, help="TOML/JSON trainer config")
    w2s.add_argument("--experiment", required=True, help="the experiment's name (w2s-K)")
    w2s.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    weak = sub.add_parser(
        "weak-model",
        help="make the weak SmolLM2 of weak-to-strong experiments (once; cached)",
        description=(
            "Cuts SmolLM2-135M-Instruct to 18 of its 30 layers and heals it briefly on the full "
            "model's plain answers to packaged tasks (the recipe in "
            "evoinstruct.trainer.weak_model); prints the "
            "folder. A second call returns it at once. "
            "Example: python -m evoinstruct.trainer weak-model --threads 1"
        ),
    )
    weak.add_argument("--cache-dir", type=Path, default=None, help="model cache directory")
    weak.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return parser


def _stop_on_signals() -> threading.Event:
    """SIGTERM (the daemon stopping, or dying: see PR_SET_PDEATHSIG) and SIGINT (Ctrl-C reaches
    the whole process group) ask the run to checkpoint and stop, instead of killing it."""
    stop = threading.Event()

    def request(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: leave now
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request)
    return stop


def _rank() -> int:
    """This process's rank as the launcher set it; read without joining the others, which
    may be what failed."""
    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    sleep_idle_threads()  # before torch loads (models.threads); `accelerate launch` comes here too
    args = _parser().parse_args(argv)
    from evoinstruct.trainer.progress import (
        STOPPED_EXIT,
        StepReporter,
        StopOnRequest,
        report_failure,
        report_stopped,
    )

    stop = _stop_on_signals()
    try:
        if args.command == "weak-to-strong":
            return _weak_to_strong(args, stop)
        if args.command == "weak-model":
            return _weak_model(args)
        from evoinstruct.trainer.preference import brief
        from evoinstruct.trainer.train import train

        overrides = {
            "base_model": args.base_model,
            "method": args.method,
            "max_steps": args.max_steps,
        }
        cfg = load_config(args.project, args.config, overrides)
        callbacks = [StepReporter(), StopOnRequest(stop)]
        result = train(cfg, args.project, fresh=args.fresh, callbacks=callbacks, stop=stop)
    except Interrupted as exc:
        # Before EvoError: a stop on request is no failure, and the daemon must tell them apart.
        report_stopped(str(exc), rank=_rank())
        print(f"stopped: {exc}", file=sys.stderr)
        gc.freeze()  # the last collection would walk the model's objects: seconds on a CPU
        return STOPPED_EXIT
    except EvoError as exc:
        report_failure(str(exc), kind=type(exc).__name__, exit_code=exc.exit_code, rank=_rank())
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        # Unexpected: the traceback still goes to stderr, but under a launcher the daemon
        # would see only the launcher's summary there, so the reason goes out first.
        report_failure(str(exc), kind=type(exc).__name__, exit_code=1, rank=_rank())
        raise
    summary = {
        "version": result.version,
        "path": str(result.path),
        "resumed_from": result.resumed_from,
        "train_loss": result.metrics.get("train_loss"),
        "heldout_loss": result.metrics.get("heldout_loss"),
        "global_step": result.metrics.get("global_step"),
        "world_size": result.metrics.get("processes", {}).get("world_size"),
        "objective": result.metrics.get("objective"),
        "dpo": brief(result.metrics.get("dpo")),
    }
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(summary))
    return 0


def _weak_to_strong(args: argparse.Namespace, stop: threading.Event) -> int:
    """Train an experiment's two students; the main process prints one JSON summary line."""
    from accelerate import PartialState

    from evoinstruct.trainer.progress import StepReporter, StopOnRequest
    from evoinstruct.trainer.weak_to_strong import train_arms

    cfg = load_config(args.project, args.config, {})
    callbacks = [StepReporter(), StopOnRequest(stop)]
    arms = train_arms(cfg, args.project, args.experiment, callbacks=callbacks, stop=stop)
    summary = {
        "experiment": args.experiment,
        "arms": {
            arm: {"train_loss": m.get("train_loss"), "global_step": m.get("global_step")}
            for arm, m in arms.items()
        },
    }
    if PartialState().is_main_process:
        print(json.dumps(summary))
    return 0


def _weak_model(args: argparse.Namespace) -> int:
    from evoinstruct.trainer.weak_model import make_weak_smollm2

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    path = make_weak_smollm2(cache_dir=args.cache_dir, progress=lambda m: print(m, flush=True))
    print(json.dumps({"path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
