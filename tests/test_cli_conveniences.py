"""Small conveniences: `init --language`, `inspect prompt` (and that it cannot drift from what
the agents send), tables that fit 80 columns, and costs from configured prices."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from random import Random
from typing import Any

import pytest

from evoinstruct.agents import critic, evolver, generator, responder, rewriter
from evoinstruct.cli import prompt_preview as preview
from evoinstruct.graph.config import RunConfig
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example
from tests.cli_helpers import run_cli
from tests.doubles import ScriptedModel

WIDTH = 80


def fits(text: str) -> bool:
    lines = text.splitlines()
    return all(len(line) <= WIDTH for line in lines) and "…" not in text


def example(
    instruction: str = "Explain why the sky is blue to a curious ten-year-old.",
    *,
    id: str = "e1",
    output: str | None = "Sunlight scatters off air molecules; blue light scatters the most.",
    **fields: Any,
) -> Example:
    values: dict[str, Any] = {"round": 1, "status": "accepted", **fields}
    return Example(id=id, instruction=instruction, output=output, **values)


ZH = example("解释为什么天空是蓝色的。", id="z1", output="阳光被空气分子散射，蓝光散射得最多。")
CONSTRAINED = example(
    meta={
        "constraints": [
            {
                "id": "length_constraints:number_words",
                "params": {"relation": "less than", "num_words": 60},
            }
        ]
    }
)


# --- init --language ----------------------------------------------------------------------------


def test_init_sets_the_language_and_suggests_seeding_it(tmp_path: Path, capsys) -> None:
    """The generator writes in project.language: init's command seeds that language only, and
    names the other language's seeds as the bilingual choice."""
    from evoinstruct.graph.project import Project

    for language, ours, other in (("zh", "zh", "en"), (None, "en", "zh")):
        extra = ["--language", language] if language else []
        result = run_cli(capsys, "init", tmp_path / f"p-{ours}", *extra)
        assert result.code == 0, result.err
        assert Project(tmp_path / f"p-{ours}").load_config().project.language == ours
        command = next(line for line in result.out.splitlines() if "seed add" in line)
        assert f"seed_tasks_{ours}.jsonl" in command and f"seed_tasks_{other}" not in command
        hint = next(line for line in result.out.splitlines() if "bilingual" in line)
        assert "project.bilingual = true" in hint and f"seed_tasks_{other}.jsonl" in hint


def test_init_refuses_an_unknown_language(tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, "init", tmp_path / "p", "--language", "fr")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "--language" in result.err and "en, zh" in result.err
    assert not (tmp_path / "p").exists()


# --- the preview is what the agents send ---------------------------------------------------------
# Each agent runs against a model double that records its requests; the preview must build
# the very same requests (messages, sampling, stops, schema).


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("mode", ["self_instruct", "alpaca"])
def test_generate_preview_is_what_the_generator_sends(language: str, mode: str) -> None:
    config = RunConfig()
    config.generator.mode = mode
    prompts = PromptLibrary(language)
    demos = [example(f"Task number {i}: write a haiku about rivers.", id=f"d{i}") for i in range(5)]
    model = ScriptedModel(default="1. Write a limerick.")
    run(generator.generate([demos], model, prompts, config.generator, Random(5)))
    (shown,) = preview.generate([demos], prompts, config, Random(5))
    assert shown.request == model.calls[0]


@pytest.mark.parametrize("answer", ["No", "Yes"])
def test_instances_preview_is_what_the_generator_sends(answer: str) -> None:
    from evoinstruct.store.records import ExampleDraft

    config, prompts = RunConfig(), PromptLibrary("en")
    draft = ExampleDraft("Classify the sentiment of the review.")
    model = ScriptedModel([answer], default="Example 1\nInput: None\nOutput: Positive")
    run(generator.generate_instances([draft], model, prompts, config.generator, Random(0)))
    shown = {
        p.variant: p.request for p in preview.instances(example(draft.instruction), prompts, config)
    }
    assert shown["is_classification"] == model.calls[0]
    assert shown["output_first" if answer == "Yes" else "input_first"] == model.calls[1]


