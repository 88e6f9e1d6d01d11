"""The weak-to-strong mode: which prompts, the weak labels (never checked), what each student
trains on, a whole experiment on tiny models, the trainer's entry, the loop's branch, the
report's figure and the weak model's recipe."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any, Literal

import pytest

from evoinstruct.agents.constraints import Constraint, check_all, describe_all, dump_constraints
from evoinstruct.models.base import ChatRequest, Failure
from evoinstruct.models.config import ModelConfig, RolesConfig
from evoinstruct.models.factory import ModelSet, build_model
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store import Store, open_store
from evoinstruct.store.errors import ConfigError, InputError
from evoinstruct.store.records import ExampleDraft
from evoinstruct.trainer.config import SuiteConfig, TrainerConfig
from evoinstruct.trainer.progress import StepSay
from evoinstruct.trainer.weak_to_strong import (
    ARMS,
    arm_examples,
    experiments_dir,
    label_prompts,
    plan_experiment,
    read_labels,
    run_weak_to_strong,
    train_arms,
    train_in_process,
    verified,
    weak_to_strong_due,
)
from evoinstruct.trainer.weak_to_strong_config import WeakToStrongConfig
from tests.doubles import ScriptedModel

pytest_plugins = ["tests.conftest_trainer"]

NO_COMMA = Constraint("punctuation:no_comma")
LOWER = Constraint("change_case:english_lowercase")
PASSING = "a calm answer about the topic in lowercase words without pause marks"
FAILING = "Yes, This Answer Uses Commas, And Capitals."
TOPICS = ["tides", "bread", "bridges", "owls", "kites", "maps", "clocks", "ferns", "glass"]


def constrained(topic: str, output: str) -> ExampleDraft:
    constraints = [NO_COMMA, LOWER]
    return ExampleDraft(
        instruction=f"Write a few lines about {topic}.\n\n{describe_all(constraints, 'en')}",
        output=output,
        source="evolved",
        language="en",
        meta={"constraints": dump_constraints(constraints)},
    )


def fill(store: Store, verified_topics: int = 6) -> tuple[list[str], list[str]]:
    """Accepted constrained examples: the first ones verified, three failing; a seed and an
    unconstrained example beside them. Returns (verified ids, failing ids)."""
    good = [constrained(t, f"{PASSING} {t}") for t in TOPICS[:verified_topics]]
    bad = [constrained(t, FAILING) for t in TOPICS[verified_topics : verified_topics + 3]]
    plain = ExampleDraft(instruction="Say hello to the reader.", output="hello", source="evolved")
    seed = ExampleDraft(instruction="Write about rain.", output="rain falls", source="seed")
    store.add_candidates([seed], 0)
    good_ids = store.add_candidates(good, 1, status="accepted").ids
    bad_ids = store.add_candidates(bad, 1, status="accepted").ids
    store.add_candidates([plain], 1, status="accepted")
    return good_ids, bad_ids


def weak_double(*, fail_on: str | None = None) -> ScriptedModel:
    """A weak supervisor whose labels break both constraints (each one distinct, so the test
    can find them), a failed call on the prompt mentioning `fail_on`, and a short answer to
    anything else (the suite)."""
    numbers = count()

    def reply(request: ChatRequest) -> Any:
        text = request.messages[-1]["content"]
        if fail_on and fail_on in text:
            return Failure("timeout", "scripted")
        if text.startswith("Write a few lines about"):
            return f"Label {next(numbers)}, Unchecked, With Commas."
        return "a short suite answer"

    return ScriptedModel(default=reply, model_id="weak")


def trainer_config(tiny: Path, **overrides: Any) -> TrainerConfig:
    from tests.conftest_trainer import tiny_config

    suite = SuiteConfig(languages=["en"], tasks_per_language=2, max_tokens=4, bootstrap_samples=200)
    return tiny_config(tiny, heldout_fraction=0.0, max_length=384, suite=suite, **overrides)


def model_set(tiny: Path, weak: Any) -> ModelSet:
    served = ModelConfig(backend="transformers", path=str(tiny), device="cpu", batch_size=4)
    configs = {
        "teacher": served,
        "student": served,
        "weak": ModelConfig(backend="transformers", path="the weak double"),
    }

    def builder(cfg: ModelConfig, cache: Any = None) -> Any:
        return weak if cfg.path == "the weak double" else build_model(cfg)

    return ModelSet(configs, RolesConfig(weak="weak"), builder=builder)


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every text any constraint checks from now on."""
    texts: list[str] = []
    original = Constraint.check

    def check(self: Constraint, response: str, *, loose: bool = False) -> Any:
        texts.append(response)
        return original(self, response, loose=loose)

    monkeypatch.setattr(Constraint, "check", check)
    yield texts


