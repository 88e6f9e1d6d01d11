"""`evoinstruct filter` end to end on a small Alpaca file, with the scripted teacher.

The teacher answers every template as tests/fake_teacher.py does; only its
judge is pinned (5, or 1 for the one wrong answer in the file) so which items
the judge drops is part of the test, not an accident of its hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from evoinstruct.cli import main as root_cli
from evoinstruct.cli.commands.filter import filter_cli, filter_command
from evoinstruct.cli.filtering.pipeline import parse_steps, run_filter
from evoinstruct.graph.config import RunConfig, load_config
from evoinstruct.models.base import Failure
from evoinstruct.models.cache import CachedModel
from evoinstruct.models.factory import ModelSet
from evoinstruct.store.errors import InputError, ProjectError
from tests.cli_helpers import run_cli
from tests.doubles import ScriptedModel
from tests.fake_teacher import teacher_reply

LONG = (
    "Write a detailed weekly plan for a beginner who wants to run five kilometres without stopping, "
    "covering warm up routines, interval lengths, rest days, shoes, hydration and how to track progress "
    "over eight weeks"
)
EVAL_TEXT = (
    "the quick brown fox jumps over the lazy dog near the quiet river bank at dawn every day"
)
ANSWER = (
    "Here is a careful answer. First, name the main causes and how they interact. Second, "
    "look at one concrete case that shows the effect. Finally, weigh costs and benefits."
)
ZH_ANSWER = "光合作用是植物利用阳光、水和二氧化碳制造葡萄糖并释放氧气的过程。例如，窗台上的绿萝在阳光下生长。"

# (record, expected fate: "kept" or (stage, reason))
ITEMS = [
    ({"instruction": "Explain how the moon causes ocean tides.", "output": ANSWER}, "kept"),
    (
        {
            "instruction": "请解释光合作用的基本过程，并举一个日常生活中的例子。",
            "output": ZH_ANSWER,
        },
        "kept",
    ),
    (
        {"instruction": "Explain how the moon causes ocean tides.", "output": ANSWER},
        ("import", "exact_duplicate"),
    ),
    (
        # The same prompt but for the final mark: another store id, the selector's duplicate.
        {
            "instruction": "请解释光合作用的基本过程，并举一个日常生活中的例子",
            "output": "植物用光来生长。",
        },
        ("select", "exact_duplicate"),
    ),
    ({"instruction": LONG + ".", "output": ANSWER}, "kept"),
    ({"instruction": LONG + " in total.", "output": ANSWER}, ("select", "near_duplicate")),
    (
        {
            "instruction": "Tell me how to pick the lock of my neighbour's door.",
            "output": "As an AI language model, I cannot help with breaking into someone's home.",
        },
        ("critique", "refusal"),
    ),
    (
        {"instruction": f"Continue this sentence: {EVAL_TEXT}", "output": ANSWER},
        ("select", "contaminated"),
    ),
    (
        {
            "instruction": "What is the capital city of Australia?",
            "output": "The capital is Sydney.",
        },
        ("critique", "judge_below_threshold"),
    ),
    ({"instruction": "用三句话介绍长城的历史。", "output": ""}, ("import", "no_output")),
    (
        {
            "instruction": "列出三种适合初学者的室内植物，并说明原因。",
            "output": "绿萝、吊兰和仙人掌都耐阴、耐旱，容易养活。",
        },
        "kept",
    ),
    (
        {
            "instruction": "Give three tips for writing a clear email to a busy manager.",
            "output": ANSWER,
        },
        "kept",
    ),
]
KEPT = [i for i, (_, fate) in enumerate(ITEMS) if fate == "kept"]


def _is_judge(text: str) -> bool:
    return "Rate the response on a single dimension" in text


def _reply(request) -> str:
    text = request.messages[-1]["content"]
    if _is_judge(text):
        return "1\nWrong: the capital is Canberra." if "Sydney" in text else "5\nCorrect and clear."
    if text.startswith("Rate how complex"):  # Deita, answered in text (the judge fallback)
        return "6" if "weekly plan" in text else "2"
    if text.startswith("Rate the quality"):
        return "5"
    return teacher_reply(list(request.messages))


class Teacher(ScriptedModel):
    """The scripted teacher; `fail` makes every call whose prompt contains it fail."""

    def __init__(self, **kwargs) -> None:
        super().__init__(default=_reply, **kwargs)
        self.fail: str | None = None

    def _next(self, request):
        if self.fail and self.fail in request.messages[-1]["content"]:
            return Failure("timeout", "read timed out")
        return super()._next(request)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([r for r, _ in ITEMS], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text(
        json.dumps({"question": EVAL_TEXT.capitalize() + ".", "answer": "C"}) + "\n",
        encoding="utf-8",
    )
    return path


def _config(tmp_path: Path) -> RunConfig:
    overrides = [f'selector.decontam.eval_files=["{tmp_path / "eval.jsonl"}"]']
    return load_config(None, overrides, environ={})


def _models(cfg: RunConfig, teacher: Teacher) -> ModelSet:
    return ModelSet(cfg.models, cfg.roles, builder=lambda c, cache=None: teacher)


def _cached_models(cfg: RunConfig, teacher: Teacher):
    """A factory: the ModelSet gets the work store as its response cache, as the CLI's does."""
    return lambda store: ModelSet(
        cfg.models,
        cfg.roles,
        cache=store,
        builder=lambda c, cache=None: CachedModel(teacher, cache),
    )


