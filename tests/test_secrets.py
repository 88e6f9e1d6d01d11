"""An API key, or any fragment of it a server echoes, never reaches the store, a log or an export."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from evoinstruct.graph.daemon.command import cli_command
from evoinstruct.graph.project import init_project
from evoinstruct.models.base import ChatRequest, Failure, Generation
from evoinstruct.models.config import ModelConfig
from evoinstruct.models.openai_backend import OpenAIChatModel
from evoinstruct.models.secret import SECRET_FRAGMENT, Secret
from evoinstruct.models.structured import SchemaFailure, generate_structured
from tests.daemon_helpers import ROOT, start_daemon
from tests.fake_teacher import server_reply
from tests.openai_server import OpenAITestServer

KEY = "sk-proj-Zq9x7TgB4mWcR2vLpK8dNf3H"
MIDDLE = KEY[len(KEY) // 2 - 6 : len(KEY) // 2 + 6]  # the middle 12 characters
ENV = {"EVO_SECRET_KEY": KEY}


def test_scrub_replaces_the_key_and_every_fragment_of_eight_or_more() -> None:
    secret = Secret(KEY)
    assert SECRET_FRAGMENT == 8 and len(MIDDLE) == 12
    assert secret.scrub(f"key={KEY}!") == "key=***!"
    assert secret.scrub(f"echo {MIDDLE} and {MIDDLE}.") == "echo *** and ***."
    assert secret.scrub(f"x{KEY[3:11]}y") == "x***y"  # exactly eight characters
    assert secret.scrub(f"x{KEY[3:10]}y") == f"x{KEY[3:10]}y"  # seven: ordinary text
    # Two fragments side by side, overlapping runs, a masked key as servers print it.
    assert secret.scrub(KEY[0:9] + KEY[20:30]) == "***"
    assert secret.scrub(f"{KEY[:12]}...{KEY[-8:]}") == "***...***"
    assert secret.scrub("你好 " + MIDDLE + " 世界") == "你好 *** 世界"
    assert secret.scrub("") == "" and repr(secret) == "Secret(***)"
    # The dummy key of local servers scrubs nothing.
    assert Secret("EMPTY").scrub("EMPTY answers stay EMPTY") == "EMPTY answers stay EMPTY"


class Verdict(BaseModel):
    score: int


async def test_the_backend_scrubs_answers_and_failure_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVO_SECRET_KEY", KEY)

    class Echoing(OpenAITestServer):  # ignores response_format, as many servers do
        def _choice_text(self, body: dict, index: int) -> str:
            return f"Your key ends {MIDDLE}; also {KEY}."

    with Echoing(api_key=KEY) as server:
        cfg = ModelConfig(
            backend="openai",
            base_url=server.url,
            model="tiny",
            api_key_env="EVO_SECRET_KEY",
            max_retries=0,
        )
        model = OpenAIChatModel(cfg)
        ask = ChatRequest([{"role": "user", "content": "hi"}], n=2)
        (answer,) = await model.generate([ask])
        assert isinstance(answer, Generation)
        assert [c.text for c in answer.choices] == ["Your key ends ***; also ***."] * 2
        server.inject("500", message=f"upstream rejected key ...{MIDDLE}...")
        server.inject("429", message=f"quota of key {KEY[5:17]} exceeded", retry_after=0)
        server.inject("404", message=f"model not found for {KEY[-10:]}")
        for _ in range(3):
            (failed,) = await model.generate([ask])
            assert isinstance(failed, Failure) and "***" in failed.message, failed
            assert MIDDLE not in failed.message and KEY[5:17] not in failed.message
            assert KEY[-10:] not in failed.message
        # What a parse failure keeps as raw output is the scrubbed answer.
        (schema,) = await generate_structured(
            model, [ChatRequest([{"role": "user", "content": "x"}])], Verdict
        )
        assert isinstance(schema, SchemaFailure)
        assert MIDDLE not in schema.raw_output and "***" in schema.raw_output
        await model.aclose()


def _config(project: Path, url: str) -> None:
    (project / "evoinstruct.toml").write_text(
        f"""
[models.teacher]
backend = "openai"
base_url = "{url}"
model = "tiny"
api_key_env = "EVO_SECRET_KEY"
max_concurrency = 4
timeout_s = 10
max_retries = 0

[models.student]
backend = "transformers"
path = "unused-in-this-test"

[loop]
generate_calls = 4
evolve_per_round = 4
batch_size = 8
""",
        encoding="utf-8",
    )


def _cli(project: Path, *args: str) -> None:
    subprocess.run(
        cli_command(*args, "-p", str(project)),
        cwd=str(ROOT),
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_key_fragment_a_server_echoes_reaches_no_table_log_or_export(tmp_path: Path) -> None:
    """A whole round against a teacher that echoes the middle 12 characters of the key in every
    answer (accepted texts, answers that fail to parse and are kept as raw output) and in the
    error of two failed calls (kept as the failure's message)."""
    project = init_project(tmp_path / "proj").root

    def echo(body: dict) -> str:
        return f"{server_reply(body)} (key {MIDDLE})"

    with OpenAITestServer(reply=echo, api_key=KEY) as server:
        _config(project, server.url)
        _cli(project, "seed", "add", str(project / "seeds" / "seed_tasks_en.jsonl"))
        # --no-check: the first calls are the round's own, so these two fail a generate call
        # each (no retries) and their messages are stored.
        server.inject("500", times=2, message=f"key ...{MIDDLE}... is over quota")
        log = project / "daemon-secret.log"
        daemon = start_daemon(project, "--rounds", "1", "--no-check", env=ENV, log=log)
        assert daemon.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]
        assert server.faults_served["500"] == 2 and server.requests > 10
    export = tmp_path / "export.jsonl"
    _cli(project, "export", "-o", str(export), "--with-lineage", "--status", "all")
    files = [p for p in project.rglob("*") if p.is_file()] + [export]
    scrubbed = 0
    for path in files:
        data = path.read_bytes()
        assert MIDDLE.encode() not in data, path
        assert KEY.encode() not in data, path
        scrubbed += data.count(b"(key ***)")
    assert scrubbed > 0  # the echo did reach the store, scrubbed
    import sqlite3

    conn = sqlite3.connect(project / "pool.db")
    try:
        # The echo went where the finding saw it: rejections' raw output, failure messages.
        raw = conn.execute(
            "SELECT count(*) FROM rejections WHERE raw_output LIKE '%(key ***)%'"
        ).fetchone()[0]
        failed = conn.execute(
            "SELECT count(*) FROM rejections WHERE reason = 'model_failure:server'"
            " AND evidence LIKE '%key ...***... is over quota%'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert raw > 0 and failed == 2
