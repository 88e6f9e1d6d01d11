"""Training under `accelerate launch`: the command the daemon builds, the example accelerate
configs, and one version trained by two CPU processes through the daemon's own path."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

import psutil
import pytest

pytest.register_assert_rewrite("tests.conftest_trainer")

import torch  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from evoinstruct.graph.round.training import (  # noqa: E402
    TrainerSteps,
    _failure_reason,
    _reported,
    _summary_of,
)
from evoinstruct.store import open_store  # noqa: E402
from evoinstruct.store.errors import ConfigError, EvoError  # noqa: E402
from evoinstruct.trainer.config import LaunchConfig, TrainerConfig  # noqa: E402
from evoinstruct.trainer.launch import trainer_command  # noqa: E402
from evoinstruct.trainer.progress import ERROR_KEY, PROGRESS_KEY  # noqa: E402
from evoinstruct.trainer.train import METRICS  # noqa: E402
from tests.conftest_trainer import fill_pool, tiny_config  # noqa: E402

pytest_plugins = ["tests.conftest_trainer"]

ACCELERATE_EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
ENTRY = ["-m", "evoinstruct.trainer", "train", "--project"]


# --- the command --------------------------------------------------------------------------
def _command(tmp_path: Path, **launch: Any) -> list[str]:
    return trainer_command("py", LaunchConfig(**launch), tmp_path, tmp_path / "cfg.json")


def _accelerate_args(command: list[str]) -> Any:
    """What `accelerate launch` makes of the command: parsed by accelerate's own parser."""
    from accelerate.commands.launch import launch_command_parser

    assert command[:4] == ["py", "-P", "-m", "accelerate.commands.launch"]
    return launch_command_parser().parse_args(command[4:])


def test_default_is_one_plain_process(tmp_path: Path) -> None:
    command = _command(tmp_path)
    assert command == ["py", "-P", *ENTRY, str(tmp_path), "--config", str(tmp_path / "cfg.json")]
    assert _command(tmp_path, processes=1) == command


def test_fresh_reaches_every_launched_process(tmp_path: Path) -> None:
    plain = trainer_command("py", LaunchConfig(), tmp_path, tmp_path / "c.json", fresh=True)
    assert plain[-1] == "--fresh"
    launched = trainer_command(
        "py", LaunchConfig(processes=2), tmp_path, tmp_path / "c.json", fresh=True
    )
    assert _accelerate_args(launched).training_script_args[-1] == "--fresh"


def test_processes_without_a_file_are_torchrun_data_parallel(tmp_path: Path) -> None:
    args = _accelerate_args(_command(tmp_path, processes=3))
    assert args.multi_gpu and args.num_processes == 3 and args.main_process_port == 0
    assert args.config_file is None and args.module
    assert [args.training_script, *args.training_script_args] == [
        "evoinstruct.trainer",
        "train",
        "--project",
        str(tmp_path),
        "--config",
        str(tmp_path / "cfg.json"),
    ]


def test_config_file_is_found_from_the_project(tmp_path: Path) -> None:
    (tmp_path / "fsdp.yaml").write_text("distributed_type: FSDP\n")
    args = _accelerate_args(_command(tmp_path, config_file="fsdp.yaml", port=29511))
    assert args.config_file == str(tmp_path / "fsdp.yaml")
    assert not args.multi_gpu and args.num_processes is None  # the file decides
    assert args.main_process_port == 29511
    with pytest.raises(ConfigError) as err:
        _command(tmp_path, config_file="missing.yaml")
    assert err.value.field == "trainer.launch.config_file"


