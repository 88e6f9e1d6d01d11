"""A training process killed with SIGKILL registers nothing; the next run resumes it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.conftest_trainer")

from evoinstruct.store import open_store  # noqa: E402
from evoinstruct.store.errors import ConfigError, Interrupted  # noqa: E402
from evoinstruct.trainer.__main__ import load_config  # noqa: E402
from evoinstruct.trainer.arguments import last_complete_checkpoint  # noqa: E402
from evoinstruct.trainer.train import _register_orphans, train  # noqa: E402
from tests.conftest_trainer import fill_pool, tiny_config  # noqa: E402

pytest_plugins = ["tests.conftest_trainer"]

STEPS = 60


def _wait_for_checkpoint(proc: subprocess.Popen, checkpoints: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = last_complete_checkpoint(checkpoints)
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


# A training subprocess killed after a checkpoint and run again: 11 s under load.
@pytest.mark.slow
def test_killed_run_registers_nothing_and_resumes(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    store = open_store(tmp_path / "pool.db")
    fill_pool(store, n_new=24)
    cfg = tiny_config(tiny_model_dir, max_steps=STEPS, save_steps=2, batch_size=2)
    config_file = tmp_path / "trainer.json"
    config_file.write_text(cfg.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evoinstruct.trainer",
            "train",
            "--project",
            str(tmp_path),
            "--config",
            str(config_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    work = tmp_path / "models" / ".v1.partial"
    try:
        _wait_for_checkpoint(proc, work / "checkpoints")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert store.model_versions() == [] and not (tmp_path / "models" / "v1").exists()
    plan = json.loads((work / "plan.json").read_text())
    killed_at = int(Path(last_complete_checkpoint(work / "checkpoints")).name.split("-")[1])
    assert 2 <= killed_at < STEPS

    with pytest.raises(ConfigError, match="different trainer config"):
        train(cfg.model_copy(update={"lora_r": 8}), tmp_path, store=store)

    result = train(cfg, tmp_path, store=store)
    assert result.version == "v1" and result.resumed_from == f"checkpoint-{killed_at}"
    assert result.metrics["global_step"] == STEPS
    assert (
        not work.exists() and (tmp_path / "models" / "v1" / "adapter_model.safetensors").is_file()
    )
    row = store.model_version("v1")
    assert row is not None
    manifest = plan["manifest"]
    trained = manifest["new"] + manifest["seed"] + manifest["replay"]
    assert sorted(store.training_manifest("v1", role="train")) == sorted(trained)
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_checkpoints_within_a_micro_batch_and_resumes(
    tiny_model_dir: Path, tmp_path: Path, one_thread, signum: int
) -> None:
    """SIGTERM (the daemon stopping) or SIGINT (Ctrl-C reaches the process group): the trainer
    saves the step it reached, reports it stopped and exits STOPPED_EXIT; nothing is
    registered, and the next run resumes at that step."""
    from evoinstruct.trainer.progress import STOPPED_EXIT

    store = open_store(tmp_path / "pool.db")
    fill_pool(store, n_new=24)
    # No periodic checkpoint at all: the one the stop writes is what the next run resumes.
    cfg = tiny_config(
        tiny_model_dir, max_steps=400, save_steps=1000, batch_size=2, grad_accumulation=2
    )
    config_file = tmp_path / "trainer.json"
    config_file.write_text(cfg.model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "evoinstruct.trainer", "train", "--project", str(tmp_path)]
        + ["--config", str(config_file)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait on observed progress: the trainer's step lines
            step = json.loads(line).get("progress", {}).get("step", 0)
            if step >= 3:
                break
        else:
            raise AssertionError(f"no steps: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        signalled = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)  # a hang guard; the bound is checked below
        stopped_after = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == STOPPED_EXIT, err[-2000:]
    # A micro-batch of the tiny model and a save; seconds even on a loaded machine.
    assert stopped_after < 10, f"{stopped_after:.1f} s"
    stopped = [json.loads(line)["stopped"] for line in out.splitlines() if '"stopped"' in line]
    assert stopped and "resumes it at checkpoint-" in stopped[0]["message"], out
    work = tmp_path / "models" / ".v1.partial"
    saved = last_complete_checkpoint(work / "checkpoints")
    assert saved is not None and store.model_versions() == []
    stopped_at = int(Path(saved).name.split("-")[1])
    assert 3 <= stopped_at < 400

    # The next run starts at the saved step; stopped again two steps on, in process this time.
    from transformers import TrainerCallback

    from evoinstruct.trainer.progress import StopOnRequest

    stop, steps = threading.Event(), []

    class StopTwoStepsOn(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps.append(state.global_step)
            if state.global_step >= stopped_at + 2:
                stop.set()

    with pytest.raises(Interrupted, match=f"resumes it at checkpoint-{stopped_at + 2}"):
        train(
            cfg, tmp_path, store=store, callbacks=[StopTwoStepsOn(), StopOnRequest(stop)], stop=stop
        )
    assert steps == [stopped_at + 1, stopped_at + 2]
    assert store.model_versions() == []
    store.close()


def test_renamed_but_unregistered_version_is_registered(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    first = open_store(tmp_path / "a" / "pool.db")
    fill_pool(first, n_new=8)
    train(tiny_config(tiny_model_dir, max_steps=1), tmp_path / "a", store=first)
    first.close()
    # A run killed between the rename and the registration leaves exactly this state.
    other = open_store(tmp_path / "b" / "pool.db")
    (tmp_path / "b" / "models").mkdir()
    shutil.copytree(tmp_path / "a" / "models" / "v1", tmp_path / "b" / "models" / "v1")
    assert other.model_version("v1") is None
    _register_orphans(other, tmp_path / "b" / "models")
    assert other.model_version("v1")["method"] == "lora"
    assert other.training_manifest("v1", role="train")
    other.close()


def test_config_from_the_project_file(tmp_path: Path) -> None:
    (tmp_path / "evoinstruct.toml").write_text(
        '[trainer]\nmethod = "ia3"\nmax_steps = 7\n\n[trainer.gate]\nmin_loss_improvement = 0.05\n'
    )
    cfg = load_config(tmp_path, None, {"max_steps": 9, "base_model": None})
    assert (cfg.method, cfg.max_steps, cfg.gate.min_loss_improvement) == ("ia3", 9, 0.05)
    (tmp_path / "evoinstruct.toml").write_text("[trainer]\nlora_r = 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, None, {})
    assert err.value.field == "trainer.lora_r" and err.value.file.endswith("evoinstruct.toml")
