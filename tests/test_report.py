"""`evoinstruct report`: PNGs and one self-contained, escaped HTML page over a real pool."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from evoinstruct.agents.text import tokenize
from evoinstruct.graph.cli.report import report_command
from evoinstruct.graph.report.build import (
    PLOTS,
    ReportConfig,
    build_report,
    distinct_n,
    mean_pairwise_distance,
    measure_diversity,
)
from evoinstruct.store import open_store
from evoinstruct.store.errors import ProjectError, UnsupportedError
from evoinstruct.store.records import ExampleDraft, Rejection, Score
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
    from evoinstruct.agents.models.factory import ModelSet
    from evoinstruct.graph.daemon.loop import Daemon, DaemonOptions
    from evoinstruct.graph.project import init_project
    from evoinstruct.graph.round.deps import deps_for_project
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
    metrics = {"heldout_loss": 2.1, "baseline_loss": 2.5, "train_loss": 1.9}
    for version, m, promote in (
        ("v1", metrics, True),
        (
            "v2",
            {**metrics, "heldout_loss": 2.6, "gate": {"promote": False, "reason": "a<b"}},
            False,
        ),
    ):
        store.register_model_version(
            version, base="tiny", method="lora", path="/m", round=2, metrics=m, config={}
        )
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
    from evoinstruct.agents.models import factory
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.project import init_project

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
