"""The offline demo end to end, and an integrity check of the project it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    from evoinstruct.cli.demo import run_demo

    directory = tmp_path_factory.mktemp("demo") / "demo-project"
    result = asyncio.run(run_demo(directory))
    assert result.rounds == [1, 2, 3, 4]
    # The demo shows what the models wrote and what the filters said about it.
    verdicts = [s.verdict for s in result.samples]
    assert any(v.startswith("accepted") for v in verdicts), verdicts
    assert any(v.startswith("rejected at ") for v in verdicts), verdicts
    assert all(s.instruction for s in result.samples)
    return result.project.root


@pytest.mark.slow
def test_demo_trains_promotes_and_the_student_generates(demo_project: Path, capsys) -> None:
    versions = run_cli(capsys, "models", "list", "--json", "-p", demo_project).json()
    assert [v["version"] for v in versions] == ["v1"]
    assert versions[0]["promoted"] and versions[0]["active"]
    assert (demo_project / "models" / "v1" / "adapter_config.json").is_file()
    rounds = run_cli(capsys, "inspect", "rounds", "--json", "-p", demo_project).json()
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[3]["model_version"] == "v1"  # round 4 generated with the student
    assert rounds[0]["model_version"] is None


@pytest.mark.slow
def test_demo_project_integrity(demo_project: Path, tmp_path: Path, capsys) -> None:
    status = run_cli(capsys, "status", "--json", "-p", demo_project).json()
    out = tmp_path / "all.jsonl"
    assert (
        run_cli(
            capsys, "export", "-o", out, "--status", "all", "--with-lineage", "-p", demo_project
        ).code
        == 0
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == status["examples"]["total"]
    for name, count in status["examples"]["by_status"].items():
        assert sum(r["status"] == name for r in rows) == count
    for name, count in status["examples"]["by_source"].items():
        assert sum(r["source"] == name for r in rows) == count
    ids = {r["id"] for r in rows}
    for row in rows:
        assert row["round"] is not None
        if row["source"] != "seed":
            assert row["model_version"] and row["operation"], row
        if row["source"] in ("evolved", "rewritten"):
            assert row["parent_id"] in ids, row
    assert status["active_model"] == "v1" and status["rounds"] == 4


@pytest.mark.slow
def test_demo_checkpoints_are_inspectable(demo_project: Path, capsys) -> None:
    rows = run_cli(
        capsys, "inspect", "checkpoints", "--round", "3", "--json", "-p", demo_project
    ).json()
    nodes = [r["node"] for r in rows if r["node"]]
    assert nodes[:2] == ["__start__", "plan"] and {"train", "evaluate", "promote"} <= set(nodes)


@pytest.mark.slow
def test_report_renders_on_the_demo_project(demo_project: Path, tmp_path: Path, capsys) -> None:
    result = run_cli(capsys, "report", "-o", tmp_path / "report", "--json", "-p", demo_project)
    assert result.code == 0, result.err
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 7


def test_samples_show_any_rejections_evidence(store) -> None:
    """The generate step records plain evidence (a finish reason, a count), not only mappings."""
    from evoinstruct.cli.demo import _samples
    from evoinstruct.store.records import Rejection

    store.record_rejections(
        [
            Rejection(
                "generate", "truncated", "finish_reason=length", "9. Write a", None, "Write a"
            ),
            Rejection("generate", "over_count", 9, "17. Name a river.", None, "Name a river."),
            Rejection("generate", "too_similar", {"rouge_l": 0.8, "similar_to": "Name a lake."}),
        ],
        round=1,
    )
    samples = _samples(store, n_rejected=3)
    assert [s.verdict for s in samples] == [
        "rejected at generate: truncated",
        "rejected at generate: over_count",
        "rejected at generate: too_similar",
    ]
    assert [s.notes for s in samples] == [
        ["finish_reason=length"],
        ["9"],
        ["rouge_l = 0.8", "similar_to = Name a lake."],
    ]
