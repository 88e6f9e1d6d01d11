"""`evoinstruct eval --ifeval FILE --only`: an IFEval-format file scored alone, as a suite
of its own that is stored and reused but never the gate's; rows that cannot be scored
are named with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evoinstruct.store import Store, open_store
from evoinstruct.store.errors import InputError
from evoinstruct.store.records import ExampleDraft
from evoinstruct.trainer.config import SuiteConfig, TrainerConfig
from evoinstruct.trainer.evaluate import uses_suite
from evoinstruct.trainer.suite import (
    SkippedRow,
    ensure_suite,
    ifeval_suite,
    load_suite,
    suite_guard,
)
from tests.cli_helpers import run_cli

# Rows written for these tests (none is IFEval's own).
ROWS: list[dict[str, Any]] = [
    {
        "key": 11,
        "prompt": "Describe a walk along a canal at dusk, entirely in French.",
        "instruction_id_list": ["language:response_language"],
        "kwargs": [{"language": "fr"}],
    },
    {
        "key": 12,
        "prompt": "Give a packing list for a weekend of hiking in the hills, written without any commas.",
        "instruction_id_list": ["punctuation:no_comma", "detectable_format:number_bullet_lists"],
        "kwargs": [{}, {"num_bullets": 3, "relation": None}],
    },
    {
        "key": 13,
        "prompt": "Explain how a sundial tells time, using at most three sentences.",
        "instruction_id_list": ["length_constraints:number_sentences"],
        "kwargs": [{"num_sentences": 3, "relation": "at most"}],
    },
    {
        "key": 14,
        "prompt": "Say something kind to a friend while speaking like a pirate throughout.",
        "instruction_id_list": ["style:pirate_voice"],
        "kwargs": [{}],
    },
    {
        "key": 15,
        "prompt": "Write a short note to a neighbour about a parcel that arrived for them.",
        "instruction_id_list": ["detectable_content:postscript"],
        "kwargs": [{"postscript_marker": "P.S."}],
    },
]
NOTE = "Write a short note to a neighbour about a parcel that arrived for them today."


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_an_ifeval_file_alone_is_a_suite_of_its_own(store: Store, tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.jsonl", ROWS)
    # A pool example copying row 15's prompt: the row is left out, and named.
    store.add_candidates([ExampleDraft(instruction=NOTE)], 1)
    build = ifeval_suite(store, SuiteConfig(), [path])
    assert build.created and len(build.suite) == 2
    assert [i.key for i in build.suite.items] == ["mine:11", "mine:12"]
    assert build.suite.counts() == {"ifeval:mine.jsonl": 2}
    assert build.skipped_rows == [
        SkippedRow(
            "ifeval:mine.jsonl",
            "13",
            "length_constraints:number_sentences",
            "relation must be one of ['less than', 'at least'], got 'at most'",
        ),
        SkippedRow(
            "ifeval:mine.jsonl", "14", "style:pirate_voice", "instruction id not in the registry"
        ),
        SkippedRow(
            "ifeval:mine.jsonl",
            "15",
            None,
            "shares a 13-token n-gram with a pool example",
        ),
    ]
    assert build.skipped["overlaps_pool"] == 1 and build.skipped["invalid_rows"] == 1

    # Never the current suite: the project's suite and the gate do not see it...
    assert load_suite(store) is None
    assert not uses_suite(store, TrainerConfig())
    project = ensure_suite(store, SuiteConfig(tasks_per_language=2))
    assert project.created and project.suite.counts() == {"tasks/en": 2, "tasks/zh": 2}
    assert load_suite(store).hash == project.suite.hash  # type: ignore[union-attr]
    # ...but its prompts are kept out of training like any stored suite's.
    copy = "Give a packing list for a weekend of hiking in the hills, written without any commas!"
    store.add_candidates([ExampleDraft(instruction=copy)], 2)
    guard = suite_guard(store, SuiteConfig())
    assert guard is not None and guard.hit(next(store.iter_examples(round=2))) == "mine:12"

    # The same file gives the same suite, and the same named rows, whatever the pool now holds.
    again = ifeval_suite(store, SuiteConfig(), [path])
    assert not again.created and again.suite.hash == build.suite.hash
    assert again.skipped_rows == build.skipped_rows
    assert load_suite(store).hash == project.suite.hash  # type: ignore[union-attr]


def test_only_refuses_a_file_with_nothing_to_score(store: Store, tmp_path: Path) -> None:
    path = _write(tmp_path / "none.jsonl", [ROWS[3]])
    with pytest.raises(InputError, match="no row"):
        ifeval_suite(store, SuiteConfig(), [path])
    with pytest.raises(InputError, match="--ifeval"):
        ifeval_suite(store, SuiteConfig(), [])
    assert store.eval_suites() == []


def _reply(body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    if "French" in prompt:
        return "Le long du canal, la lumière du soir glisse doucement sur l'eau calme."
    return "* boots\n* socks\n* a warm hat"


@pytest.mark.timeout(120)
def test_eval_only_cli_scores_the_file_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from evoinstruct.graph.project import init_project
    from tests.openai_server import OpenAITestServer

    project = init_project(tmp_path / "proj").root
    path = _write(tmp_path / "mine.jsonl", ROWS)
    with OpenAITestServer(models=("teacher",), reply=_reply) as server:
        sets = [
            f'models.teacher.base_url="{server.url}"',
            'models.teacher.model="teacher"',
            "models.teacher.max_retries=0",
            "trainer.suite.bootstrap_samples=200",
        ]
        args = [a for s in sets for a in ("--set", s)]
        first = run_cli(capsys, "eval", "teacher", "-p", project, *args, "--ifeval", path, "--only")
        assert first.code == 0, first.err
        assert "suite" in first.out and "built" in first.out and "ifeval:mine.jsonl 3" in first.out
        assert "skipped ifeval:mine.jsonl key 14 (style:pirate_voice)" in first.out
        assert "teacher: 3 of 3 prompts answered" in first.out
        assert "language:response_language" in first.out  # the per-id table
        data = run_cli(
            capsys, "eval", "teacher", "-p", project, *args, "--ifeval", path, "--only", "--json"
        ).json()
        assert data["suite"]["only"] and data["suite"]["created"] is False
        assert data["result"]["cached"] and data["result"]["n"] == 3
        assert data["suite"]["counts"] == {"ifeval:mine.jsonl": 3}
        assert [r["key"] for r in data["suite"]["skipped_rows"]] == ["13", "14"]
        accuracy = data["result"]["accuracy"]
        assert set(accuracy) == {
            "prompt_strict",
            "prompt_loose",
            "instruction_strict",
            "instruction_loose",
        }
        assert accuracy["instruction_strict"]["value"] == pytest.approx(3 / 4)
        by_type = data["result"]["by_type"]
        assert by_type["language:response_language"]["strict"]["value"] == 1.0
        assert by_type["detectable_content:postscript"]["strict"]["value"] == 0.0
        refused = run_cli(capsys, "eval", "-p", project, *args, "--only")
        assert refused.code == 2 and "--ifeval" in refused.err
        both = run_cli(
            capsys, "eval", "-p", project, *args, "--ifeval", path, "--only", "--rebuild"
        )
        assert both.code == 2
    with open_store(project / "pool.db") as store:
        assert store.eval_suite() is None  # the project's own suite was never built
        [result] = store.eval_results()
        assert result["label"] == "teacher"
