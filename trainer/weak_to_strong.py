"""Weak-to-strong supervision (Burns et al. 2023): a weak model's labels train the strong student.

One experiment, named `w2s-K`, runs in four steps, each restartable:

1. **plan** — a seeded sample of the pool's *verified* prompts: accepted examples with
   verifiable constraints whose stored answer passes every one (strictly), in the roles
   the trainer may train on (no seed, held-out or suite-overlapping example), unused by
   earlier experiments. The plan is stored once (`store.start_experiment`); a restart
   continues it.
2. **weak labels** — the weak model (`roles.weak`) answers each prompt once, asked as the
   responder asks; the answers go, batch by batch, to
   `models/weak_to_strong/w2s-K/labels.jsonl`. They are never checked: a weak supervisor's
   labels are what it says, right or wrong.
3. **two students**, same base (`trainer.base_model`, never a promoted version), same
   settings, same prompts: `strong_on_weak` trains on the weak labels, `ceiling` on the
   pool's verified answers to the very prompts the weak model labelled. Each trains in
   `.ARM.partial/` (Trainer checkpoints; a restart resumes) and becomes `ARM/` (a peft
   adapter, `metrics.json`, `manifest.json`) in one rename. The loop runs this step as
   `python -m evoinstruct.trainer weak-to-strong` (under `accelerate launch` when
   `[trainer.launch]` asks), the bench in process.
4. **the suite** — the weak model, the untuned strong model and both students answer the
   held-out suite (`run_suite`: stored, reused); `trainer.pgr` gives PGR with a joint
   bootstrap interval, and the result is stored (`store.finish_experiment`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoinstruct.agents.constraints import check_all
from evoinstruct.agents.responder import TEMPLATE, build_messages
from evoinstruct.agents.scoring.verify import constraints_of
from evoinstruct.models.base import ChatRequest, Failure
from evoinstruct.store.errors import ConfigError, EvoError, InputError
from evoinstruct.store.records import Example
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.weak_to_strong_config import KIND, WeakToStrongConfig

if TYPE_CHECKING:
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.store import Store
    from evoinstruct.trainer.suite import Suite
    from evoinstruct.trainer.verifiable import SuiteResult

ARMS: tuple[str, ...] = ("strong_on_weak", "ceiling")
LABELS = "labels.jsonl"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
# What each student trains on, as its manifest says.
SOURCES = {
    "strong_on_weak": "the weak model's answers, unverified",
    "ceiling": "the pool's verified answers to the same prompts",
}
Progress = Callable[[str, int, int], None]  # stage, done, total
# Paired comparisons kept with the result: the gap PGR divides by, and what each step gave.
PAIRS: tuple[tuple[str, str], ...] = (
    ("strong_base", "weak"),
    ("ceiling", "weak"),
    ("strong_on_weak", "weak"),
    ("strong_on_weak", "strong_base"),
)


def experiments_dir(project_root: str | Path) -> Path:
    return Path(project_root) / "models" / "weak_to_strong"


# --- which prompts ------------------------------------------------------------------------
def verified(example: Example) -> bool:
    """Whether the example has constraints and its stored answer passes every one strictly."""
    try:
        constraints = constraints_of(example)
    except ValueError:
        return False
    if not constraints or not (example.output or "").strip():
        return False
    return all(result.passed for result in check_all(constraints, example.output or ""))


def eligible_prompts(store: Store, cfg: TrainerConfig) -> list[Example]:
    """Verified examples in the trainer's own roles (`select_mix` from the base: no seed,
    held-out or suite-overlapping example), in pool order."""
    from evoinstruct.trainer.data import select_mix

    everything = cfg.model_copy(
        update={"seed_share": 0.0, "replay_share": 0.0, "max_new_examples": None}
    )
    mix = select_mix(store, everything, random.Random(cfg.seed), parent=None)
    return [e for e in mix.new if verified(e)]


def used_prompts(store: Store) -> set[str]:
    return {i for row in store.experiments(KIND) for i in row["plan"].get("prompts", [])}


def unused_prompts(store: Store, cfg: TrainerConfig) -> list[Example]:
    used = used_prompts(store)
    return [e for e in eligible_prompts(store, cfg) if e.id not in used]


def weak_to_strong_due(
    store: Store, cfg: TrainerConfig, w2s: WeakToStrongConfig, round_number: int
) -> tuple[bool, str]:
    """The loop's schedule in this mode: every `train_every` rounds, once `min_prompts`
    unused verified prompts wait (or an experiment is unfinished)."""
    if round_number % cfg.train_every != 0:
        return False, f"round {round_number} is not a multiple of train_every={cfg.train_every}"
    if unfinished(store) is not None:
        return True, "an unfinished weak-to-strong experiment"
    waiting = len(unused_prompts(store, cfg))
    if waiting < w2s.min_prompts:
        return False, (
            f"{waiting} unused verified prompts, fewer than "
            f"weak_to_strong.min_prompts={w2s.min_prompts}"
        )
    return True, f"{waiting} unused verified prompts"


# --- the plan -----------------------------------------------------------------------------
def unfinished(store: Store) -> dict[str, Any] | None:
    return next((r for r in store.experiments(KIND) if r["result"] is None), None)


def _identity(cfg: TrainerConfig, w2s: WeakToStrongConfig, weak: str) -> dict[str, Any]:
    """What a resumed experiment must share with the one it continues."""
    return {
        "trainer": cfg.identity(),
        "weak": weak,
        "weak_to_strong": w2s.model_dump(mode="json", include={"max_tokens", "temperature"}),
    }


def plan_experiment(
    store: Store,
    cfg: TrainerConfig,
    w2s: WeakToStrongConfig,
    weak: str,
    *,
    round: int | None = None,
) -> dict[str, Any]:
    """The unfinished experiment's plan, else a new one on fresh verified prompts."""
    identity = _identity(cfg, w2s, weak)
    found = unfinished(store)
    if found is not None:
        if found["plan"]["identity"] != identity:
            raise ConfigError(
                f"weak-to-strong experiment {found['name']} was started with other settings "
                "(trainer, roles.weak or weak_to_strong); restore them to finish it",
                field="weak_to_strong",
            )
        return found["plan"]
    fresh = unused_prompts(store, cfg)
    if not fresh:
        raise InputError(
            "no verified prompt for a weak-to-strong experiment: it needs accepted examples "
            "with verifiable constraints whose answers pass them, unused by earlier experiments"
        )
    rng = random.Random(f"{cfg.seed}:{KIND}:{len(store.experiments(KIND))}")
    chosen = sorted(rng.sample(range(len(fresh)), min(w2s.prompts, len(fresh))))
    name = f"w2s-{len(store.experiments(KIND)) + 1}"
    plan = {
        "name": name,
        "prompts": [fresh[i].id for i in chosen],
        "available": len(fresh),
        "weak": weak,
        "strong": cfg.base_model,
        "identity": identity,
        "config": {"trainer": cfg.model_dump(mode="json"), "weak_to_strong": w2s.model_dump()},
    }
    store.start_experiment(name, KIND, plan, round=round)
    return plan