@pytest.mark.parametrize("parent", [example(), ZH, CONSTRAINED], ids=["en", "zh", "constrained"])
@pytest.mark.parametrize("op", evolver.OPERATIONS)
def test_evolve_preview_is_what_the_evolver_sends(parent: Example, op: str) -> None:
    config = RunConfig()
    config.evolver.operations = [op]
    prompts = PromptLibrary(parent.language or ("zh" if parent is ZH else "en"))
    model = ScriptedModel(default="A harder version of the prompt with one more requirement.")
    run(evolver.evolve([parent], model, prompts, config.evolver, Random(0)))
    (shown,) = preview.evolve(parent, prompts, config, op)
    assert shown.request == model.calls[0]


def test_eliminate_preview_is_what_the_evolver_sends() -> None:
    config, prompts = RunConfig(), PromptLibrary("en")
    parent = example(id="p")
    child = example("Explain, with two analogies, why the sky is blue.", id="c", parent_id="p")
    model = ScriptedModel(default="Not Equal")
    run(evolver.eliminate([(parent, child)], model, prompts, config.evolver))
    (shown,) = preview.eliminate(parent, child, prompts, config)
    assert shown.request == model.calls[0]


@pytest.mark.parametrize(
    "item",
    [example(output=None), example(output=None, system="Answer briefly."), CONSTRAINED, ZH],
    ids=["plain", "system", "constrained", "zh"],
)
@pytest.mark.parametrize("explain", [False, True])
def test_respond_preview_is_what_the_responder_sends(item: Example, explain: bool) -> None:
    config = RunConfig()
    config.responder.explanation_prompts = explain
    prompts = PromptLibrary("zh" if item is ZH else "en")
    item = Example(**{**item.__dict__, "output": None})
    model = ScriptedModel(default="An answer in a few words.")
    run(responder.respond([item], model, prompts, config.responder, Random(3)))
    (shown,) = preview.respond(item, prompts, config, Random(3))
    assert shown.request == model.calls[0]


@pytest.mark.parametrize("structured", [False, True])
def test_critique_previews_are_what_the_critic_sends(structured: bool) -> None:
    config, prompts = RunConfig(), PromptLibrary("en")
    cfg = config.critic
    cfg.stats.enabled = cfg.verify.enabled = cfg.ifd.enabled = False
    cfg.instag.enabled = cfg.deita.enabled = True
    cfg.judge.dimensions = ["accuracy", "helpfulness"]
    cfg.judge.structured = structured
    score = '{"score": 5, "explanation": "fine"}' if structured else "5\nfine"
    judge = ScriptedModel(["5", "5", score, score])
    tagger = ScriptedModel(['[{"tag": "science", "explanation": "physics"}]'])
    item = example()
    run(
        critic.critique(
            [item], judge=judge, tagger=tagger, prompts=prompts, config=cfg, rng=Random(0)
        )
    )
    assert [p.request for p in preview.instag(item, prompts, config)] == tagger.calls
    deita = [p.request for p in preview.deita(item, prompts, config)]
    judged = [p.request for p in preview.judge(item, prompts, config)]
    assert deita + judged == judge.calls


def test_rewriter_previews_are_what_the_rewriter_sends() -> None:
    config, prompts = RunConfig(), PromptLibrary("en")
    types = rewriter.load_task_types(prompts)
    chosen = next(name for name, t in types.items() if t.rewrite)
    item = example()
    model = ScriptedModel(
        [chosen], default="Reasoning: fine.\nRevised response:\nSunlight scatters."
    )
    run(rewriter.rewrite_examples([item], model, prompts, config.rewriter, Random(0)))
    (classify,) = preview.classify(item, prompts, config)
    (rewrite,) = preview.rewrite(item, prompts, config, chosen)
    assert [classify.request, rewrite.request] == model.calls


# --- inspect prompt on a project ------------------------------------------------------------------


def test_inspect_prompt_applies_project_overrides(project_dir: Path, capsys) -> None:
    override = project_dir / "prompts" / "en" / "respond.jinja2"
    override.parent.mkdir(parents=True)
    override.write_text("OUR HOUSE STYLE: {{ instruction }}{{ input }}", encoding="utf-8")
    result = run_cli(capsys, "inspect", "prompt", "respond", "-p", project_dir)
    assert result.code == 0, result.err
    assert "OUR HOUSE STYLE: Give three tips for staying healthy." in result.out  # a stand-in
    zh = run_cli(capsys, "inspect", "prompt", "respond", "--language", "zh", "-p", project_dir)
    assert zh.code == 0 and "给出三条保持健康的建议。" in zh.out and "OUR HOUSE" not in zh.out