# --- prompts, labels and each student's data --------------------------------------------------
def test_plan_takes_verified_prompts_only_and_never_twice(store: Store, tiny_model_dir) -> None:
    good, bad = fill(store)
    cfg, w2s = trainer_config(tiny_model_dir), WeakToStrongConfig(prompts=4, min_prompts=2)
    assert weak_to_strong_due(store, cfg, w2s, 1) == (True, "6 unused verified prompts")
    first = plan_experiment(store, cfg, w2s, "weak", round=1)
    assert first["name"] == "w2s-1" and len(first["prompts"]) == 4
    assert set(first["prompts"]) <= set(good)
    # Planned again before it finished: the same experiment continues.
    assert plan_experiment(store, cfg, w2s, "weak") == first
    with pytest.raises(ConfigError, match="other settings"):
        plan_experiment(store, cfg, w2s.model_copy(update={"max_tokens": 7}), "weak")
    store.finish_experiment("w2s-1", {"done": True})
    assert weak_to_strong_due(store, cfg, w2s, 1) == (True, "2 unused verified prompts")
    assert weak_to_strong_due(store, cfg, w2s.model_copy(update={"min_prompts": 3}), 1)[0] is False
    second = plan_experiment(store, cfg, w2s, "weak")
    assert second["name"] == "w2s-2"
    assert sorted(second["prompts"]) == sorted(set(good) - set(first["prompts"]))
    store.finish_experiment("w2s-2", {"done": True})
    with pytest.raises(InputError, match="no verified prompt"):
        plan_experiment(store, cfg, w2s, "weak")
    assert not set(bad) & set(first["prompts"] + second["prompts"])


def test_ceiling_trains_on_verified_answers_to_the_prompts_the_weak_model_labelled(
    store: Store, tiny_model_dir: Path, tmp_path: Path, checked: list[str]
) -> None:
    good, _ = fill(store)
    cfg, w2s = trainer_config(tiny_model_dir), WeakToStrongConfig()
    plan = plan_experiment(store, cfg, w2s, "weak")
    weak = weak_double(fail_on="about bread")  # the call for one prompt fails
    directory = tmp_path / "w2s-1"
    labels = asyncio.run(label_prompts(store, plan, weak, PromptLibrary("en"), w2s, directory))
    failed = store.get(good[1])
    assert labels[failed.id] == {"id": failed.id, "failed": "timeout"}
    # Since the plan, one planned prompt's answer in the pool stopped passing.
    store.set_output(good[2], FAILING)
    ceiling = arm_examples("ceiling", store, plan, labels)
    on_weak = arm_examples("strong_on_weak", store, plan, labels)
    expected = [i for i in plan["prompts"] if i not in (good[1], good[2])]
    assert [e.id for e in ceiling] == [e.id for e in on_weak] == expected
    for example in ceiling:
        assert example.output == store.get(example.id).output and verified(example)
    for example in on_weak:
        pooled = store.get(example.id)
        assert (example.instruction, example.system) == (pooled.instruction, pooled.system)
        assert example.output == labels[example.id]["output"]
    # The labels were asked as the responder asks, greedily, and none was checked...
    assert all(c.temperature == 0.0 and c.max_tokens == w2s.max_tokens for c in weak.calls)
    label_texts = {e.output for e in on_weak}
    assert not label_texts & set(checked)
    # ...though every one of them fails its constraints: the student trains on them as given.
    assert not any(all(r.passed for r in check_all([NO_COMMA, LOWER], t)) for t in label_texts)
    with pytest.raises(ValueError, match="unknown arm"):
        arm_examples("teacher", store, plan, labels)