# --- weak labels --------------------------------------------------------------------------
def read_labels(directory: Path) -> dict[str, dict[str, Any]]:
    """Labels written so far by id (a line cut by a kill is ignored and asked again)."""
    path = directory / LABELS
    labels: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return labels
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        labels[row["id"]] = row
    return labels


def _drop_torn_line(path: Path) -> None:
    """Cut a last line a kill left without its newline, so appended lines start clean."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as out:
            out.truncate(data.rfind(b"\n") + 1)


def _append_labels(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _label_request(example: Example, prompts: PromptLibrary, w2s: WeakToStrongConfig) -> Any:
    # Asked as the responder asked for the pool's answers: the two students differ only in
    # who answered.
    user = prompts.render(TEMPLATE, instruction=example.instruction, input=example.input)
    return ChatRequest(
        messages=build_messages(example.system, user),
        temperature=w2s.temperature,
        max_tokens=w2s.max_tokens,
    )


async def label_prompts(
    store: Store,
    plan: dict[str, Any],
    weak: Any,
    prompts: PromptLibrary,
    w2s: WeakToStrongConfig,
    directory: Path,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """The weak model's answer to every planned prompt, as it gave it (nothing checks it).

    Written batch by batch, so a restart asks only what is missing. A call that failed
    is recorded as such (`failed`), and that prompt leaves both students' data.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _drop_torn_line(directory / LABELS)
    labels = read_labels(directory)
    todo = [e for e in store.get_many(plan["prompts"]) if e.id not in labels]
    total = len(plan["prompts"])
    say = progress or (lambda stage, done, total: None)
    say("weak labels", len(labels), total)
    for at in range(0, len(todo), w2s.batch_size):
        batch = todo[at : at + w2s.batch_size]
        results = await weak.generate([_label_request(e, prompts, w2s) for e in batch])
        rows = []
        for example, result in zip(batch, results, strict=True):
            if isinstance(result, Failure):
                rows.append({"id": example.id, "failed": result.kind})
            else:
                rows.append(
                    {"id": example.id, "output": result.text.strip(), "truncated": result.truncated}
                )
        _append_labels(directory / LABELS, rows)
        labels.update((row["id"], row) for row in rows)
        say("weak labels", len(labels), total)
    return labels


