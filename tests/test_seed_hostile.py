"""Hostile seed files: each is refused in one line (exit 2) and the pool stays as it was.

The corpus is tests/hostile_inputs.py. Every case runs `seed add` in-process against
one project that already holds seeds; a representative subset also runs the installed
console script, where a traceback or a hang would show as it does to a user.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evoinstruct.store.seeds import read_seed_file
from evoinstruct.store.seeds import reading as seed_reading
from tests.cli_helpers import run_cli
from tests.hostile_inputs import HostileCase, hostile_cases, write_hostile_inputs

CASES = {case.name: case for case in hostile_cases("corpus")}  # names; the fixture writes
EXE = Path(sys.executable).with_name("evoinstruct")
# One of each kind of failure the review found, run as a user runs them.
THROUGH_THE_CONSOLE_SCRIPT = [
    "csv_huge_field",
    "csv_unclosed_quote",
    "json_array_deep_nesting",
    "jsonl_lone_surrogate",
    "qna_billion_laughs",
    "nul_after_8_kib",
    "utf16_le_with_bom",
    "named_pipe",
    "character_device",
    "a_folder",
    "too_large",
    "name_with_a_newline",
    "name_not_utf8",
    "tsv_that_is_comma_separated",
]

SEEDS = [
    {"instruction": "Give three tips for staying healthy.", "output": "Eat, sleep, move."},
    {"instruction": "把句子翻译成英文。", "input": "我喜欢读书。", "output": "I like reading."},
    {"instruction": "Write a haiku about rain."},
]
# Not in the pool yet: passed before the hostile file, it must not be written either.
FRESH = [
    {"instruction": "列出三种水果。", "output": "苹果、香蕉、橙子。"},
    {"instruction": "Name the largest ocean.", "output": "The Pacific."},
]


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _console(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "EVOINSTRUCT_PROJECT"}
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A project initialised and seeded through the console script, and a fresh good file."""
    root = tmp_path_factory.mktemp("hostile")
    project = root / "proj"
    done = _console("init", project)
    assert done.returncode == 0, done.stderr.decode()
    good = _write_jsonl(root / "good.jsonl", SEEDS)
    done = _console("seed", "add", good, "-p", project)
    assert done.returncode == 0, done.stderr.decode()
    return {"project": project, "fresh": _write_jsonl(root / "fresh.jsonl", FRESH)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileCase]:
    return {c.name: c for c in write_hostile_inputs(tmp_path_factory.mktemp("corpus"))}