def test_labels_resume_where_a_killed_run_stopped(store: Store, tiny_model_dir, tmp_path) -> None:
    fill(store)
    cfg, w2s = trainer_config(tiny_model_dir), WeakToStrongConfig(batch_size=4)
    plan = plan_experiment(store, cfg, w2s, "weak")
    directory = tmp_path / "w2s-1"
    weak = weak_double()
    asyncio.run(label_prompts(store, plan, weak, PromptLibrary("en"), w2s, directory))
    lines = (directory / "labels.jsonl").read_text().splitlines()
    # Killed while writing the second batch: its second line was cut short.
    (directory / "labels.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])
    again = weak_double()
    labels = asyncio.run(label_prompts(store, plan, again, PromptLibrary("en"), w2s, directory))
    assert len(again.calls) == 2 and sorted(labels) == sorted(plan["prompts"])
    assert read_labels(directory) == labels


# --- a whole experiment ---------------------------------------------------------------------
@pytest.mark.timeout(300)
async def test_experiment_never_checks_the_labels_it_trains_on(
    tmp_path: Path, tiny_model_dir: Path, checked: list[str], one_thread: None
) -> None:
    from evoinstruct.cli.report.build import build_report

    root = tmp_path / "proj"
    store = open_store(root / "pool.db")
    fill(store)
    weak = weak_double()
    models = model_set(tiny_model_dir, weak)
    cfg, w2s = trainer_config(tiny_model_dir), WeakToStrongConfig()
    steps: list[tuple[str, int, int]] = []
    try:
        result = await run_weak_to_strong(
            store, models, PromptLibrary("en"), cfg, w2s, root,
            train=train_in_process(cfg, root, store), round=3,
            progress=lambda *step: steps.append(step),
        )  # fmt: skip
    finally:
        await models.aclose()
    directory = experiments_dir(root) / "w2s-1"
    labels = [row["output"] for row in read_labels(directory).values()]
    assert len(labels) == 6 and not set(labels) & set(checked)
    assert "a short suite answer" in checked  # the weak model's suite answers are scored
    manifests = {a: json.loads((directory / a / "manifest.json").read_text()) for a in ARMS}
    assert manifests["strong_on_weak"]["prompts"] == manifests["ceiling"]["prompts"]
    assert len(manifests["ceiling"]["prompts"]) == 6
    for arm in ARMS:
        assert (directory / arm / "adapter_config.json").is_file()
        assert result["trained"][arm]["global_step"] == cfg.max_steps
    assert set(result["models"]) == {"weak", "strong_base", "strong_on_weak", "ceiling"}
    assert result["labels"] == {"prompts": 6, "answered": 6, "failed": 0, "truncated": 0}
    everything = result["pgr"]["all"]
    assert everything["n"] == 2 and set(everything["accuracy"]) == set(result["models"])
    stored = store.experiment("w2s-1")
    assert stored["round"] == 3 and stored["result"] == json.loads(json.dumps(result))
    labels_seen = [s for s in steps if s[0] == "weak labels"]
    assert labels_seen[-1] == ("weak labels", 6, 6)
    assert {s[0] for s in steps} >= {"suite: weak", "suite: ceiling"}
    # Each student answered as itself: four results stored for the suite.
    assert {r["label"] for r in store.eval_results()} == {
        "weak", "base", "w2s-1/strong_on_weak", "w2s-1/ceiling",
    }  # fmt: skip
    # The report draws the experiment.
    report = build_report(store, tmp_path / "report")
    assert "weak_to_strong" in report.pngs
    assert "Weak-to-strong supervision" in report.html.read_text()
    store.close()


def test_the_trainer_entry_trains_a_labelled_experiment(
    tmp_path: Path, tiny_model_dir: Path, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from evoinstruct.trainer.__main__ import main

    root = tmp_path / "proj"
    cfg, w2s = trainer_config(tiny_model_dir, max_steps=2), WeakToStrongConfig()
    config_file = tmp_path / "trainer.json"
    config_file.write_text(cfg.model_dump_json())
    with open_store(root / "pool.db") as store:
        fill(store)
        plan = plan_experiment(store, cfg, w2s, "weak")
    args = ["weak-to-strong", "--project", str(root), "--config", str(config_file)]
    assert main([*args, "--experiment", "w2s-1"]) == 1  # no labels yet: refused
    assert "no weak label yet" in capsys.readouterr().err
    with open_store(root / "pool.db") as store:
        asyncio.run(
            label_prompts(
                store,
                plan,
                weak_double(),
                PromptLibrary("en"),
                w2s,
                experiments_dir(root) / "w2s-1",
            )
        )
    assert main([*args, "--experiment", "w2s-1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["experiment"] == "w2s-1"
    assert {a: s["global_step"] for a, s in summary["arms"].items()} == dict.fromkeys(ARMS, 2)
    assert main([*args, "--experiment", "w2s-9"]) == 2
    assert "no weak-to-strong experiment 'w2s-9'" in capsys.readouterr().err


# --- the loop ----------------------------------------------------------------------------------
def test_branch_routes_to_the_experiment_in_its_mode() -> None:
    from langgraph.graph import END

    from evoinstruct.graph.round.build import route_after_commit

    assert route_after_commit({"train": False, "weak_to_strong": True}) == END
    assert route_after_commit({"train": True, "weak_to_strong": True}) == "weak_to_strong"
    assert route_after_commit({"train": True}) == "train"  # a round checkpointed before the mode


def test_the_mode_needs_a_weak_model(tmp_path: Path) -> None:
    from evoinstruct.graph.project import init_project

    project = init_project(tmp_path / "proj")
    with pytest.raises(ConfigError, match=r"roles\.weak"):
        project.load_config(["weak_to_strong.enabled=true"]).check_consistency()
    with pytest.raises(ConfigError, match=r"not under \[models\]"):
        project.load_config(['roles.weak="weak"']).check_consistency()


@pytest.mark.slow
@pytest.mark.timeout(600)
def _weak_to_strong_project(tmp_path: Path, tiny_model_dir: Path) -> Any:
    """A project in weak-to-strong mode on the tiny model, three verified prompts waiting."""
    from evoinstruct.graph.project import init_project
    from evoinstruct.graph.round.deps import deps_for_project
    from tests.fake_teacher import scripted_teacher

    project = init_project(tmp_path / "proj")
    tiny = json.dumps(str(tiny_model_dir))
    config = project.load_config(
        [
            f"models.student.path={tiny}",
            'models.student.device="cpu"',
            'models.weak.backend="transformers"',
            f"models.weak.path={tiny}",
            'models.weak.device="cpu"',
            'roles.weak="weak"',
            f"trainer.base_model={tiny}",
            'trainer.device="cpu"',
            "trainer.max_steps=2",
            "trainer.batch_size=4",
            "trainer.grad_accumulation=1",
            "trainer.max_length=384",
            "trainer.heldout_fraction=0.0",
            "trainer.suite.tasks_per_language=1",
            "trainer.suite.max_tokens=4",
            "trainer.suite.bootstrap_samples=200",
            "weak_to_strong.enabled=true",
            "weak_to_strong.min_prompts=3",
            "weak_to_strong.max_tokens=8",
            "loop.generate_calls=0",
            "loop.evolve_per_round=0",
        ]
    )
    teacher = scripted_teacher()

    def builder(cfg: ModelConfig, cache: Any = None) -> Any:
        return build_model(cfg) if cfg.backend == "transformers" else teacher

    models = ModelSet(config.models, config.roles, builder=builder)
    deps = deps_for_project(project, config, models=models)
    fill(deps.store, verified_topics=3)
    return project, deps


async def test_a_round_runs_the_experiment_and_promotes_nothing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The loop's path: the commit finds verified prompts waiting, the branch labels them with
    the weak model, trains both students in the trainer's own process, scores the four and
    records PGR on the round."""
    from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions

    project, deps = _weak_to_strong_project(tmp_path, tiny_model_dir)
    events: list[dict[str, Any]] = []
    await Daemon(project, deps, DaemonOptions(rounds=1), lambda kind, e: events.append(e)).run()
    experiment = deps.store.experiment("w2s-1")
    assert experiment is not None and experiment["round"] == 1
    assert experiment["result"]["labels"]["answered"] == 3
    record = deps.store.round(1)["counts"]
    assert record["weak_to_strong"] == "w2s-1" and record["training"].startswith("w2s-1: PGR ")
    assert deps.store.model_versions() == [] and deps.store.active_model() is None
    directory = experiments_dir(project.root) / "w2s-1"
    assert all((directory / arm / "adapter_config.json").is_file() for arm in ARMS)
    mine = [e for e in events if e.get("stage") == "weak_to_strong"]
    assert mine[-1].get("final") and any(e.get("step") == "weak labels" for e in mine)
    deps.store.close()


@pytest.mark.slow
async def test_a_stop_while_the_students_train_leaves_the_round_to_resume(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A stop request that reaches the students' training (the trainer exits with Interrupted)
    is a stop: the round is not closed as a failed experiment, and the next start resumes."""
    from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
    from evoinstruct.store.errors import Interrupted

    project, deps = _weak_to_strong_project(tmp_path, tiny_model_dir)

    async def stopped(name: str, *, stopping: Any = None) -> dict[str, Any]:
        raise Interrupted(f"training {name} stopped on request")

    deps.trainer.train_weak_to_strong = stopped
    result = await Daemon(project, deps, DaemonOptions(rounds=1)).run()
    assert result.rounds_run == [] and result.closed_as_failed is None
    record = deps.store.round(1)
    # What the schedule said of the round stands; no "experiment failed" replaces it.
    assert record is not None and "failed" not in record["counts"].get("training", "")
    experiment = deps.store.experiment("w2s-1")
    assert experiment is not None and experiment["result"] is None
    # The next start resumes the experiment where it stopped and finishes the round.
    del deps.trainer.train_weak_to_strong
    result = await Daemon(project, deps, DaemonOptions(rounds=1)).run()
    assert result.rounds_run[0] == 1  # the stopped round first
    assert deps.store.round(1)["counts"]["training"].startswith("w2s-1: PGR ")
    deps.store.close()


# --- the data and the weak model's recipe -----------------------------------------------------
def test_verified_data_keeps_only_answers_that_pass(store: Store) -> None:
    from evoinstruct.agents.responder import ResponderConfig
    from evoinstruct.trainer.verified_data import add_verified, read_tasks

    tasks = read_tasks("# a comment\nDescribe a river.\n\nName three birds.\n")
    assert tasks == ["Describe a river.", "Name three birds."]
    # Every constrained prompt is answered with one reply that passes lowercase and no-comma
    # constraints and fails most others, so some children verify and some do not.
    model = ScriptedModel(default=PASSING, model_id="full")
    counts = asyncio.run(
        add_verified(
            store, tasks, model, PromptLibrary("en"), ResponderConfig(verifiable_samples=2),
            draws=3, max_constraints=1, seed=1,
        )
    )  # fmt: skip
    assert counts["prompts"] == 6
    assert counts["verified"] + counts["failed_constraints"] + counts["rejected"] == 6
    kept = [e for e in store.iter_examples(status="accepted") if e.source != "seed"]
    assert len(kept) == len({e.id for e in kept}) <= counts["verified"]
    assert kept and all(verified(e) for e in kept)
    assert {e.round for e in kept} <= {1, 2, 3}


def test_plain_healing_data_is_the_bare_tasks_answered(store: Store) -> None:
    """The default healing data: each task as it is (no constraint attached, nothing checked),
    with the full model's greedy answer, stored as new examples the trainer takes."""
    from evoinstruct.agents.responder import ResponderConfig
    from evoinstruct.agents.scoring.verify import constraints_of
    from evoinstruct.trainer.verified_data import add_answered

    tasks = ["Describe a river.", "Name three birds.", "Explain what a lighthouse does."]
    model = ScriptedModel(default=FAILING, model_id="full")  # fails any constraint it met
    said: list[tuple[str, int, int]] = []
    counts = asyncio.run(
        add_answered(
            store, tasks, model, PromptLibrary("en"), ResponderConfig(temperature=0.0),
            batch_size=2, progress=lambda *step: said.append(step),
        )
    )  # fmt: skip
    assert counts == {"prompts": 3, "answered": 3, "rejected": 0}
    kept = list(store.iter_examples(status="accepted"))
    assert sorted(e.instruction for e in kept) == sorted(tasks)
    assert all(e.output == FAILING and e.source != "seed" and not verified(e) for e in kept)
    assert not any(constraints_of(e) for e in kept)
    assert said == [("answers", 0, 3), ("answers", 2, 3), ("answers", 3, 3)]


def test_truncated_copy_keeps_the_layers_asked_for(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evoinstruct.trainer.weak_model import WeakRecipe, split_tasks, truncate

    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    last = full.config.num_hidden_layers - 1
    assert last >= 1
    count_cut = truncate(tiny_model_dir, [last], tmp_path / "cut")
    cut = AutoModelForCausalLM.from_pretrained(tmp_path / "cut", dtype=torch.float32)
    assert cut.config.num_hidden_layers == 1
    assert count_cut == sum(p.numel() for p in cut.parameters())
    assert count_cut < sum(p.numel() for p in full.parameters())
    # The kept block is the full model's last, renumbered.
    kept = cut.state_dict()["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(kept, full.state_dict()[f"model.layers.{last}.mlp.up_proj.weight"])
    # It generates with its KV cache (indexed by the renumbered layers).
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "cut")
    ids = tokenizer("hello there", return_tensors="pt")
    out = cut.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5
    with pytest.raises(ValueError, match="distinct indexes"):
        truncate(tiny_model_dir, [0, 0], tmp_path / "bad")
    weak, other = split_tasks([f"task {i}" for i in range(7)])
    assert weak == ["task 0", "task 2", "task 4", "task 6"] and not set(weak) & set(other)
    assert WeakRecipe().tag() == WeakRecipe().tag() != WeakRecipe(steps=1).tag()


def test_the_cached_weak_model_and_its_data_follow_the_tasks_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An edited tasks file is new healing data and a new weak model; an edit outside the
    tasks the recipe answers changes neither."""
    import evoinstruct.trainer.weak_model as weak_model

    tasks = [f"task {i}" for i in range(10)]
    monkeypatch.setattr(weak_model, "packaged_tasks", lambda: list(tasks))
    recipe = weak_model.WeakRecipe(tasks=3)  # answers tasks 0, 2 and 4
    tags = recipe.data_tag(), recipe.tag()
    tasks[9] = "an edit the recipe never answers"
    assert (recipe.data_tag(), recipe.tag()) == tags
    tasks[2] = "an edited task the recipe answers"
    assert recipe.data_tag() != tags[0] and recipe.tag() != tags[1]


@pytest.mark.parametrize(("heal_on", "kept"), [("verified", "verified"), ("plain", "answered")])
def test_the_weak_model_is_cut_healed_and_cached(
    tiny_model_dir: Path,
    tmp_path: Path,
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
    heal_on: Literal["verified", "plain"],
    kept: str,
) -> None:
    """The recipe end to end on a tiny model standing in for the full SmolLM2: its healing
    data is already cached (the slow part), so the cut and the healing run here; a second
    call returns the folder without making anything."""
    import shutil

    from transformers import AutoConfig

    import evoinstruct.trainer.weak_model as weak_model
    from evoinstruct.models.smollm2 import SOURCE_FILE, model_dir
    from evoinstruct.trainer.weak_model import (
        COUNTS,
        WeakRecipe,
        heal_data_dir,
        make_weak_smollm2,
        weak_model_dir,
    )

    cache = tmp_path / "cache"
    strong = model_dir(cache, "float32")
    shutil.copytree(tiny_model_dir, strong)
    (strong / SOURCE_FILE).write_text(json.dumps({"model": "tiny stand-in"}))
    last = AutoConfig.from_pretrained(strong).num_hidden_layers - 1
    recipe = WeakRecipe(layers=(last,), steps=2, batch_size=2, grad_accumulation=1, heal_on=heal_on)
    data = heal_data_dir(cache, recipe)
    data.mkdir(parents=True)
    with open_store(data / "pool.db") as heal:
        fill(heal)
    (data / COUNTS).write_text(json.dumps({"prompts": 9, kept: 6}))
    said: list[str] = []
    out = make_weak_smollm2(recipe, cache, progress=said.append)
    assert out == weak_model_dir(cache, recipe) and out.name.endswith(f"-{recipe.tag()}-float32")
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 1
    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["parent"] == {"model": "tiny stand-in"} and source["data"][kept] == 6
    assert source["recipe"]["layers"] == [last] and source["global_step"] == 2
    assert any(m.startswith(f"healing on 6 {heal_on} answers") for m in said)
    steps = [m.split(",")[0] for m in said if m.startswith("healing: step")]
    assert steps == ["healing: step 1/2", "healing: step 2/2"]  # each step is said
    assert not list(cache.glob(".*.tmp"))  # the work folder was renamed or removed
    # Cached: nothing is cut, healed or answered again.
    monkeypatch.setattr(weak_model, "truncate", lambda *a: pytest.fail("cut again"))
    monkeypatch.setattr(weak_model, "_heal_answers", lambda *a: pytest.fail("answered again"))
    assert make_weak_smollm2(recipe, cache) == out
    # Recipes that differ in how they cut and heal share the healing data; the data's
    # own settings make other data.
    assert heal_data_dir(cache, WeakRecipe(layers=(0,), steps=9, heal_on=heal_on)) == data
    assert heal_data_dir(cache, WeakRecipe(draws=3, heal_on=heal_on)) != data
    other: Literal["verified", "plain"] = "plain" if heal_on == "verified" else "verified"
    assert heal_data_dir(cache, WeakRecipe(heal_on=other)) != data  # other answers, other data


def test_no_planned_prompt_is_a_suite_prompt_or_held_out(
    store: Store, tiny_model_dir: Path
) -> None:
    """The students never train on what the suite measures: a verified pool example that
    copies a suite task, or one in the trainer's held-out share, is never planned."""
    from evoinstruct.trainer.data import is_heldout
    from evoinstruct.trainer.suite import ensure_suite

    good, _ = fill(store)
    cfg = trainer_config(tiny_model_dir)
    suite = ensure_suite(store, cfg.suite).suite
    copied = [constrained(item.task, f"{PASSING} copy") for item in suite.items if item.task]
    assert copied
    copies = store.add_candidates(copied, 1, status="accepted").ids
    w2s = WeakToStrongConfig(prompts=100, min_prompts=1)
    plan = plan_experiment(store, cfg, w2s, "weak")
    assert sorted(plan["prompts"]) == sorted(good) and not set(copies) & set(plan["prompts"])
    store.finish_experiment(plan["name"], {"done": True})
    # With a held-out share, the held-out examples are left out too.
    held = cfg.model_copy(update={"heldout_fraction": 0.5})
    kept = [i for i in good if not is_heldout(i, 0.5)]
    assert 0 < len(kept) < len(good)
    fresh = [constrained(f"{t} again", f"{PASSING} again") for t in TOPICS[:6]]
    fresh_ids = store.add_candidates(fresh, 2, status="accepted").ids
    second = plan_experiment(store, held, w2s, "weak")
    assert sorted(second["prompts"]) == sorted(i for i in fresh_ids if not is_heldout(i, 0.5))


def test_a_student_killed_mid_training_resumes_from_its_checkpoint(
    store: Store, tiny_model_dir: Path, tmp_path: Path, one_thread: None
) -> None:
    from transformers import TrainerCallback

    fill(store)
    cfg = trainer_config(tiny_model_dir, max_steps=2, save_steps=1)
    w2s = WeakToStrongConfig()
    plan = plan_experiment(store, cfg, w2s, "weak")
    root = tmp_path / "proj"
    directory = experiments_dir(root) / plan["name"]
    asyncio.run(label_prompts(store, plan, weak_double(), PromptLibrary("en"), w2s, directory))

    class Killed(Exception):
        pass

    class KillAfterFirstSave(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 1:
                raise Killed

    with pytest.raises(Killed):
        train_arms(cfg, root, plan["name"], store=store, callbacks=[KillAfterFirstSave()])
    assert not (directory / "strong_on_weak").exists()
    assert (directory / ".strong_on_weak.partial" / "checkpoints" / "checkpoint-1").is_dir()
    said: list[str] = []
    arms = train_arms(cfg, root, plan["name"], store=store, callbacks=[StepSay(said.append, "w2s")])
    # Each student's steps are said under its name; the resumed one from where it stopped.
    assert [m.split(",")[0] for m in said] == [
        "w2s strong_on_weak: step 2/2", "w2s ceiling: step 1/2", "w2s ceiling: step 2/2"
    ]  # fmt: skip
    assert arms["strong_on_weak"]["resumed_from"] == "checkpoint-1"
    assert arms["ceiling"]["resumed_from"] is None
    assert {a: m["global_step"] for a, m in arms.items()} == dict.fromkeys(ARMS, 2)
    assert not list(directory.glob(".*.partial"))
    # Finished students are kept: a third call trains nothing.
    assert train_arms(cfg, root, plan["name"], store=store) == arms