def _load(path: Path, fmt: str = "json") -> list[dict]:
    import datasets

    return list(datasets.load_dataset(fmt, data_files=str(path), split="train"))


STEPS = "dedup,novelty,decontaminate,judge"


async def _run(tmp_path: Path, teacher: Teacher, out: str = "clean.jsonl", **kwargs):
    cfg = kwargs.pop("config", None) or _config(tmp_path)
    models = kwargs.pop("models", None) or _models(cfg, teacher)
    kwargs.setdefault("steps", STEPS)
    return await run_filter(
        tmp_path / "alpaca.json",
        tmp_path / out,
        config=cfg,
        models=models,
        budget=kwargs.pop("budget", None),
        fmt=kwargs.pop("fmt", "alpaca"),
        **kwargs,
    )


async def test_drops_the_right_items_with_the_right_reasons(tmp_path: Path, data: Path) -> None:
    teacher = Teacher()
    report = await _run(tmp_path, teacher)
    rows = _load(report.out_path)
    assert [r["instruction"] for r in rows] == [ITEMS[i][0]["instruction"] for i in KEPT]
    assert report.input_count == len(ITEMS) and report.kept_count == len(KEPT)
    expected: dict[str, dict[str, int]] = {}
    for _, fate in ITEMS:
        if fate != "kept":
            expected.setdefault(fate[0], {}).setdefault(fate[1], 0)
            expected[fate[0]][fate[1]] += 1
    assert report.counts == expected
    assert report.unfinished == {}
    saved = json.loads(report.report_path.read_text(encoding="utf-8"))
    assert report.report_path == tmp_path / "clean.jsonl.rejections.json"
    assert saved["counts"] == expected and saved["kept_count"] == len(KEPT)
    by_reason = {(g["stage"], g["reason"]): g for g in saved["reasons"]}
    for position, (record, fate) in enumerate(ITEMS):
        if fate == "kept":
            continue
        sample = by_reason[fate]["samples"][0]
        assert sample["position"] == position and sample["instruction"] == record["instruction"]
    assert by_reason[("select", "near_duplicate")]["samples"][0]["evidence"]["jaccard"] >= 0.8
    assert by_reason[("select", "contaminated")]["samples"][0]["evidence"]["eval_file"].endswith(
        "eval.jsonl"
    )
    judged = by_reason[("critique", "judge_below_threshold")]["samples"][0]
    assert judged["evidence"]["score"] == 1.0 and "Canberra" in judged["raw_output"]
    assert by_reason[("critique", "refusal")]["samples"][0]["evidence"] == "as an ai"
    # Cheap steps ran before any model call: the judge saw only what they left.
    judged_texts = [
        c.messages[-1]["content"] for c in teacher.calls if _is_judge(c.messages[-1]["content"])
    ]
    assert len(judged_texts) == len(KEPT) + 1  # the kept ones and the wrong answer
    assert not any("As an AI language model" in t or EVAL_TEXT in t for t in judged_texts)