def pool_fingerprint(project: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Every row of every table, and the bytes of an export of all statuses."""
    digest = hashlib.sha256()
    with sqlite3.connect(f"file:{project / 'pool.db'}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(tables):
            rows = sorted(map(repr, db.execute(f'SELECT * FROM "{table}"')))
            digest.update(f"{table}:{len(rows)}:{rows}".encode())
    out = project / "fingerprint.jsonl"
    result = run_cli(capsys, "export", "-f", "alpaca", "-o", out, "--status", "all", "-p", project)
    assert result.code == 0, result.err
    digest.update(out.read_bytes())
    out.unlink()
    return digest.hexdigest()


def _fresh(workspace: dict[str, Path], case: HostileCase) -> list[Path]:
    """The good file to pass first, unless the case's --format would not fit it."""
    return [] if case.args else [workspace["fresh"]]


def assert_refused(case: HostileCase, code: int, err: str) -> None:
    assert code == 2, (case.name, code, err)
    assert "Traceback" not in err, err
    # One line: a single LF at the end, and nothing a terminal would break a line at.
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    line = err[:-1]
    assert line.isprintable(), repr(line)
    where = f"{case.shown}:{case.expect_line}" if case.expect_line else f"{case.shown}:"
    assert where in line, (where, line)
    if case.expect_field is None:
        assert ", field '" not in line, line
    else:
        assert f"field '{case.expect_field}'" in line, line
    assert case.expect_text in line, (case.expect_text, line)


def test_the_corpus_is_large_and_named_once() -> None:
    assert len(CASES) >= 30
    assert len(CASES) == len(hostile_cases("corpus"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_refused_in_one_line(
    workspace: dict[str, Path],
    corpus: dict[str, HostileCase],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    case = corpus[name]
    project = workspace["project"]
    before = pool_fingerprint(project, capsys)
    args = ["seed", "add", *_fresh(workspace, case), case.path, *case.args, "-p", project]
    with monkeypatch.context() as patch:
        if case.name == "permission_denied" and case.skip:
            # Root opens a file of mode 000; make the open fail as it does for anyone else.
            real_open = os.open

            def denied(path: object, *a: object, **kw: object) -> int:
                if Path(str(path)) == case.path:
                    raise PermissionError(13, "Permission denied", str(path))
                return real_open(path, *a, **kw)  # type: ignore[arg-type]

            patch.setattr(seed_reading.os, "open", denied)
        elif case.skip:
            pytest.skip(case.skip)
        result = run_cli(capsys, *args)
    assert_refused(case, result.code, result.err)
    assert pool_fingerprint(project, capsys) == before


@pytest.mark.parametrize("name", THROUGH_THE_CONSOLE_SCRIPT)
def test_hostile_input_through_the_console_script(
    workspace: dict[str, Path],
    corpus: dict[str, HostileCase],
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    case = corpus[name]
    project = workspace["project"]
    before = pool_fingerprint(project, capsys)
    # A timeout, not a hang, if a FIFO or a device were ever opened and read.
    done = _console("seed", "add", *_fresh(workspace, case), case.path, *case.args, "-p", project)
    assert_refused(case, done.returncode, done.stderr.decode("utf-8"))
    assert done.stdout == b""
    assert pool_fingerprint(project, capsys) == before


def test_the_fresh_file_itself_imports(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusals above are the hostile file's doing: the good file in front of it reads."""
    seeds = read_seed_file(workspace["fresh"])
    assert [d.instruction for d in seeds.drafts] == [r["instruction"] for r in FRESH]


# --- a JSON array reads in linear time ------------------------------------------------------


def _bilingual_rows(n: int) -> list[dict[str, str]]:
    return [
        {"instruction": f"第{i}题：解释河流。", "input": "", "output": "河流从高处流向低处。"}
        if i % 2
        else {"instruction": f"Explain rivers, case {i}.", "input": "", "output": "They flow."}
        for i in range(n)
    ]


def test_json_array_line_numbers_scan_the_text_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting, not timing: a line index that rescans from the start for every record
    (what made a 52k-row alpaca_data.json take minutes) scans ~N/2 times the text."""
    scanned: list[int] = []

    class CountingLineIndex(seed_reading._LineIndex):
        def at(self, pos: int) -> int:
            scanned.append(pos - self.pos if pos >= self.pos else pos)
            return super().at(pos)

    monkeypatch.setattr(seed_reading, "_LineIndex", CountingLineIndex)
    rows = _bilingual_rows(20_000)
    path = tmp_path / "alpaca_data.json"
    text = json.dumps(rows, ensure_ascii=False, indent=4)
    path.write_text(text, encoding="utf-8")
    seeds = read_seed_file(path)
    assert len(seeds.drafts) == 20_000
    assert len(scanned) >= 20_000  # every record's line was asked for
    assert sum(scanned) <= 2 * len(text)  # detection reads record 1 once more


def test_json_array_names_the_line_of_a_late_bad_record(tmp_path: Path) -> None:
    rows = _bilingual_rows(20_000)
    rows[19_998]["output"] = 42  # type: ignore[assignment]
    path = tmp_path / "alpaca_data.json"
    text = json.dumps(rows, ensure_ascii=False, indent=4)
    path.write_text(text, encoding="utf-8")
    record_start = text.index(json.dumps(rows[19_998]["instruction"], ensure_ascii=False)) - 1
    line = text.count("\n", 0, text.rindex("{", 0, record_start)) + 1
    with pytest.raises(seed_reading.InputError) as caught:
        read_seed_file(path)
    assert (caught.value.line, caught.value.field) == (line, "output")
    assert "record 19999: expected a string, found a number" in str(caught.value)


def test_json_array_and_jsonl_give_the_same_drafts(tmp_path: Path) -> None:
    rows = _bilingual_rows(500)
    array = tmp_path / "a.json"
    array.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    lines = _write_jsonl(tmp_path / "a.jsonl", rows)
    assert read_seed_file(array).drafts == read_seed_file(lines).drafts


def test_csv_field_limit_is_restored(tmp_path: Path) -> None:
    import csv

    before = csv.field_size_limit()
    path = tmp_path / "big.csv"
    path.write_text("instruction,output\n写一首诗," + "长" * 200_000 + "\n", encoding="utf-8")
    seeds = read_seed_file(path)  # 600 KB: over the csv module's 128 KiB, under 1 MiB
    assert len(seeds.drafts[0].output or "") == 200_000
    assert csv.field_size_limit() == before