def test_inspect_prompt_json_and_set(project_dir: Path, capsys) -> None:
    args = ("inspect", "prompt", "judge", "--json", "--set", 'critic.judge.dimensions=["a","b"]')
    result = run_cli(capsys, *args, "-p", project_dir)
    assert result.code == 0, result.err
    data = result.json()
    assert data["example_id"] == "sample"
    assert [r["variant"] for r in data["requests"]] == ["a", "b"]
    assert data["requests"][0]["messages"][0]["role"] == "user"
    one = run_cli(capsys, *args, "--variant", "b", "-p", project_dir).json()
    assert [r["variant"] for r in one["requests"]] == ["b"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("prompt", "summarize"), "unknown stage 'summarize'"),
        (("prompt", "evolve", "--variant", "shorten"), "no operation 'shorten'"),
        (("prompt", "respond", "--variant", "x"), "respond has no variants"),
        (("prompt", "respond", "--example", "nope"), "no example with id 'nope'"),
        (("prompt", "respond", "--language", "fr"), "unknown language 'fr'"),
        (("prompt", "eliminate"), "no evolved example yet"),
        (("prompt", "generate", "--example", "x"), "sends no example"),
    ],
)
def test_inspect_prompt_refuses_bad_input_in_one_line(
    project_dir: Path, capsys, args: tuple[str, ...], words: str
) -> None:
    result = run_cli(capsys, "inspect", *args, "-p", project_dir)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert words in result.err


# --- a project after one real round ---------------------------------------------------------------


