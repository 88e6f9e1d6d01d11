"""Writers from several processes at once wait their turn instead of failing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EVOINSTRUCT = Path(sys.executable).with_name("evoinstruct")


def _rows(n: int, tag: str) -> str:
    lines = []
    for i in range(n):
        text = f"请用三句话解释第{i}个概念：{tag}。" if i % 2 else f"Explain concept {i} of {tag}."
        lines.append(json.dumps({"instruction": text, "input": "", "output": f"answer {i}"}))
    return "\n".join(lines) + "\n"


# Nine CLI processes, each loading evoinstruct: 13 s here under load.
@pytest.mark.slow
def test_concurrent_seed_imports_all_succeed_without_duplicates(tmp_path: Path) -> None:
    project = tmp_path / "p"
    assert subprocess.run([EVOINSTRUCT, "init", project], capture_output=True).returncode == 0
    shared = tmp_path / "shared.jsonl"
    shared.write_text(_rows(400, "shared"), encoding="utf-8")
    files = [shared] * 4
    for k in range(4):
        own = tmp_path / f"own{k}.jsonl"
        own.write_text(_rows(200, f"own{k}"), encoding="utf-8")
        files.append(own)
    # Eight importers at once; four of them race to insert the very same rows.
    procs = [
        subprocess.Popen(
            [EVOINSTRUCT, "seed", "add", f, "-p", project, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    results = [(p.wait(timeout=240), p.stdout.read(), p.stderr.read()) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
        assert "locked" not in err
    reports = [json.loads(out)[0] for _code, out, _err in results]
    shared_inserted = sum(r["inserted"] for r in reports[:4])
    assert shared_inserted == 400  # each shared row stored exactly once, whoever won
    assert all(r["inserted"] == 200 for r in reports[4:])
    status = subprocess.run(
        [EVOINSTRUCT, "status", "--json", "-p", project], capture_output=True, text=True
    )
    assert json.loads(status.stdout)["examples"]["total"] == 400 + 4 * 200
