"""`evoinstruct demo`: the whole loop offline, on tiny models built on the spot.

Seeding, three rounds of generate → evolve → respond → critique → rewrite →
select, a LoRA training of the student, its evaluation and promotion, and one
more round with the student as the generator. The models have random weights:
they write nonsense, and the point is to watch every stage, the filters, the
store, the checkpoints and a trained adapter work for real in a few minutes.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from evoinstruct.graph.daemon.loop import DaemonOptions, DaemonResult, ProgressSink
from evoinstruct.graph.project import Project, init_project
from evoinstruct.store.errors import ProjectError
from evoinstruct.store.records import Example, Rejection
from evoinstruct.trainer.warmup import warm_up

DEMO_ROUNDS_BEFORE_TRAINING = 3
WARM_UP_STEPS = 60

# Settings that make a round take seconds on tiny models; every key is a normal config key.
DEMO_SETTINGS = [
    # The demo seeds both languages and grows both: bilingual by choice.
    "project.bilingual=true",
    "loop.generate_calls=2",
    "loop.evolve_per_round=4",
    "loop.batch_size=32",
    "generator.self_instruct_decoding.max_tokens=96",
    "generator.instance_decoding.max_tokens=48",
    "generator.instances_per_call=2",
    "evolver.max_tokens=64",
    "evolver.equality_max_tokens=8",
    "responder.max_tokens=64",
    "critic.judge.max_tokens=24",
    "rewriter.max_tokens=96",
    f"trainer.train_every={DEMO_ROUNDS_BEFORE_TRAINING}",
    "trainer.train_min_new=1",
    # A random tiny judge cannot write a score; let unscored answers that pass every
    # cheap filter through, so the student has new examples to train on.
    'critic.judge.on_missing="keep"',
    # Nor can it answer Equal / Not Equal: skip the evolver's LLM equality check.
    "evolver.equality_check=false",
    "trainer.max_steps=40",
    "trainer.learning_rate=0.003",
    "trainer.batch_size=8",
    "trainer.grad_accumulation=1",
    "trainer.save_steps=20",
    "trainer.heldout_fraction=0.2",
    "trainer.max_length=256",
    'trainer.device="cpu"',
]


@dataclass
class DemoResult:
    project: Project
    rounds: list[int] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    active: str | None = None
    pool: dict[str, Any] = field(default_factory=dict)
    # (stage, reason, count), most frequent first: what the filters did with the nonsense
    top_rejections: list[tuple[str, str, int]] = field(default_factory=list)
    # A few things the models wrote and what the filters said about each
    samples: list[DemoSample] = field(default_factory=list)


@dataclass
class DemoSample:
    verdict: str  # "accepted", or "rejected at <stage>: <reason>"
    instruction: str
    output: str | None
    notes: list[str] = field(default_factory=list)  # scores, or the rejection's evidence


def _samples(store: Any, n_accepted: int = 2, n_rejected: int = 1) -> list[DemoSample]:
    """What the machine wrote, shown beside what the filters made of it."""
    samples: list[DemoSample] = []
    accepted = [
        e for e in store.iter_examples(status="accepted") if e.source != "seed" and e.output
    ][-n_accepted:]
    scores = store.scores_for([e.id for e in accepted])
    for example in accepted:
        notes = [
            f"{s.scorer}/{s.dimension} = {s.value:.3g}"
            for s in scores[example.id]
            if s.value is not None
        ][:4]
        samples.append(
            DemoSample(
                f"accepted ({example.operation or example.source}, round {example.round})",
                example.instruction,
                example.output,
                notes,
            )
        )
    verdicts = [r for r in store.rejections() if Rejection.from_row(r).is_verdict]
    for row in verdicts[-n_rejected:]:
        rejected = store.get(row["example_id"]) if row.get("example_id") else None
        text = rejected.instruction if rejected else (row.get("raw_output") or "")
        samples.append(
            DemoSample(
                f"rejected at {row['stage']}: {row['reason']}",
                text,
                rejected.output if rejected else None,
                _evidence_notes(row.get("evidence")),
            )
        )
    return samples


def _evidence_notes(evidence: Any) -> list[str]:
    """A rejection's evidence as note lines: a mapping's first entries, else the value itself
    (the generate step records a finish reason, a parse problem or a count as is)."""
    if isinstance(evidence, dict):
        return [f"{k} = {v}" for k, v in evidence.items()][:4]
    return [] if evidence is None else [str(evidence)]


def _seed_texts() -> list[str]:
    """The example seeds' text: the tiny tokenizers learn their merges from it."""
    import json

    texts = []
    for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
        for line in (
            (resources.files("evoinstruct.prompts") / "seeds" / name)
            .read_text(encoding="utf-8")
            .splitlines()
        ):
            task = json.loads(line)
            texts.append(task["instruction"])
            texts.extend(f"{i['input']} {i['output']}" for i in task["instances"])
    return texts