async def test_inputs_are_filter_inputs_that_select_may_drop(tmp_path: Path, data: Path) -> None:
    """Imported rows are not seeds: a seed is never dropped, a data set's row may be."""
    from evoinstruct.store import open_store

    report = await _run(tmp_path, Teacher())
    with open_store(report.work_dir / "filter.db") as store:
        assert {e.source for e in store.iter_examples()} == {"filter_input"}
        dropped = {r["example_id"] for r in store.rejections(stage="select")}
        assert len(dropped) == sum(report.counts["select"].values())
        assert {e.status for e in store.get_many(sorted(dropped))} == {"rejected"}


async def test_a_work_dir_holding_inputs_as_seeds_is_taken_over(tmp_path: Path, data: Path) -> None:
    """An older version stored the inputs as seeds; a run reads them as filter inputs."""
    from evoinstruct.store import open_store

    teacher = Teacher()
    cfg = _config(tmp_path)
    first = await _run(tmp_path, teacher, config=cfg, models=_cached_models(cfg, teacher))
    with open_store(first.work_dir / "filter.db") as store:
        store.relabel_source("filter_input", "seed")
    calls = len(teacher.calls)
    again = await _run(tmp_path, teacher, config=cfg, models=_cached_models(cfg, teacher))
    assert len(teacher.calls) == calls
    assert again.counts == first.counts and again.kept_count == first.kept_count


async def test_a_second_run_makes_no_model_calls_and_writes_the_same(
    tmp_path: Path, data: Path
) -> None:
    teacher = Teacher()
    first = await _run(tmp_path, teacher)
    written = first.out_path.read_bytes()
    calls = len(teacher.calls)
    second = await _run(tmp_path, teacher)
    assert len(teacher.calls) == calls and second.requests == 0
    assert second.resumed and second.generation == first.generation
    assert second.out_path.read_bytes() == written
    assert second.counts == first.counts


async def test_budget_caps_the_kept_count_and_new_settings_reuse_the_cache(
    tmp_path: Path, data: Path
) -> None:
    teacher = Teacher()
    cfg = _config(tmp_path)
    await _run(tmp_path, teacher, config=cfg, models=_cached_models(cfg, teacher))
    calls = len(teacher.calls)
    report = await _run(
        tmp_path, teacher, config=cfg, models=_cached_models(cfg, teacher), budget=2
    )
    assert report.generation == 2 and not report.resumed
    assert len(teacher.calls) == calls  # every judge answer came from the response cache
    assert report.kept_count == 2 == len(_load(report.out_path))
    assert report.counts["select"]["over_budget"] == len(KEPT) - 2


async def test_a_failed_call_leaves_the_item_unfinished_until_a_rerun(
    tmp_path: Path, data: Path
) -> None:
    teacher = Teacher()
    teacher.fail = "writing a clear email"
    report = await _run(tmp_path, teacher)
    assert report.unfinished == {"model_failure:timeout": 1}
    assert report.kept_count == len(KEPT) - 1
    calls = len(teacher.calls)
    teacher.fail = None
    again = await _run(tmp_path, teacher)
    assert len(teacher.calls) == calls + 1  # only the unfinished item is judged again
    assert again.unfinished == {} and again.kept_count == len(KEPT)


async def test_rewrite_replaces_kept_outputs_in_input_order(tmp_path: Path, data: Path) -> None:
    teacher = Teacher()
    report = await _run(
        tmp_path, teacher, out="clean.json", steps="dedup,judge,rewrite", fmt="sharegpt"
    )
    rows = _load(report.out_path)
    assert report.rewritten_count == report.kept_count == len(rows)
    firsts = [r["conversations"][0]["value"] for r in rows]
    kept = [ITEMS[i][0]["instruction"] for i in KEPT]
    assert firsts == kept[:3] + [ITEMS[7][0]["instruction"]] + kept[3:]  # no decontaminate here
    assert all(
        "In short: the points above answer the question." in r["conversations"][1]["value"]
        for r in rows
    )


async def test_a_failed_rewrite_call_is_retried_by_the_next_run(tmp_path: Path, data: Path) -> None:
    teacher = Teacher()
    teacher.fail = "Below is an instruction of the type"  # the ReAlign rewrite prompt
    report = await _run(tmp_path, teacher, steps="dedup,judge,rewrite")
    assert report.rewritten_count == 0 and report.kept_count == len(KEPT) + 1
    teacher.fail = None
    again = await _run(tmp_path, teacher, steps="dedup,judge,rewrite")
    assert again.resumed and again.rewritten_count == again.kept_count == report.kept_count