# --- the two students' data ---------------------------------------------------------------
def labelled_prompts(
    store: Store, plan: dict[str, Any], labels: dict[str, dict[str, Any]]
) -> list[Example]:
    """The planned prompts the weak model answered, with the pool's (verified) answers.

    A prompt whose pool answer no longer passes its constraints (the pool changed since
    the plan) leaves both students' data, so the two still train on the same prompts.
    """
    answered = [i for i in plan["prompts"] if "output" in labels.get(i, {})]
    return [e for e in store.get_many(answered) if verified(e)]


def arm_examples(
    arm: str, store: Store, plan: dict[str, Any], labels: dict[str, dict[str, Any]]
) -> list[Example]:
    """What `arm` trains on: the same prompts, with the weak labels or the verified answers."""
    prompts = labelled_prompts(store, plan, labels)
    if arm == "ceiling":
        return prompts
    if arm == "strong_on_weak":
        return [dataclasses.replace(e, output=labels[e.id]["output"]) for e in prompts]
    raise ValueError(f"unknown arm {arm!r} (arms: {', '.join(ARMS)})")


# --- training the students ----------------------------------------------------------------
def _arm_metrics(trainer: Any, output: Any, stats: Any, arm: str) -> dict[str, Any]:
    runtime = output.metrics.get("train_runtime")
    return {
        "arm": arm,
        "trained_on": SOURCES[arm],
        "train_loss": output.training_loss,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_runtime_s": runtime,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokenization": stats.summary(),
        "log_history": trainer.state.log_history,
    }