def _seed_examples(project: Project) -> list[Example]:
    from evoinstruct.store.seeds import read_seed_file

    examples = []
    for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
        for i, draft in enumerate(read_seed_file(project.root / "seeds" / name).drafts):
            examples.append(
                Example(
                    id=f"{name}-{i}",
                    instruction=draft.instruction,
                    input=draft.input,
                    output=draft.output,
                    source="seed",
                    status="accepted",
                    language=draft.language,
                )
            )
    return examples


def _generation_examples(seeds: list[Example], config: Any, per_language: int = 1) -> list[Example]:
    """The Self-Instruct prompt on some seeds, answered with the others as its numbered list.

    The tiny teacher learns the answer's shape (a list from "1.", one task a line) so that
    its nonsense still reaches the generator's filters as tasks, not as a preamble.
    """
    import random

    from evoinstruct.agents.generator import call_prompt, task_list
    from evoinstruct.prompts.library import PromptLibrary

    rng = random.Random(0)
    n_demos = config.generator.demo_counts()[0]
    examples = []
    for language in ("en", "zh"):
        tasks = list(dict.fromkeys(s.instruction for s in seeds if s.language == language))
        library = PromptLibrary(language)
        for i in range(per_language):
            rng.shuffle(tasks)
            demos = [Example(id="demo", instruction=t) for t in tasks[:n_demos]]
            prompt, first = call_prompt(demos, library, config.generator)
            answer = task_list(tasks[n_demos:][: config.generator.call_size()], first)
            examples.append(
                Example(
                    id=f"generation-{language}-{i}",
                    instruction=prompt,
                    output=answer,
                    source="seed",
                    status="accepted",
                    language=language,
                )
            )
    return examples


def prepare_demo(
    directory: Path, *, force: bool = False, progress: ProgressSink | None = None
) -> tuple[Project, list[str]]:
    """A fresh project with two tiny local models (teacher and student base) and the demo settings."""
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.config_toml import render_toml
    from evoinstruct.graph.project import CONFIG_HEADER
    from evoinstruct.models.tiny import DEFAULT_CORPUS, build_tiny_llama

    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise ProjectError(
                "the demo directory is not empty (pass --force to start over)", file=str(directory)
            )
        shutil.rmtree(directory)
    corpus = [*DEFAULT_CORPUS, *_seed_texts()]
    teacher = build_tiny_llama(
        directory / "tiny-models" / "teacher", corpus=corpus, seed=1, hidden_size=64
    )
    student = build_tiny_llama(
        directory / "tiny-models" / "student", corpus=corpus, seed=2, hidden_size=64
    )
    project = init_project(directory)
    settings = [
        'models.teacher.backend="transformers"',
        f'models.teacher.path="{teacher}"',
        'models.teacher.device="cpu"',
        "models.teacher.batch_size=32",
        f'models.student.path="{student}"',
        'models.student.device="cpu"',
        "models.student.batch_size=32",
        f'trainer.base_model="{student}"',
        *DEMO_SETTINGS,
    ]
    config = project.load_config(settings)
    say = progress or (lambda kind, event: None)
    say(
        "note",
        {
            "text": f"built two tiny models in {directory / 'tiny-models'}; warming up the teacher ({WARM_UP_STEPS} steps on the seeds and the generation prompt)"
        },
    )
    seeds = _seed_examples(project)
    # A generation prompt with its demos is some 500 of the tiny tokenizer's tokens.
    loss = warm_up(
        teacher,
        [*seeds, *_generation_examples(seeds, config)],
        steps=WARM_UP_STEPS,
        max_length=768,
    )
    say("note", {"text": f"teacher warmed up: mean training loss {loss:.2f}"})
    # Keep the resolved settings in the project's own file, so every later command agrees.
    project.config_path.write_text(render_toml(config, CONFIG_HEADER), encoding="utf-8")
    RunConfig.model_validate(config.model_dump())
    return project, settings


async def run_demo(
    directory: Path, progress: ProgressSink | None = None, *, force: bool = False
) -> DemoResult:
    from evoinstruct.graph.daemon.runner import run_daemon
    from evoinstruct.store.seeds import add_seed_file

    project, _ = prepare_demo(directory, force=force, progress=progress)
    with project.open_store() as store:
        for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
            add_seed_file(store, project.root / "seeds" / name)
    result = DemoResult(project)
    first: DaemonResult = await run_daemon(
        project, [], DaemonOptions(rounds=DEMO_ROUNDS_BEFORE_TRAINING), progress
    )
    result.rounds.extend(first.rounds_run)
    second = await run_daemon(project, [], DaemonOptions(rounds=1), progress)
    result.rounds.extend(second.rounds_run)
    with project.open_store() as store:
        result.versions = store.model_versions()
        active = store.active_model()
        result.active = active["version"] if active else None
        result.pool = store.pool_stats()
        tally = Counter((row["stage"], row["reason"]) for row in store.rejections())
        result.samples = _samples(store)
    result.top_rejections = [(stage, reason, n) for (stage, reason), n in tally.most_common(10)]
    return result