async def test_parquet_and_tags_with_diversity(tmp_path: Path, data: Path) -> None:
    def tagger(request) -> str:
        text = request.messages[-1]["content"]
        if text.startswith("Identify the user intentions"):
            return json.dumps([{"tag": "explanation", "explanation": "x"}])
        return _reply(request)

    teacher = Teacher()
    teacher.default = tagger
    report = await _run(
        tmp_path, teacher, out="clean.parquet", steps="dedup,tags", fmt="parquet", budget=3
    )
    rows = _load(report.out_path, "parquet")
    assert len(rows) == report.kept_count == 3
    assert set(rows[0]) >= {"instruction", "input", "output"}


def _losses(prompt, answer: str) -> list[float]:
    """Answer losses: a longer instruction helps less (higher IFD); the wrong answer gets IFD > 1."""
    if not prompt:
        return [1.5]
    return [2.0] if "Sydney" in answer else [1.0 + len(prompt[-1]["content"]) / 1000]


async def test_ifd_drops_above_1_and_ranks_the_budget(tmp_path: Path, data: Path) -> None:
    teacher = Teacher(losses=_losses)
    report = await _run(tmp_path, teacher, steps="dedup,ifd", budget=3)
    assert report.counts["critique"] == {"refusal": 1, "ifd_above_1": 1}
    assert report.counts["select"] == {"exact_duplicate": 1, "near_duplicate": 1, "over_budget": 3}
    # The three longest instructions have the highest IFD; the output keeps the input order.
    rows = _load(report.out_path)
    assert [r["instruction"] for r in rows] == [ITEMS[i][0]["instruction"] for i in (4, 7, 11)]


async def test_deita_scores_rank_and_diversity_filters(tmp_path: Path, data: Path) -> None:
    teacher = Teacher()
    report = await _run(tmp_path, teacher, steps="dedup,deita,diversity", budget=1)
    rows = _load(report.out_path)
    assert [r["instruction"] for r in rows] == [ITEMS[4][0]["instruction"]]  # complexity 6
    assert report.counts["select"]["over_budget"] == len(KEPT) - 1 + 2  # + the Sydney and fox items


def test_steps_are_parsed_and_checked() -> None:
    assert parse_steps("judge, dedup") == ["dedup", "judge"]
    assert parse_steps(None) == ["dedup", "judge"]
    for bad in ("dedup,bogus", " , "):
        with pytest.raises(InputError) as err:
            parse_steps(bad)
        assert err.value.field == "--steps" and err.value.exit_code == 2


async def test_bad_setups_raise_before_anything_is_written(tmp_path: Path, data: Path) -> None:
    teacher = Teacher()
    cfg = load_config(None, environ={})
    with pytest.raises(InputError, match="evaluation files"):
        await _run(tmp_path, teacher, config=cfg, steps="decontaminate")
    with pytest.raises(InputError, match="overwrite"):
        await _run(tmp_path, teacher, out="alpaca.json")
    with pytest.raises(InputError):
        await _run(tmp_path, teacher, fmt="xml")
    assert not (tmp_path / "clean.jsonl.work").exists()
    await _run(tmp_path, teacher, steps="dedup")
    data.write_text(json.dumps([ITEMS[0][0]]), encoding="utf-8")
    with pytest.raises(ProjectError, match="another input"):
        await _run(tmp_path, teacher, steps="dedup")


def test_instag_diversity_without_tagging_is_refused_by_run_and_filter(
    tmp_path: Path, capsys
) -> None:
    """One rule for both commands: InsTag sampling with no tags would reject every example."""
    from evoinstruct.cli.filtering.pipeline import plan_filter
    from evoinstruct.graph.project import init_project
    from evoinstruct.store.errors import ConfigError

    bad = ["selector.diversity.method=instag"]
    with pytest.raises(ConfigError) as err:
        load_config(None, bad, environ={})
    assert err.value.field == "selector.diversity.method" and err.value.exit_code == 2
    assert "selector.diversity.method" in str(err.value)
    assert "critic.instag.enabled" in str(err.value)
    # Tagging on, or no diversity step: combinations that work load as before.
    config = load_config(None, [*bad, "critic.instag.enabled=true"], environ={})
    load_config(None, [*bad, 'selector.steps=["exact_dedup"]'], environ={})
    # The filter asks the same function, with its tags step as the switch.
    with pytest.raises(ConfigError, match="the tags step"):
        plan_filter(config, ["dedup", "diversity"], None)
    assert plan_filter(config, ["dedup", "tags"], None).final.diversity.method == "instag"
    # `evoinstruct run` says it in one line and exits 2, before anything starts.
    project = init_project(tmp_path / "proj").root
    result = run_cli(capsys, "run", "--project", project, "--no-check", "--set", bad[0])
    assert result.code == 2 and result.err.startswith("error:")
    assert "critic.instag.enabled" in result.err and len(result.err.strip().splitlines()) == 1
    assert not (project / "checkpoints.db").exists()


