"""The command line that starts a training run: plain Python, or `accelerate launch`.

The daemon builds it from `trainer.launch`; whichever form it takes, every process runs
`python -m evoinstruct.trainer train`, and the main one prints what the daemon reads
(see `evoinstruct.trainer.progress`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evoinstruct.store.errors import ConfigError
from evoinstruct.trainer.config import LaunchConfig


def accelerate_config_path(launch: LaunchConfig, project: Path) -> Path | None:
    """The accelerate config file, relative paths taken from the project directory."""
    if launch.config_file is None:
        return None
    path = Path(launch.config_file).expanduser()
    path = path if path.is_absolute() else project / path
    if not path.is_file():
        raise ConfigError(
            f"accelerate config file not found: {path}", field="trainer.launch.config_file"
        )
    return path


def trainer_command(
    python: str,
    launch: LaunchConfig,
    project: Path,
    config_file: Path,
    *,
    fresh: bool = False,
    command: Sequence[str] = ("train",),
) -> list[str]:
    """argv of one training run of `project` with the trainer config in `config_file`;
    `command` is the trainer's subcommand and its own arguments (`weak-to-strong
    --experiment NAME` trains an experiment's two students)."""
    entry = [
        "evoinstruct.trainer",
        *command,
        "--project",
        str(project),
        "--config",
        str(config_file),
        *(["--fresh"] if fresh else []),
    ]
    # -P: the daemon's working directory is the project; a file there named like a library
    # (pydantic.py) must not shadow it. The launched workers get the same through
    # PYTHONSAFEPATH, which the caller sets (accelerate starts them with a bare `python -m`).
    if not launch.launched:
        return [python, "-P", "-m", *entry]
    command = [python, "-P", "-m", "accelerate.commands.launch"]
    accelerate_config = accelerate_config_path(launch, project)
    if accelerate_config is not None:
        command += ["--config_file", str(accelerate_config)]
    else:
        # Without a file the type of run must be named, else accelerate starts a single
        # process on a machine without GPUs. Its torchrun launcher serves CPUs as well: the
        # trainer joins the processes over gloo when trainer.device = "cpu".
        command.append("--multi_gpu")
    if launch.processes is not None:
        command += ["--num_processes", str(launch.processes)]
    command += ["--main_process_port", str(launch.port)]
    return [*command, "-m", *entry]