@pytest.mark.parametrize(
    "values",
    [{"processes": 0}, {"port": 70000}, {"port": -1}, {"nodes": 2}, {"processes": "two"}],
)
def test_launch_config_rejects(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrainerConfig(launch=values)


def test_launch_is_not_part_of_a_runs_identity() -> None:
    """A killed run may resume on another number of processes."""
    one, two = TrainerConfig(), TrainerConfig(launch={"processes": 2})
    assert one.identity() == two.identity()
    assert two.model_dump()["launch"]["processes"] == 2  # but it is stored with the version


@pytest.mark.parametrize(
    ("name", "kind"),
    [("cpu_2proc.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP"), ("deepspeed_zero2.yaml", "DEEPSPEED")],
)
def test_example_accelerate_configs_load(name: str, kind: str, tmp_path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = ACCELERATE_EXAMPLES / name
    config = load_config_from_file(str(path))  # rejects keys accelerate does not know
    assert config.distributed_type == kind and config.mixed_precision == "no"
    args = _accelerate_args(_command(tmp_path, config_file=str(path)))
    assert args.config_file == str(path)
    assert name in (ACCELERATE_EXAMPLES / "README.md").read_text()


# --- what the daemon reads ------------------------------------------------------------------
def test_reported_lines_and_garbage() -> None:
    assert _reported(json.dumps({PROGRESS_KEY: {"step": 1}}), PROGRESS_KEY) == {"step": 1}
    assert _reported(json.dumps({ERROR_KEY: {"message": "x"}}), ERROR_KEY) == {"message": "x"}
    for line in ["", "not json", "[1]", '{"progress": 3}', '{"progress": {}, "version": "v1"}']:
        assert _reported(line, PROGRESS_KEY) is None, line
    assert _reported('{"progress": {"step": 1', PROGRESS_KEY) is None  # cut off


def test_summary_is_the_last_version_line() -> None:
    lines = ['{"version": "v1", "global_step": 3}', "W1130 torchrun says goodbye", "[]"]
    assert _summary_of(lines)["global_step"] == 3
    with pytest.raises(EvoError, match="without printing its summary"):
        _summary_of(["", "garbage"])


def test_failure_reason_prefers_the_first_reporting_process() -> None:
    failures = [
        {"message": "no new accepted examples", "type": "InputError", "rank": 0},
        {"message": "Connection closed by peer", "type": "RuntimeError", "rank": 1},
    ]
    stderr = b"Traceback...\nChildFailedError:\n  root cause: rank 1\n"
    assert _failure_reason(failures, stderr) == "no new accepted examples (InputError on rank 0)"
    assert _failure_reason([], stderr) == "Traceback... ChildFailedError:   root cause: rank 1"


# --- two processes, for real ------------------------------------------------------------------
class _State(TypedDict, total=False):
    summary: dict[str, Any]


async def _train_in_graph(steps: TrainerSteps) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `steps.train()` as a node of a compiled graph, as the daemon does, so its progress
    goes to the graph's stream; returns the summary and the streamed events."""
    from langgraph.graph import END, START, StateGraph

    async def train(state: _State) -> _State:
        return {"summary": await steps.train()}

    builder = StateGraph(_State)
    builder.add_node("train", train)
    builder.add_edge(START, "train")
    builder.add_edge("train", END)
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for mode, chunk in builder.compile().astream({}, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return final["summary"], events


@pytest.fixture
def quiet_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launched processes: one thread each on a shared machine, gloo on loopback only."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")


def _adapter_reloads(version_dir: Path, base: Path) -> None:
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(version_dir / "adapter_model.safetensors")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), version_dir)
    loaded = get_peft_model_state_dict(model)
    assert loaded.keys() == saved.keys() and saved
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it trained


STEPS = 3


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["1-process", "2-processes"])
async def test_one_version_trained_through_the_daemons_launch(
    processes: int, tiny_model_dir: Path, tmp_path: Path, quiet_cpu: None
) -> None:
    store = open_store(tmp_path / "pool.db")
    fill_pool(store, n_new=40)
    # Two processes meet through the example config; one is the daemon's default launch.
    launch = {"config_file": str(ACCELERATE_EXAMPLES / "cpu_2proc.yaml")} if processes > 1 else {}
    cfg = tiny_config(
        tiny_model_dir, max_steps=STEPS, batch_size=2, heldout_fraction=0.1, launch=launch
    )
    summary, events = await _train_in_graph(TrainerSteps(cfg, tmp_path))

    assert summary["version"] == "v1" and summary["global_step"] == STEPS
    assert summary["world_size"] == processes
    # Progress came from the main process alone: each step once, in order.
    assert [e["done"] for e in events if e["stage"] == "train"] == list(range(1, STEPS + 1))
    assert all(e["total"] == STEPS for e in events)
    # A step's loss is logged after its step line: the first line has none yet.
    assert all(e["loss"] is not None for e in events[1:])

    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["v1"]
    assert list(models.rglob("adapter_model.safetensors")) == [
        models / "v1" / "adapter_model.safetensors"
    ]
    assert [v["version"] for v in store.model_versions()] == ["v1"]
    metrics = json.loads((models / "v1" / METRICS).read_text())
    ran = metrics["processes"]
    assert ran["world_size"] == processes
    assert ran["backend"] == ("gloo" if processes > 1 else None)
    # Each process batched its own rows: all took part, and within less than an epoch
    # (rows read < rows in the mix) no example was read by two of them.
    manifest = json.loads((models / "v1" / "manifest.json").read_text())
    mix = len(manifest["new"]) + len(manifest["seed"]) + len(manifest["replay"])
    assert len(ran["rows_read"]) == processes and all(r >= 2 * STEPS for r in ran["rows_read"])
    assert sum(ran["rows_read"]) < mix
    assert (
        ran["distinct_examples_all"] == sum(ran["distinct_examples_read"]) == sum(ran["rows_read"])
    )
    _adapter_reloads(models / "v1", tiny_model_dir)
    store.close()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs")