@pytest.fixture(scope="module")
def after_a_round(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One whole round on the scripted teacher, with prices for the teacher."""
    from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
    from evoinstruct.graph.project import init_project
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.models.factory import ModelSet
    from evoinstruct.store.seeds import add_seed_file
    from tests.fake_teacher import scripted_teacher

    project = init_project(tmp_path_factory.mktemp("round") / "proj")
    toml = project.config_path
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            "[models.teacher]\n",
            "[models.teacher]\nprice_per_mtok_in = 2.0\nprice_per_mtok_out = 6.0\n",
        ),
        encoding="utf-8",
    )
    config = project.load_config()
    teacher = scripted_teacher()
    models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
    deps = deps_for_project(project, config, models=models)
    try:
        add_seed_file(deps.store, project.root / "seeds" / "seed_tasks_en.jsonl")
        asyncio.run(Daemon(project, deps, DaemonOptions(rounds=1)).run())
    finally:
        deps.store.close()
    return project.root


def test_inspect_rounds_fits_and_costs_by_model(after_a_round: Path, capsys) -> None:
    table = run_cli(capsys, "inspect", "rounds", "-p", after_a_round)
    assert table.code == 0 and fits(table.out), table.out
    assert "cost/acc" in table.out
    (row,) = run_cli(capsys, "inspect", "rounds", "--json", "-p", after_a_round).json()
    assert row["tokens"] > 0 and row["cost"] > 0 and row["unpriced_tokens"] == 0
    assert {u["model"] for u in row["usage"]} == {"teacher"}
    respond = next(u for u in row["usage"] if u["stage"] == "respond")
    expected = (respond["prompt_tokens"] * 2.0 + respond["completion_tokens"] * 6.0) / 1e6
    assert respond["cost"] == pytest.approx(expected)
    assert row["cost_per_accepted"] == pytest.approx(row["cost"] / row["by_status"]["accepted"])


def test_status_reports_cost_per_accepted_example(after_a_round: Path, capsys) -> None:
    report = run_cli(capsys, "status", "--json", "-p", after_a_round).json()
    cost = report["cost"]
    assert cost["rounds"] == 1 and cost["cost"] > 0
    assert cost["cost_per_accepted"] == pytest.approx(cost["cost"] / cost["accepted"])
    assert cost["by_model"]["teacher"]["tokens"] == cost["tokens"]
    text = run_cli(capsys, "status", "-p", after_a_round).out
    assert "per accepted example" in text and fits(text)


def test_the_reports_cost_data_agrees_with_status(after_a_round: Path, capsys) -> None:
    from evoinstruct.cli.costs import project_costs
    from evoinstruct.graph.project import Project

    data = project_costs(Project(after_a_round))
    status = run_cli(capsys, "status", "--json", "-p", after_a_round).json()
    assert data["summary"] == status["cost"]
    (row,) = data["rounds"]
    assert row["round"] == 1 and {s["stage"] for s in row["stages"]} >= {"generate", "respond"}


def test_checkpoints_show_what_each_step_added(after_a_round: Path, capsys) -> None:
    result = run_cli(capsys, "inspect", "checkpoints", "--round", "1", "-p", after_a_round)
    assert result.code == 0 and fits(result.out), result.out
    rows = run_cli(
        capsys, "inspect", "checkpoints", "--round", "1", "--json", "-p", after_a_round
    ).json()
    after_select = next(r for r in rows if r["node"] == "select")
    assert list(after_select["delta"]["counts"]) == ["select"]  # only the new stage
    accepted = after_select["delta"]["counts"]["select"]["accepted"]
    assert f"select: accepted={accepted}" in result.out  # the late stage's numbers show


def test_rejections_show_the_rejected_evolution_not_its_parent(after_a_round: Path, capsys) -> None:
    from evoinstruct.store import open_store
    from evoinstruct.store.records import Rejection

    with open_store(after_a_round / "pool.db") as store:
        parent = next(iter(store.iter_examples(status="accepted")))
        store.record_rejections(
            [
                Rejection(
                    "evolve",
                    "truncated",
                    {"operation": "deepen"},
                    "A DEEPER REWRITE THAT WAS CUT OFF",
                    parent.id,
                    parent.instruction,
                )
            ],
            1,
        )
    result = run_cli(
        capsys,
        "inspect",
        "rejections",
        "--stage",
        "evolve",
        "--reason",
        "truncated",
        "-p",
        after_a_round,
    )
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[1] == "  - A DEEPER REWRITE THAT WAS CUT OFF"
    assert lines[2].startswith("    evolved from: " + parent.instruction[:20])


def test_inspect_prompt_eliminate_uses_an_evolved_example(after_a_round: Path, capsys) -> None:
    result = run_cli(capsys, "inspect", "prompt", "eliminate", "--json", "-p", after_a_round)
    assert result.code == 0, result.err
    (request,) = result.json()["requests"]
    assert request["template"] == "en/evol_equality.jinja2" and request["temperature"] == 0.0


def test_generate_preview_samples_demos_as_the_next_round(after_a_round: Path, capsys) -> None:
    result = run_cli(capsys, "inspect", "prompt", "generate", "--json", "-p", after_a_round)
    (request,) = result.json()["requests"]
    assert "generate_self_instruct" in request["template"] and request["stop"]


# --- models list ----------------------------------------------------------------------------------


def test_models_list_fits_with_rounded_numbers(project_dir: Path, capsys) -> None:
    from evoinstruct.store import open_store

    with open_store(project_dir / "pool.db") as store:
        for number in (1, 2, 12):
            store.register_model_version(
                f"v{number}",
                base="Qwen/Qwen2.5-0.5B-Instruct",
                method="qlora",
                path=f"/very/long/path/to/the/project/models/v{number}",
                round=number * 10,
                metrics={
                    "train_loss": 1.2345678901234567,
                    "evaluation": {
                        "heldout_loss": 1.1111111111111112,
                        "baseline_loss": 1.3333333333333333,
                        "pairwise": {"winning_score": 0.6234567},
                        "gate": {"reason": "won the pairwise comparison by a wide margin"},
                    },
                },
                config={},
            )
        store.set_promoted("v1", "test")
        store.set_promoted("v2", "test")
    result = run_cli(capsys, "models", "list", "-p", project_dir)
    assert result.code == 0 and fits(result.out), result.out
    assert "1.235" in result.out and "1.2345678" not in result.out and "0.62" in result.out
    assert "promoted" in result.out and "active" in result.out
    full = run_cli(capsys, "models", "list", "--json", "-p", project_dir).json()
    assert full[0]["train_loss"] == 1.2345678901234567  # --json keeps full precision


# --- costs ----------------------------------------------------------------------------------------


def test_tokens_are_attributed_to_the_role_model_of_the_round() -> None:
    from evoinstruct.cli.costs import Price, cost_summary, round_costs

    roles = {
        "generator": "teacher",
        "responder": "big",
        "student": "student",
        "follow_student": True,
    }
    stages = {
        "generate": {"calls": 2, "tokens": 1_000_000},
        "respond": {
            "calls": 4,
            "prompt_tokens": 1_000_000,
            "completion_tokens": 500_000,
            "tokens": 1_500_000,
        },
        "select": {"accepted": 3},
    }
    rows = [
        {
            "number": 1,
            "model_version": None,
            "stages": stages,
            "accepted": 4,
            "roles": roles,
            "models": {},
        },
        {
            "number": 2,
            "model_version": "v1",
            "stages": stages,
            "accepted": 0,
            "roles": roles,
            "models": {},
        },
    ]
    prices = {"teacher": Price(1.0, 3.0), "big": Price(2.0, None)}
    first, second = round_costs(rows, prices)
    generate = next(s for s in first.stages if s.stage == "generate")
    assert generate.model == "teacher" and generate.cost == pytest.approx(
        3.0
    )  # unsplit: upper price
    respond = next(s for s in first.stages if s.stage == "respond")
    assert respond.cost == pytest.approx(2.0) and respond.unpriced_tokens == 500_000
    assert first.cost_per_accepted == pytest.approx(5.0 / 4)
    assert next(s for s in second.stages if s.stage == "generate").model == "student"
    assert second.cost_per_accepted is None  # nothing accepted
    summary = cost_summary([first, second])
    assert summary["by_model"]["student"]["cost"] is None
    assert summary["cost"] == pytest.approx(3.0 + 2.0 + 2.0)
    assert summary["cost_per_accepted"] == pytest.approx(7.0 / 4)


def test_prices_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    from evoinstruct.cli.costs import Price, load_prices
    from evoinstruct.store.errors import ConfigError

    toml = tmp_path / "evoinstruct.toml"
    toml.write_text('[models.teacher]\nmodel = "m"\nprice_per_mtok_in = 1.5\n', encoding="utf-8")
    env = {"EVOINSTRUCT__MODELS__TEACHER__PRICE_PER_MTOK_OUT": "4"}
    assert load_prices(toml, env) == {"teacher": Price(1.5, 4.0)}
    toml.write_text('[models.teacher]\nprice_per_mtok_in = "cheap"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"models\.teacher\.price_per_mtok_in"):
        load_prices(toml, {})


def test_price_fields_validate_in_the_config(project_dir: Path) -> None:
    from evoinstruct.graph.config import load_config
    from evoinstruct.store.errors import ConfigError

    with pytest.raises(ConfigError, match="price_per_mtok_out"):
        load_config(project_dir / "evoinstruct.toml", ["models.teacher.price_per_mtok_out=-1"])
    config = load_config(project_dir / "evoinstruct.toml", ["models.teacher.price_per_mtok_in=0.3"])
    assert config.models["teacher"].price_per_mtok_in == 0.3


def test_human_numbers() -> None:
    from evoinstruct.cli.costs import human_cost, human_tokens

    assert [human_tokens(n) for n in (12, 3_400, 1_250_000)] == ["12", "3.4k", "1.2M"]
    assert [human_cost(v) for v in (None, 0.0, 0.012345, 1234.5)] == [
        "-",
        "0.00",
        "0.0123",
        "1,234.50",
    ]


def test_describe_delta_lists_new_counts_and_notes() -> None:
    from evoinstruct.cli.commands.inspect import describe_delta
    from evoinstruct.cli.inspect import _delta

    before = {"generate": {"new": 3, "calls": 2}, "evolve": {"children": 5}}
    after = {**before, "respond": {"answered": 8, "tokens": 123_456}}
    delta = {"counts": _delta(before, after), "notes": _delta(["a"], ["a", "promoted v2"])}
    assert delta["counts"] == {"respond": {"answered": 8, "tokens": 123_456}}
    text = describe_delta(delta)
    assert text.splitlines() == ["respond: answered=8 tokens=123.5k", "note: promoted v2"]
    assert json.loads(json.dumps(delta)) == delta