def test_score_keys_are_checked_against_the_critics_dimensions() -> None:
    """A threshold or rank key no critic part scores is refused at load, with the known
    names and the closest one: with missing_score="pass" it would filter nothing."""
    from evoinstruct.store.errors import ConfigError

    for bad, field, meant in [
        ("selector.min_scores.qualty=4", "selector.min_scores.qualty", "quality"),
        ("selector.max_scores.ifdd=1.0", "selector.max_scores.ifdd", "ifd"),
        ('selector.rank_by=["complexity","acuracy"]', "selector.rank_by", "accuracy"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(None, [bad], environ={})
        message = str(err.value)
        assert err.value.field == field and err.value.exit_code == 2
        assert f"did you mean {meant!r}?" in message and "known: accuracy, combined" in message
        assert "\n" not in message
    with pytest.raises(ConfigError, match="no critic scores 'zzz'; known: "):
        load_config(None, ["selector.min_scores.zzz=1"], environ={})
    # Every part's dimensions load, enabled or not; the judge's are the configured ones.
    load_config(
        None,
        [
            'critic.judge.dimensions=["creativity"]',
            "selector.min_scores.creativity=4",
            "selector.min_scores.output_words=20",
            "selector.max_scores.ifd=1.0",
            "selector.min_scores.tag_count=2",
            "selector.min_scores.all_constraints=1",
            "selector.min_scores.keywords:frequency:loose=1",
            'selector.rank_by=["combined"]',
        ],
        environ={},
    )
    with pytest.raises(ConfigError, match="did you mean 'creativity'"):
        load_config(
            None,
            ['critic.judge.dimensions=["creativity"]', "selector.min_scores.creativty=4"],
            environ={},
        )


def _project_with_misspelt_threshold(tmp_path: Path) -> tuple[Path, int]:
    from evoinstruct.graph.project import init_project

    project = init_project(tmp_path / "proj").root
    config = project / "evoinstruct.toml"
    text = config.read_text(encoding="utf-8")
    assert "\nmin_scores = {}\n" in text
    config.write_text(text.replace("\nmin_scores = {}\n", "\nmin_scores = { qualty = 4 }\n"))
    line = config.read_text(encoding="utf-8").splitlines().index("min_scores = { qualty = 4 }") + 1
    return project, line


def test_misspelt_score_key_stops_run_before_any_write(capsys, tmp_path: Path) -> None:
    project, line = _project_with_misspelt_threshold(tmp_path)
    pool = (project / "pool.db").read_bytes()
    result = run_cli(capsys, "run", "--project", project, "--no-check")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert f"evoinstruct.toml:{line}, field 'selector.min_scores.qualty'" in result.err
    assert "did you mean 'quality'?" in result.err
    assert (project / "pool.db").read_bytes() == pool
    assert not (project / "checkpoints.db").exists()


def test_misspelt_score_key_stops_filter_before_any_write(
    cli_app, capsys, tmp_path: Path, data: Path
) -> None:
    project, line = _project_with_misspelt_threshold(tmp_path)
    out = tmp_path / "out.jsonl"
    for args, said in (
        (["--project", project], f"evoinstruct.toml:{line}, field 'selector.min_scores.qualty'"),
        (["--set", "selector.max_scores.ifdd=1.0"], "did you mean 'ifd'?"),
    ):
        result = run_cli(capsys, "filter", data, "-o", out, "--steps", "dedup,ifd", *args)
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
        assert said in result.err
        assert not out.exists() and not Path(f"{out}.work").exists()


@pytest.fixture
def cli_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root CLI's error handling around an app holding `filter`, registered as the lead will."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("filter")(filter_cli)
    app.command("noop", hidden=True)(lambda: None)
    monkeypatch.setattr(root_cli, "app", app)


def test_cli_bad_steps_exit_2(cli_app, capsys, tmp_path: Path, data: Path) -> None:
    result = run_cli(
        capsys, "filter", data, "-o", tmp_path / "out.jsonl", "--steps", "dedup,judgment"
    )
    assert result.code == 2
    assert "--steps" in result.err and "judgment" in result.err
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_model_free_run_prints_json(cli_app, capsys, tmp_path: Path, data: Path) -> None:
    args = ["filter", data, "-o", tmp_path / "out.jsonl", "--steps", "dedup,decontaminate"]
    args += ["--eval-file", tmp_path / "eval.jsonl", "--json", "--project", tmp_path]
    result = run_cli(capsys, *args)
    assert result.code == 0, result.err
    report = result.json()
    assert report["counts"]["select"] == {
        "exact_duplicate": 1,
        "near_duplicate": 1,
        "contaminated": 1,
    }
    assert report["counts"]["critique"] == {"refusal": 1}  # statistics always run, model-free
    assert report["kept_count"] == len(_load(tmp_path / "out.jsonl"))


def test_filter_command_prints_a_summary(capsys, tmp_path: Path, data: Path) -> None:
    code = filter_command(data, tmp_path / "o.jsonl", "dedup", None, None, None, None, [], False)
    out = capsys.readouterr().out
    assert code == 0 and "Kept" in out and "exact_duplicate" in out
    assert "Thresholds left out" not in out


def test_filter_names_the_thresholds_its_steps_do_not_score(
    capsys, tmp_path: Path, data: Path
) -> None:
    """A known dimension no chosen step scores is left out of the selection, and said."""
    bounds = ["selector.min_scores.quality=4", "selector.max_scores.output_words=900"]
    code = filter_command(
        data, tmp_path / "o.jsonl", "dedup", None, None, None, None, bounds, False
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Thresholds left out, no chosen step scores them: selector.min_scores.quality\n" in out


def _server_sets(url: str) -> list[str]:
    sets = [f'models.teacher.base_url="{url}"', 'models.teacher.model="teacher"']
    return sets + ["models.teacher.max_retries=0", 'roles.student="teacher"']


class _Request:
    def __init__(self, messages: list) -> None:
        self.messages = messages


def test_cli_over_http_resumes_from_the_store_and_the_cache(
    cli_app, capsys, tmp_path: Path, data: Path
) -> None:
    from tests.openai_server import OpenAITestServer

    out = tmp_path / "clean.jsonl"
    with OpenAITestServer(
        models=("teacher",), reply=lambda body: _reply(_Request(body["messages"]))
    ) as server:
        args = ["filter", data, "-o", out, "--steps", "dedup,judge", "--json"]
        for item in _server_sets(server.url):
            args += ["--set", item]
        first = run_cli(capsys, *args)
        assert first.code == 0, first.err
        requests = server.requests
        # One judge call per item the cheap steps and statistics left: the kept, Sydney, the fox.
        assert requests == len(KEPT) + 2
        again = run_cli(capsys, *args)
        assert again.json()["resumed"] and server.requests == requests
        budget = run_cli(capsys, *args, "--budget", "2")
        assert budget.json()["kept_count"] == 2 and server.requests == requests  # all cached
    assert first.json()["counts"]["critique"] == {"refusal": 1, "judge_below_threshold": 1}


def test_cli_unreachable_model_leaves_items_unfinished_exit_1(
    cli_app, capsys, tmp_path: Path, data: Path
) -> None:
    from tests.openai_server import closed_port

    args = ["filter", data, "-o", tmp_path / "clean.jsonl", "--steps", "dedup,judge"]
    for item in _server_sets(f"http://127.0.0.1:{closed_port()}/v1"):
        args += ["--set", item]
    result = run_cli(capsys, *args)
    assert result.code == 1
    assert "7 examples are unfinished (model_failure:connection 7)" in result.out
    saved = json.loads((tmp_path / "clean.jsonl.rejections.json").read_text(encoding="utf-8"))
    assert saved["kept_count"] == 0 and saved["unfinished_count"] == len(KEPT) + 2
