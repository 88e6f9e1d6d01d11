"""Projects wired to a loopback teacher, and daemons run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def configure_for_server(
    project: Path, url: str, *, api_key_env: str = "EVO_TEST_KEY", extra: str = ""
) -> None:
    """Point every role at the loopback server; small rounds so a test stays fast."""
    config = project / "evoinstruct.toml"
    config.write_text(
        f"""
[models.teacher]
backend = "openai"
base_url = "{url}"
model = "tiny"
api_key_env = "{api_key_env}"
max_concurrency = 4
timeout_s = 10
max_retries = 2

[models.student]
backend = "transformers"
path = "unused-in-this-test"

[loop]
generate_calls = 2
evolve_per_round = 4
batch_size = 8
keep_checkpoints = 2
{extra}
""",
        encoding="utf-8",
    )


def start_daemon(
    project: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """`python -m evoinstruct.graph.cli.main run ...` in its own process, as a user would start it."""
    full_env = {**os.environ, **(env or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the process exit
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evoinstruct.graph.cli.main",
            "run",
            "--project",
            str(project),
            *args,
        ],
        cwd=str(ROOT),
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
