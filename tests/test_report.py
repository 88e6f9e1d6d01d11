"""`evoinstruct report`: PNGs and one self-contained, escaped HTML page over a real pool."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import struct
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from evoinstruct.agents.text import tokenize
from evoinstruct.cli.commands.report import report_command
from evoinstruct.cli.report.build import (
    PLOTS,
    ReportConfig,
    ReportResult,
    build_report,
    distinct_n,
    mean_pairwise_distance,
    measure_diversity,
)
from evoinstruct.store import open_store
from evoinstruct.store.errors import ProjectError, UnsupportedError
from evoinstruct.store.records import Example, ExampleDraft, Rejection, Score
from evoinstruct.store.seeds import add_seed_file

XSS = "<script>alert(1)</script> 请用三句话解释光合作用。"
EN_SEEDS = [
    json.loads(line)["instruction"]
    for line in (resources.files("evoinstruct.prompts") / "seeds" / "seed_tasks_en.jsonl")
    .read_text(encoding="utf-8")
    .splitlines()
]
NEAR_COPIES = [f"Write a short poem about the sea, version {i}." for i in range(8)]
DIVERSE = [
    "Translate the following legal clause into plain everyday language for a tenant.",
    "Estimate how many piano tuners work in Chicago and show your reasoning.",
    "Draft a polite email declining a wedding invitation because of travel costs.",
    "Which chemical reaction makes bread dough rise, and why does kneading matter?",
    "Convert this recipe from imperial cups and ounces to grams and millilitres.",
    "Debug the Python function below; it returns None instead of the sorted list.",
    "Compose a haiku about autumn fog rolling over quiet harbour cranes.",
    "Summarize three key causes of the 1929 stock market crash for high-school students.",
]


# What trainer.train and trainer.evaluate store for a version (shapes as in the trainer).
TRAINED = {
    "train_loss": 1.8,
    "heldout_loss": 2.0,  # the trainer's own figure; the evaluation's (below) wins
    "global_step": 30,
    "log_history": [
        {"epoch": 1.0, "loss": 2.4, "step": 10, "learning_rate": 0.003},
        {"epoch": 2.0, "loss": 2.0, "step": 20},
        {"epoch": 3.0, "loss": 1.7, "step": 30},
        {"epoch": 3.0, "step": 30, "train_loss": 1.8, "train_runtime": 9.0},  # summary
    ],
}
EVALUATION = {
    "heldout_loss": 1.95,
    "heldout_examples": 4,
    "baseline_version": "v1",
    "baseline_loss": 2.1,
    "pairwise": None,
    "gate": {"promote": True, "reason": "held-out loss 1.9500 < 2.1000 of v1"},
}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def seeds_store(path: Path):
    store = open_store(path)
    add_seed_file(store, resources.files("evoinstruct.prompts") / "seeds" / "seed_tasks_en.jsonl")
    return store


def add_round(store, round: int, instructions: list[str], status: str = "accepted") -> list[str]:
    drafts = [
        ExampleDraft(i, output=f"answer {n}", source="generated", operation="self_instruct")
        for n, i in enumerate(instructions)
    ]
    return store.add_candidates(drafts, round, status=status).ids


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real rounds with the scripted teacher, then an escaped-text round and two versions."""
    from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
    from evoinstruct.graph.project import init_project
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.models.factory import ModelSet
    from tests.fake_teacher import scripted_teacher

    root = tmp_path_factory.mktemp("report") / "proj"
    proj = init_project(root)
    cfg = proj.load_config()
    teacher = scripted_teacher()
    models = ModelSet(cfg.models, cfg.roles, builder=lambda c, cache=None: teacher)
    deps = deps_for_project(proj, cfg, models=models)
    store = deps.store
    add_seed_file(store, root / "seeds" / "seed_tasks_en.jsonl")
    asyncio.run(Daemon(proj, deps, DaemonOptions(rounds=2)).run())
    # Round 3 has no scores at all; a Chinese dimension and reason go through the plots.
    store.start_round(3, {})
    ids = add_round(store, 3, [XSS])
    store.finish_round(3, {"stages": {"generate": {"calls": 2, "tokens": 300}}})
    round1 = next(store.iter_examples(round=1, status="accepted"))
    store.record_scores([Score(round1.id, "judge", "准确性", 4.0)], 1)
    store.record_rejections([Rejection("critique", "评分过低", text="太短")], 3)
    store.update_meta(ids[0], note="<b>meta</b>")
    # v1 and v2 keep their figures flat in `metrics` (hand-registered versions); v3 is
    # registered as the trainer and the evaluation write it: figures under `evaluation`.
    metrics = {"heldout_loss": 2.1, "baseline_loss": 2.5, "train_loss": 1.9}
    for version, m, promote in (
        ("v1", metrics, True),
        (
            "v2",
            {**metrics, "heldout_loss": 2.6, "gate": {"promote": False, "reason": "a<b"}},
            False,
        ),
        ("v3", TRAINED, True),
    ):
        store.register_model_version(
            version,
            base="tiny",
            method="lora",
            path="/m",
            round=2,
            metrics=m,
            config={"logging_steps": 10} if version == "v3" else {},
        )
        if version == "v3":
            store.update_model_metrics("v3", {"evaluation": EVALUATION})
        if promote:
            store.set_promoted(version, "better held-out loss")
    store.close()
    return root