def train_arm(
    cfg: TrainerConfig,
    arm: str,
    examples: Sequence[Example],
    directory: Path,
    state: Any,
    callbacks: Sequence[Any] = (),
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Train one student from the base model on `examples`; resumes a killed run, and
    returns the metrics of a finished one without training again. `stop`, once set (with
    `StopOnRequest` among the callbacks), ends it at a checkpoint, never marked finished."""
    from transformers import AutoTokenizer, PrinterCallback, Trainer, set_seed

    from evoinstruct.trainer.arguments import training_arguments
    from evoinstruct.trainer.data import Collator, build_dataset, pad_token_id
    from evoinstruct.trainer.methods import prepare_model
    from evoinstruct.trainer.train import _write_json, train_resumably

    final = directory / arm
    if (final / METRICS).is_file():
        return json.loads((final / METRICS).read_text(encoding="utf-8"))
    if not examples:
        raise InputError(f"{arm}: nothing to train on")
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    dataset, stats = build_dataset(examples, tokenizer, cfg)
    if len(dataset) == 0:
        raise InputError(f"{arm}: every example was too long for max_length {cfg.max_length}")
    work = directory / f".{arm}.partial"
    set_seed(cfg.seed)  # the same adapter initialisation for both students
    trainer = Trainer(
        model=prepare_model(cfg),  # from the base model, never a promoted version
        args=training_arguments(cfg, work / "checkpoints"),
        train_dataset=dataset,
        data_collator=Collator(pad_token_id(tokenizer)),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    output, resume = train_resumably(trainer, work / "checkpoints", stop, arm)
    metrics = _arm_metrics(trainer, output, stats, arm)
    metrics["resumed_from"] = Path(resume).name if resume else None
    out = work / "out"
    if state.is_main_process and out.exists():
        shutil.rmtree(out)
    state.wait_for_everyone()
    trainer.model.config.use_cache = True
    trainer.save_model(str(out))
    if state.is_main_process:
        _write_json(out / METRICS, metrics)
        _write_json(
            out / MANIFEST,
            {"arm": arm, "trained_on": SOURCES[arm], "prompts": [e.id for e in examples]},
        )
        os.replace(out, final)
        shutil.rmtree(work)
    state.wait_for_everyone()
    return metrics


def train_arms(
    cfg: TrainerConfig,
    project_root: str | Path,
    name: str,
    *,
    store: Store | None = None,
    callbacks: Sequence[Any] = (),
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Train both students of experiment `name` (planned and labelled); the finished ones
    are kept. Returns each arm's metrics."""
    from accelerate import PartialState

    from evoinstruct.store import open_store
    from evoinstruct.trainer.progress import begin_phase

    if not cfg.base_model:
        raise ConfigError(
            "no strong model to train: set trainer.base_model", field="trainer.base_model"
        )
    state = PartialState(cpu=cfg.device == "cpu")
    own = store is None
    store = store or open_store(Path(project_root) / "pool.db")
    try:
        row = store.experiment(name)
        if row is None or row["kind"] != KIND:
            raise InputError(f"no weak-to-strong experiment {name!r}", field="--experiment")
        if row["plan"]["identity"]["trainer"] != cfg.identity():
            raise ConfigError(
                f"{name} was planned with another trainer config; restore it to train its students",
                field="trainer",
            )
        directory = experiments_dir(project_root) / name
        labels = read_labels(directory)
        missing = [i for i in row["plan"]["prompts"] if i not in labels]
        if missing:
            raise EvoError(f"{name}: {len(missing)} prompts have no weak label yet")
        # One base for both: the strong model as configured, whatever the loop promoted.
        base = cfg.model_copy(update={"init_from": "base"})
        trained = {}
        for arm in ARMS:
            begin_phase(callbacks, arm)  # the live view and the bench say which student trains
            examples = arm_examples(arm, store, row["plan"], labels)
            trained[arm] = train_arm(base, arm, examples, directory, state, callbacks, stop)
        return trained
    finally:
        if own:
            store.close()


# --- the suite --------------------------------------------------------------------------
async def score_models(
    store: Store,
    models: Any,
    weak: Any,
    suite: Suite,
    cfg: TrainerConfig,
    name: str,
    directory: Path,
    progress: Progress | None = None,
) -> dict[str, SuiteResult]:
    """The weak model, the untuned strong model and both students on the held-out suite."""
    from evoinstruct.trainer.promote import hand_off
    from evoinstruct.trainer.targets import evaluate_target
    from evoinstruct.trainer.verifiable import run_suite

    say = progress or (lambda stage, done, total: None)

    def step(label: str) -> Callable[[int, int], None]:
        return lambda done, total: say(f"suite: {label}", done, total)

    results = {
        "weak": await run_suite(
            store, suite, weak, cfg.suite, label="weak", confidence=cfg.gate.confidence,
            progress=step("weak"),
        ),
        "strong_base": await evaluate_target(
            store, models, suite, cfg, "base", progress=step("strong base")
        ),
    }  # fmt: skip
    student = models.fresh(models.roles.student, cached=True)  # a killed run keeps its answers
    try:
        for arm in ARMS:
            path = str((directory / arm).resolve())
            await hand_off(student, {"version": f"{name}-{arm}", "path": path})
            results[arm] = await run_suite(
                store, suite, student, cfg.suite, label=f"{name}/{arm}", adapter_path=path,
                confidence=cfg.gate.confidence, progress=step(arm),
            )  # fmt: skip
    finally:
        await student.aclose()
    return results


# --- the experiment -----------------------------------------------------------------------
TrainStudents = Callable[[str], Awaitable[Any]]


async def run_weak_to_strong(
    store: Store,
    models: Any,
    prompts: PromptLibrary,
    cfg: TrainerConfig,
    w2s: WeakToStrongConfig,
    project_root: str | Path,
    *,
    train: TrainStudents,
    round: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Plan (or resume), label, train both students (`train(name)`), score all four on the
    suite and store the result; returns it."""
    from evoinstruct.trainer.pgr import recovered_on_suite
    from evoinstruct.trainer.suite import ensure_suite
    from evoinstruct.trainer.verifiable import compare

    started = time.monotonic()
    weak_name = models.roles.weak
    if weak_name is None:
        raise ConfigError("no weak model: name a [models] entry in roles.weak", field="roles.weak")
    weak = models.get(weak_name)  # a ConfigError naming models.<name> when it is not configured
    # Built first, so no planned prompt copies a suite prompt (the trainer's guard).
    suite = ensure_suite(store, cfg.suite).suite
    plan = plan_experiment(store, cfg, w2s, weak_name, round=round)
    name = plan["name"]
    directory = experiments_dir(project_root) / name
    labels = await label_prompts(store, plan, weak, prompts, w2s, directory, progress)
    await train(name)
    results = await score_models(store, models, weak, suite, cfg, name, directory, progress)
    boot = {
        "samples": cfg.suite.bootstrap_samples,
        "seed": cfg.suite.seed,
        "confidence": cfg.gate.confidence,
    }
    pgr = recovered_on_suite(results, w2s.metric, **boot)
    outputs = [row for row in labels.values() if "output" in row]
    trained = {arm: _read_json(directory / arm / METRICS) for arm in ARMS}
    result = {
        "name": name,
        "suite": results["weak"].suite,
        "metric": w2s.metric,
        "labels": {
            "prompts": len(plan["prompts"]),
            "answered": len(outputs),
            "failed": len(labels) - len(outputs),
            "truncated": sum(bool(r.get("truncated")) for r in outputs),
        },
        "trained": {
            arm: {k: m.get(k) for k in ("train_loss", "global_step", "tokens_seen")}
            | {"examples": (m.get("tokenization") or {}).get("examples")}
            for arm, m in trained.items()
        },
        "models": {
            key: {"label": r.label, "identity": r.identity, "accuracy": r.metrics["accuracy"]}
            for key, r in results.items()
        },
        "pgr": pgr,
        "paired": {
            f"{a} - {b}": compare(results[a], results[b], w2s.metric, **boot).to_dict()
            for a, b in PAIRS
        },
        "seconds": time.monotonic() - started,
    }
    store.finish_experiment(name, result)
    return result


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def train_in_process(
    cfg: TrainerConfig, project_root: str | Path, store: Store, callbacks: Sequence[Any] = ()
) -> TrainStudents:
    """`train` for `run_weak_to_strong` that trains here, in a worker thread (the bench, tests)."""
    import asyncio

    async def train(name: str) -> Any:
        return await asyncio.to_thread(
            train_arms, cfg, project_root, name, store=store, callbacks=callbacks
        )

    return train