async def test_failure_reason_from_launched_processes_reaches_the_daemon(
    tiny_model_dir: Path, tmp_path: Path, quiet_cpu: None
) -> None:
    """device = "auto" without GPUs leaves each launched process on its own; every one
    would write the version. They refuse, and the daemon records why."""
    store = open_store(tmp_path / "pool.db")
    fill_pool(store, n_new=8)
    cfg = tiny_config(tiny_model_dir, device="auto", launch={"processes": 2})
    with pytest.raises(EvoError) as err:
        await TrainerSteps(cfg, tmp_path).train()
    message = str(err.value)
    assert message.startswith("training failed (exit ")
    assert "2 training processes were launched but accelerate joined 1" in message
    assert "(ConfigError on rank " in message
    assert store.model_versions() == [] and not list((tmp_path / "models").glob("*v1*"))
    store.close()


@contextlib.asynccontextmanager
async def _launched_training(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Any, asyncio.Task[Any], list[psutil.Process]]]:
    """Training under a launcher with two workers, once its steps run: the store, the
    training task and the processes under this one (killed on the way out)."""
    from evoinstruct.graph.round import training

    stepped = asyncio.Event()
    monkeypatch.setattr(training, "_stream_writer", lambda: lambda event: stepped.set())
    store = open_store(tmp_path / "pool.db")
    fill_pool(store, n_new=40)
    cfg = tiny_config(tiny_model_dir, max_steps=10_000, batch_size=2, launch={"processes": 2})
    run = asyncio.create_task(TrainerSteps(cfg, tmp_path).train())
    started: list[psutil.Process] = []
    try:
        async with asyncio.timeout(120):
            await stepped.wait()  # the workers are training
        started = psutil.Process().children(recursive=True)
        assert len(started) >= 3  # the launcher and its two workers
        yield store, run, started
    finally:
        run.cancel()
        for process in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        store.close()


@pytest.mark.slow
async def test_a_cancelled_training_stops_every_launched_process(
    tiny_model_dir: Path, tmp_path: Path, quiet_cpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon cancels a node that outlives a stop's grace time; training must not go on
    behind it in the launcher or its workers."""
    async with _launched_training(tiny_model_dir, tmp_path, monkeypatch) as (store, run, started):
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        _, alive = await asyncio.to_thread(psutil.wait_procs, started, timeout=60)
        assert alive == []
        assert store.model_versions() == [] and (tmp_path / "models" / ".v1.partial").is_dir()


@pytest.mark.slow
async def test_leaving_at_once_kills_every_launched_process(
    tiny_model_dir: Path, tmp_path: Path, quiet_cpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C ends the daemon at once: it kills every trainer it started and all
    under it first (a launcher's workers run in sessions of their own): no worker trains on."""
    from evoinstruct.graph.round import training

    async with _launched_training(tiny_model_dir, tmp_path, monkeypatch) as (_, run, started):
        training.kill_running_trainers()
        _, alive = await asyncio.to_thread(psutil.wait_procs, started, timeout=30)
        assert alive == []
        with pytest.raises(EvoError):  # the killed launcher's exit is a failed training
            await run