def test_report_on_a_real_project(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert report_command(project, None, as_json=True) == 0
    assert not [w for w in caught if "Glyph" in str(w.message)]
    result = json.loads(capsys.readouterr().out)
    assert Path(result["html"]) == project / "reports" / "report.html"
    assert set(result["pngs"]) == set(PLOTS)
    page = Path(result["html"]).read_text(encoding="utf-8")
    for path in map(Path, result["pngs"].values()):
        width, height = png_size(path)
        assert width > 300 and height > 200
        assert base64.b64encode(path.read_bytes()).decode() in page  # embedded, not linked
    assert 'src="http' not in page and "<link" not in page
    # Model text is escaped: the page holds no script element at all, only its text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 请用三句话解释光合作用。" in page
    assert "<script" not in page.lower()
    assert "a&lt;b" in page  # the gate reason of v2
    assert "v1" in page and "v2" in page
    assert "generated (self_instruct)" in page and "rewritten (realign:open_qa)" in page
    assert [a["round"] for a in result["alerts"]] == [1, 2]  # the scripted teacher's templates


def test_text_output_to_a_chosen_directory(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report_command(project, tmp_path / "out", as_json=False) == 0
    out = capsys.readouterr().out
    assert f"Report: {tmp_path / 'out' / 'report.html'}" in out
    assert "ALERT round 1" in out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(
        f"{name}.png" for name in PLOTS
    )


def test_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectError):
        report_command(tmp_path, None, as_json=False)


def test_alert_fires_when_a_round_repeats_itself(tmp_path: Path) -> None:
    store = seeds_store(tmp_path / "pool.db")
    add_round(store, 1, DIVERSE)
    add_round(store, 2, NEAR_COPIES)
    result = build_report(store, tmp_path / "report")
    assert [a.round for a in result.alerts] == [2]
    assert set(result.alerts[0].metrics) == {"distinct1", "distinct2", "spread"}
    page = result.html.read_text(encoding="utf-8")
    assert "ALERT round 2" in page and "ALERT round 1" not in page


def test_no_alert_when_rounds_are_diverse(tmp_path: Path) -> None:
    store = seeds_store(tmp_path / "pool.db")
    add_round(store, 1, DIVERSE)
    add_round(store, 1, NEAR_COPIES, status="rejected")  # only accepted ones are measured
    result = build_report(store, tmp_path / "report")
    assert result.alerts == []
    assert "No diversity alerts" in result.html.read_text(encoding="utf-8")


def test_small_rounds_are_not_measured(tmp_path: Path) -> None:
    store = seeds_store(tmp_path / "pool.db")
    add_round(store, 1, NEAR_COPIES[:3])
    result = build_report(store, tmp_path / "report")
    assert result.alerts == []
    assert any("round 1: 3 new instructions, too few" in n for n in result.notes)


def test_empty_pool(tmp_path: Path) -> None:
    store = open_store(tmp_path / "pool.db")
    result = build_report(store, tmp_path / "report")
    assert set(result.pngs) == set(PLOTS)
    for path in result.pngs.values():
        png_size(path)
    page = result.html.read_text(encoding="utf-8")
    assert "No accepted examples yet" in page and "No rounds yet" in page
    assert result.alerts == []


def test_only_chinese_seeds(tmp_path: Path) -> None:
    store = open_store(tmp_path / "pool.db")
    add_seed_file(store, resources.files("evoinstruct.prompts") / "seeds" / "seed_tasks_zh.jsonl")
    result = build_report(store, tmp_path / "report", config=ReportConfig(samples_per_round=8))
    page = result.html.read_text(encoding="utf-8")
    assert "为早上只有十分钟时间的人推荐一份健康早餐。" in page
    assert result.alerts == []
    for path in result.pngs.values():
        png_size(path)


# --- the diversity measures ------------------------------------------------------------------


def test_distinct_n() -> None:
    assert distinct_n([["a", "b"], ["a", "b"]], 1) == 0.5
    assert distinct_n([["a", "b"], ["a", "b"]], 2) == 0.5
    assert distinct_n([["a", "b", "c"]], 2) == 1.0
    assert distinct_n([["a"], []], 2) is None  # no bigram anywhere


def test_mean_pairwise_distance() -> None:
    assert mean_pairwise_distance(np.eye(3)) == pytest.approx(1.0)
    assert mean_pairwise_distance(np.ones((4, 5))) == pytest.approx(0.0, abs=1e-6)
    pair = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert mean_pairwise_distance(pair) == pytest.approx(1 - 2**-0.5)
    assert mean_pairwise_distance(np.ones((1, 3))) is None


def test_distinct_n_compares_equal_sizes() -> None:
    # Distinct-n falls as a set grows: the round is measured at the seeds' size, not its own.
    div = measure_diversity(EN_SEEDS, {1: DIVERSE + DIVERSE}, ReportConfig())
    row = div.rows[0]
    assert row.k == len(EN_SEEDS) == 8
    whole = distinct_n([tokenize(t) for t in DIVERSE + DIVERSE], 1)
    assert row.values["distinct1"] > whole  # subsampled to 8, not penalized for size


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_given_embedder_is_used(asynchronous: bool) -> None:
    calls: list[list[str]] = []

    def vectors(texts):
        calls.append(list(texts))
        # Seeds point one way each; round texts all the same way: spread 0 for the round.
        return [[1.0, 0.0] if t in NEAR_COPIES else [0.0, 1.0] for t in texts]

    async def async_vectors(texts):
        return vectors(texts)

    div = measure_diversity(
        EN_SEEDS, {1: NEAR_COPIES}, ReportConfig(), async_vectors if asynchronous else vectors
    )
    assert len(calls) == 1 and len(calls[0]) == len(EN_SEEDS) + len(NEAR_COPIES)
    assert div.embedding == "the configured embedder"
    assert div.rows[0].values["spread"] == pytest.approx(0.0, abs=1e-6)


def test_an_embedder_that_cannot_embed_falls_back() -> None:
    def unsupported(texts):
        raise UnsupportedError("this backend cannot embed")

    div = measure_diversity(EN_SEEDS, {1: DIVERSE}, ReportConfig(), unsupported)
    assert div.embedding.startswith("hashed TF-IDF (embedder failed")
    assert div.rows[0].values["spread"] is not None


class FakeEmbedder:
    """The model boundary only: an async `embed` and `aclose`, as a ChatModel has."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.closed = False

    async def embed(self, texts):
        self.texts += texts
        return [[float(len(t)), 1.0] for t in texts]

    async def aclose(self) -> None:
        self.closed = True


def test_the_configured_embedder_is_used_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.project import init_project
    from evoinstruct.models import factory

    config = RunConfig()
    config.roles.embedder = "teacher"
    proj = init_project(tmp_path / "proj", config)
    with proj.open_store() as store:
        add_seed_file(store, proj.root / "seeds" / "seed_tasks_en.jsonl")
        add_round(store, 1, DIVERSE)
    fake = FakeEmbedder()
    real = factory.ModelSet
    monkeypatch.setattr(
        factory, "ModelSet", lambda *a, **k: real(*a, **k, builder=lambda c, cache=None: fake)
    )
    assert report_command(proj.root, None, as_json=True) == 0
    assert Path(json.loads(capsys.readouterr().out)["html"]).is_file()
    assert sorted(fake.texts) == sorted(EN_SEEDS + DIVERSE) and fake.closed
    page = (proj.root / "reports" / "report.html").read_text(encoding="utf-8")
    assert "embedding: the configured embedder" in page


# --- the data behind each plot ---------------------------------------------------------------


def readonly(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


@pytest.fixture(scope="module")
def built(project: Path, tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    from evoinstruct.graph.project import Project

    store = Project(project).open_store()
    try:
        return build_report(store, tmp_path_factory.mktemp("built"))
    finally:
        store.close()


def test_student_rows_are_the_stored_evaluation(project: Path, built: ReportResult) -> None:
    # The old report read metrics["baseline_loss"], which the evaluation never writes: it
    # keeps its figures under metrics["evaluation"]; the baseline bar and table cell were empty.
    assert built.data is not None
    rows = {s.version: s for s in built.data.students}
    v3 = rows["v3"]
    assert (v3.baseline_loss, v3.heldout_loss) == (2.1, 1.95)
    assert v3.baseline_version == "v1" and v3.heldout_examples == 4 and v3.train_loss == 1.8
    assert v3.verdict is True and v3.reason == EVALUATION["gate"]["reason"]
    assert v3.active and v3.promoted
    # Flat figures (a hand-registered version) are still read.
    assert (rows["v1"].baseline_loss, rows["v1"].heldout_loss) == (2.5, 2.1)
    assert rows["v1"].verdict is None and rows["v1"].baseline_name == "base model"
    assert rows["v2"].verdict is False and rows["v2"].reason == "a<b"
    page = built.html.read_text(encoding="utf-8")
    assert "held-out loss 1.9500 &lt; 2.1000 of v1" in page
    assert "<td>2.100</td><td>1.950</td><td>-0.150</td>" in page  # baseline, held-out, Δ


def test_the_student_plot_draws_both_loss_bars_as_a_diagnostic(built: ReportResult) -> None:
    from evoinstruct.cli.report import palette
    from evoinstruct.cli.report.plots import plot_student

    assert built.data is not None
    fig = plot_student(built.data)
    suite, loss = fig.axes[0], fig.axes[1]
    bars = loss.patches
    n = len(built.data.students)
    baseline, candidate = bars[:n], bars[n : 2 * n]
    assert [b.get_height() for b in baseline] == [2.5, 2.5, 2.1]
    assert [b.get_height() for b in candidate] == [2.1, 2.6, 1.95]
    # Loss is not the gate: its bars carry no verdict colour (a worse loss in green misled).
    colors = {b.get_facecolor()[:3] for b in candidate}
    assert to_rgb(palette.ACCEPTED) not in colors and to_rgb(palette.REJECTED) not in colors
    assert "not the gate" in loss.get_title()
    # These versions were gated on loss: the suite panel says so instead of drawing points.
    texts = [t.get_text() for t in suite.texts]
    assert texts.count("no suite result:\ngated on loss") == 3


def test_the_student_plot_shows_what_the_gate_decided_on() -> None:
    """Per version and part, both versions' suite accuracy with its interval; the gated parts
    shaded; above them the verdict with the paired difference and the power."""
    from types import SimpleNamespace

    from evoinstruct.cli.report import palette
    from evoinstruct.cli.report.data import student_rows
    from evoinstruct.cli.report.plots import plot_student

    def interval(value: float) -> dict[str, float]:
        return {"value": value, "low": value - 0.05, "high": value + 0.05}

    def summary(values: dict[str, float]) -> dict[str, Any]:
        return {
            "accuracy": {"prompt_strict": interval(0.2)},
            "by_part": {
                k: {"n": 100, "accuracy": {"prompt_strict": interval(v)}} for k, v in values.items()
            },
        }

    parts = ("in_distribution", "held_out_phrasing", "held_out_type")
    evaluation = {
        "heldout_loss": 1.93,
        "baseline_loss": 1.79,
        "gate": {"promote": True, "reason": "verifiable ..."},
        "verifiable": {
            "comparison": {"diff": 0.09, "low": 0.03, "high": 0.15, "n": 200, "parts": parts[1:]},
            "power": {"detectable_points": 5.6},
            "by_part": {p: {"diff": 0.1, "low": 0.0, "high": 0.2} for p in parts},
            "candidate": summary(dict(zip(parts, (0.35, 0.25, 0.21), strict=True))),
            "baseline": summary(dict(zip(parts, (0.16, 0.15, 0.13), strict=True))),
        },
    }
    versions = [{"version": "v1", "metrics": {"evaluation": evaluation}, "promoted": True}]
    [row] = student_rows(versions)
    assert [p.part for p in row.suite] == list(parts)
    assert [p.gated for p in row.suite] == [False, True, True] and row.power == 5.6
    fig = plot_student(SimpleNamespace(students=[row]))
    ax = fig.axes[0]
    points = {
        (round(float(line.get_ydata()[0]), 3), line.get_markerfacecolor())
        for line in ax.lines
        if line.get_marker() == "o" and len(line.get_ydata()) == 1
    }
    green = to_rgb(palette.ACCEPTED)
    assert {y for y, c in points if to_rgb(c) == green} == {35.0, 25.0, 21.0}
    assert {y for y, c in points if to_rgb(c) == to_rgb(palette.BASELINE)} == {16.0, 15.0, 13.0}
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "gate: promote" in texts and "held-out parts: +9.0 pts" in texts
    assert "(95% CI +3.0..+15.0)" in texts and "power: +5.6 pts at 80%" in texts
    shaded = [p for p in ax.patches if p.get_facecolor()[:3] == to_rgb("#eceff1")]
    assert len(shaded) == 2  # held-out phrasing and held-out type


def test_loss_curves_are_the_stored_log(built: ReportResult) -> None:
    from evoinstruct.cli.report.plots import plot_training

    assert built.data is not None
    curves = {c.version: c for c in built.data.curves}
    history = TRAINED["log_history"]
    assert curves["v3"].steps == [e["step"] for e in history if "loss" in e] == [10, 20, 30]
    assert curves["v3"].losses == [2.4, 2.0, 1.7]  # the run's summary entry is no point
    assert curves["v3"].heldout_loss == 1.95 and curves["v3"].logging_steps == 10
    assert curves["v1"].steps == [] and curves["v2"].steps == []
    fig = plot_training(built.data)
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [10, 20, 30] and list(line.get_ydata()) == [2.4, 2.0, 1.7]
    assert fig.axes[0].get_xlabel() == "optimizer step"


COHORT = "CASE WHEN e.source = 'rewritten' AND p.id IS NOT NULL THEN p.round ELSE e.round END"


def test_funnels_equal_sql_counts(project: Path, built: ReportResult) -> None:
    assert built.data is not None
    funnels = {f.round: f for f in built.data.funnels}
    assert set(funnels) == {1, 2, 3}
    with readonly(project / "pool.db") as db:

        def count(sql: str, *args: object) -> int:
            return db.execute(sql, args).fetchone()[0]

        base = (
            "FROM examples e LEFT JOIN examples p ON p.id = e.parent_id "
            f"WHERE e.source != 'seed' AND {COHORT} = ?"
        )
        for n, funnel in funnels.items():
            accepted = count(f"SELECT count(*) {base} AND e.status = 'accepted'", n)
            waiting = count(f"SELECT count(*) {base} AND e.status = 'candidate'", n)
            rejected = count(f"SELECT count(*) {base} AND e.status = 'rejected'", n)
            stored = count(f"SELECT count(*) {base} AND e.source != 'rewritten'", n)
            assert (funnel.accepted, funnel.waiting) == (accepted, waiting)
            assert funnel.kept == accepted + waiting and funnel.unaccounted == 0
            examples = [s for s in funnel.stages if s.unit == "examples"]
            assert examples[0].entered == stored
            assert sum(s.dropped for s in examples) == rejected
            for stage in examples:
                if stage.name in ("eliminate", "stored"):
                    continue
                dropped = count(
                    "SELECT count(DISTINCT r.example_id) FROM rejections r "
                    "JOIN examples e ON e.id = r.example_id "
                    "LEFT JOIN examples p ON p.id = e.parent_id "
                    f"WHERE r.stage = ? AND e.status = 'rejected' AND e.source != 'seed' "
                    f"AND r.reason NOT LIKE 'model_failure:%' AND {COHORT} = ?",
                    stage.name,
                    n,
                )
                assert stage.dropped == dropped, (n, stage)
            for stage in (s for s in funnel.stages if s.unit == "drafts"):
                source = {"generate": "generated", "evolve": "evolved"}[stage.name]
                made = count(
                    "SELECT count(*) FROM examples WHERE round = ? AND source = ?", n, source
                )
                assert stage.kept == made
    assert sum(funnels[1].stages[0].reasons.values()) >= funnels[1].stages[0].dropped
    # The fixture's hand-recorded critique verdict names no example: it dropped nothing.
    assert funnels[3].recorded_only == 1 and funnels[3].kept == 1
    assert "top drop reasons (rejection events)" in built.html.read_text(encoding="utf-8")


def example(id: str, **fields: object) -> Example:
    values: dict = {
        "instruction": f"task {id}",
        "output": "an answer",
        "round": 1,
        "status": "accepted",
        "language": "en",
        **fields,
    }
    return Example(id=id, **values)


def test_a_funnel_counts_each_item_once() -> None:
    from evoinstruct.cli.report.funnel import DUPLICATE, build_funnels

    seed = example("s", source="seed", round=0)
    pool = [
        seed,
        example("g1"),  # generated, kept to the end
        example("g2", status="rejected"),  # two critique reasons, one example
        example("e1", source="evolved", parent_id="s", status="rejected"),  # eliminated
        example("w0", status="superseded"),
        example("w1", source="rewritten", parent_id="w0", round=2),  # stands in for w0
        example("c1", status="candidate"),  # a failed judge call left it waiting
    ]

    def row(stage: str, reason: str, example_id: str | None, text: str = "t") -> dict:
        return {"stage": stage, "reason": reason, "example_id": example_id, "text": text,
                "round": 1, "id": f"{stage}{reason}{example_id}{text}"}  # fmt: skip

    rows = [
        row("generate", "malformed_instance", None, "draft A"),
        row("generate", "no_valid_instances", None, "draft A"),  # the same draft again
        row("generate", "too_short", None, "draft B"),
        row("evolve", "truncated", "s", "child of s"),  # a dropped child names its parent
        row("evolve", "stopwords_only", "e1"),  # the check of an answered child
        row("critique", "output_too_short", "g2"),
        row("critique", "repetitive", "g2"),
        row("critique", "model_failure:timeout", "c1"),  # no verdict
        row("critique", "judge_below_threshold", "s"),  # a seed is never dropped
    ]
    counts = {1: {"stages": {"generate": {"duplicates": 1}, "respond": {"eliminated": 1},
                             "critique": {}, "rewrite": {}, "select": {}}}}  # fmt: skip
    (funnel,) = build_funnels(pool, rows, counts)
    stages = {s.name: s for s in funnel.stages}
    assert [s.name for s in funnel.stages] == [
        "generate", "evolve", "respond", "eliminate", "critique", "rewrite", "select"
    ]  # fmt: skip
    # 4 generated stored + 2 distinct dropped drafts + 1 store-level duplicate
    assert (stages["generate"].entered, stages["generate"].kept) == (4 + 2 + 1, 4)
    assert stages["generate"].reasons == {
        "malformed_instance": 1, "no_valid_instances": 1, "too_short": 1, DUPLICATE: 1
    }  # fmt: skip
    assert (stages["evolve"].entered, stages["evolve"].kept) == (2, 1)
    assert (stages["eliminate"].entered, stages["eliminate"].dropped) == (5, 1)
    assert stages["critique"].dropped == 1  # g2 once, with both its reasons as events
    assert stages["critique"].reasons == {"output_too_short": 1, "repetitive": 1}
    assert (stages["select"].entered, stages["select"].kept) == (3, 3)
    assert stages["rewrite"].note.startswith("1 rewritten")
    assert (funnel.accepted, funnel.waiting, funnel.unaccounted) == (2, 1, 0)
    assert funnel.failed_calls == {"critique": 1} and funnel.recorded_only == 1


def test_length_histograms_count_every_example(built: ReportResult) -> None:
    assert built.data is not None
    examples = [e for e in built.data.examples if e.status != "superseded"]
    instruction, response = built.data.lengths
    assert sum(instruction.sizes.values()) == len(examples)
    for hist in built.data.lengths:
        for group, counts in hist.counts.items():
            assert sum(counts) == hist.sizes[group]
            assert len(counts) == len(hist.edges) - 1
    answered = [e for e in examples if e.output is not None]
    assert sum(response.sizes.values()) == len(answered)
    assert response.left_out == len(examples) - len(answered)
    assert instruction.sizes["seed"] == sum(1 for e in examples if e.source == "seed")
    assert instruction.sizes["accepted"] == sum(
        1 for e in examples if e.source != "seed" and e.status == "accepted"
    )


def test_lengths_count_a_cjk_character_as_one_word() -> None:
    from evoinstruct.cli.report.data import length_histograms

    pool = [
        example("a", instruction="用Python写代码", output="好的"),  # 5 words; 2 words
        example("b", instruction="Write code", input="in Python", status="rejected"),  # 4
    ]
    instruction, response = length_histograms(pool, {})
    edges = instruction.edges

    def bin_of(words: int) -> int:
        return next(i for i in range(len(edges) - 1) if edges[i] <= words < edges[i + 1])

    assert instruction.counts["accepted"][bin_of(5)] == 1
    assert instruction.counts["rejected"][bin_of(4)] == 1
    assert response.counts["accepted"][bin_of(2)] == 1
    assert instruction.thresholds == []  # no stored config: no line made up


def test_thresholds_come_from_the_stored_config(tmp_path: Path) -> None:
    from evoinstruct.cli.report.thresholds import Threshold
    from evoinstruct.graph.config import RunConfig

    config = RunConfig()
    config.critic.judge.threshold = 3.5
    config.critic.stats.min_output_words = 3
    config.critic.stats.max_output_words = 400
    config.selector.min_scores = {"quality": 4.0}
    stored = config.model_dump(mode="json")
    store = seeds_store(tmp_path / "pool.db")
    store.start_round(1, stored)
    ids = add_round(store, 1, DIVERSE[:2])
    store.record_scores(
        [Score(ids[0], "judge", "accuracy", 4.0), Score(ids[1], "judge", "accuracy", None),
         Score(ids[0], "deita", "quality", 5.0), Score(ids[1], "ifd", "ifd", 0.4)], 1
    )  # fmt: skip
    store.finish_round(1, {})
    result = build_report(store, tmp_path / "report")
    assert result.data is not None
    thresholds = result.data.scores.thresholds
    assert thresholds[("judge", "accuracy")] == {
        1: [Threshold("min", stored["critic"]["judge"]["threshold"], "critic.judge.threshold")]
    }
    assert thresholds[("deita", "quality")][1] == [
        Threshold("min", 4.0, "selector.min_scores.quality")
    ]
    assert thresholds[("ifd", "ifd")][1] == [
        Threshold("max", stored["critic"]["ifd"]["max_ifd"], "critic.ifd.max_ifd")
    ]
    assert result.data.scores.unparseable == {("judge", "accuracy"): 1}
    _, response = result.data.lengths
    assert [(t.bound, t.value) for t in response.thresholds] == [("min", 3.0), ("max", 400.0)]
    assert result.data.config_round == 1
    # The lines are drawn: the judge panel's dashed line sits at the threshold.
    from evoinstruct.cli.report.plots import plot_scores

    fig = plot_scores(result.data, ReportConfig())
    judge = next(ax for ax in fig.axes if ax.get_title().startswith("judge / accuracy"))
    assert any("critic.judge.threshold" in t.get_text() for t in judge.get_legend().get_texts())


def test_diversity_says_why_it_was_not_measured(tmp_path: Path) -> None:
    store = seeds_store(tmp_path / "pool.db")
    add_round(store, 1, DIVERSE[:3])
    add_round(store, 2, DIVERSE[3:6])
    result = build_report(store, tmp_path / "report")
    div = result.data.diversity if result.data else None
    assert div is not None and div.rows == [] and div.unmeasured == {1: 3, 2: 3}
    # Together the two rounds reach diversity_min_examples: the cumulative series starts there.
    assert [(r.round, r.n) for r in div.cumulative] == [(2, 6)]
    page = result.html.read_text(encoding="utf-8")
    assert "too few (3 &lt; 5)" in page  # the per-round table says so in its cells
    assert "not measured on their own: round 1: 3, round 2: 3" in page


def test_no_diversity_at_all_draws_a_note_not_a_star(tmp_path: Path) -> None:
    from evoinstruct.cli.report.plots import plot_diversity

    store = seeds_store(tmp_path / "pool.db")
    add_round(store, 1, DIVERSE[:2])
    result = build_report(store, tmp_path / "report")
    assert result.data is not None
    fig = plot_diversity(result.data)
    (ax,) = fig.axes
    assert len(ax.lines) == 0 and "round 1: 2" in ax.texts[0].get_text()
    page = result.html.read_text(encoding="utf-8")
    assert "Diversity per round not measured" in page
    assert "distinct-2 (seeds)" in page  # the seeds' own values still fill round 0


def test_one_colour_one_meaning() -> None:
    from evoinstruct.cli.report import palette
    from evoinstruct.cli.report.plots import STAGE_COLORS

    meanings = [
        *palette.STATUS.values(),
        *palette.SOURCE.values(),
        palette.BASELINE,
        palette.THRESHOLD,
        palette.ALERT,
        palette.FAILED_CALL,
    ]
    assert len(set(meanings)) == len(meanings)
    assert not set(STAGE_COLORS.values()) & set(meanings)


def test_the_generator_section_is_the_record_of_its_calls(
    project: Path, built: ReportResult
) -> None:
    from evoinstruct.graph.project import Project

    assert built.data is not None and built.data.generator
    store = Project(project).open_store()
    try:
        calls = store.generation_calls()
        accepted = {
            e.id for e in store.get_many([i for c in calls for i in c.candidates])
            if e.status in ("accepted", "superseded")
        }  # fmt: skip
    finally:
        store.close()
    (row,) = built.data.generator  # two rounds, all generated by the scripted teacher
    assert row.calls == len(calls) and row.accepted == len(accepted)
    assert row.per_call == pytest.approx(len(accepted) / len(calls))
    page = built.html.read_text(encoding="utf-8")
    assert "<h2>Generator</h2>" in page and "accepted per call [95% CI]" in page
