"""`models check` and `models bench`: the library functions and the typer commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from evoinstruct.models.base import Failure, probe_request
from evoinstruct.models.check import bench_model, check_models, explain, percentiles
from evoinstruct.models.config import ModelConfig
from tests.openai_server import OpenAITestServer, closed_port, eventually


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(api_key="right-key", models=("tiny",)) as s:
        yield s


def _cfg(url: str, model: str = "tiny", **kw) -> ModelConfig:
    return ModelConfig(backend="openai", base_url=url, model=model, **kw)


# Every failure kind, each retried: 9 s here under load.
@pytest.mark.slow
async def test_check_explains_each_failure_in_plain_words(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOD_KEY", "right-key")
    monkeypatch.setenv("BAD_KEY", "wrong-key")
    hang = OpenAITestServer(delay=5).start()
    try:
        results = await check_models(
            {
                "teacher": _cfg(server.url, api_key_env="GOOD_KEY"),
                "refused": _cfg(f"http://127.0.0.1:{closed_port()}/v1", api_key_env="GOOD_KEY"),
                "badkey": _cfg(server.url, api_key_env="BAD_KEY"),
                "nokey": _cfg(server.url, api_key_env="UNSET_KEY_VAR"),
                "typo": _cfg(server.url, model="tinny", api_key_env="GOOD_KEY"),
                "slow": _cfg(hang.url, timeout_s=0.3),
            }
        )
    finally:
        hang.stop()
    by = {r.name: r for r in results}
    assert by["teacher"].ok and by["teacher"].latency_s is not None and by["teacher"].error is None
    assert not any(r.ok for n, r in by.items() if n != "teacher")
    assert "cannot connect" in by["refused"].error and "wrong URL" in by["refused"].error
    assert "API key" in by["badkey"].error and "$BAD_KEY" in by["badkey"].error
    assert "UNSET_KEY_VAR" in by["nokey"].error and "not set" in by["nokey"].error
    assert "model name 'tinny'" in by["typo"].error
    assert "timeout" in by["slow"].error
    assert server.requests == 3  # no retries: one request each for teacher, badkey, typo
    assert "right-key" not in json.dumps([r.to_dict() for r in results])


async def test_bench_measures_throughput_latency_and_failures() -> None:
    with OpenAITestServer(delay=0.05) as server:
        server.inject("500", times=3)
        server.pause()  # the server holds what arrives: the bench fills its 6 slots, then waits
        bench = asyncio.create_task(
            bench_model(_cfg(server.url), requests=60, concurrency=6, max_tokens=5)
        )
        await eventually(lambda: server.in_flight == 6, "the bench to fill its 6 slots")
        server.resume()
        result = await bench
    assert result.ok == 57 and result.failures == {"server": 3}
    assert server.max_in_flight == 6
    # The figures are what was measured, however fast this machine is: no lower bound on the
    # speed (that belongs in bench/). The server's 50 ms a request is a floor on the time:
    # 57 answers, 6 at a time, cannot come faster than 120 a second.
    assert result.requests_per_s == pytest.approx(result.ok / result.wall_s)
    assert 0 < result.requests_per_s <= 120
    assert result.tokens_per_s == pytest.approx(result.requests_per_s * 5, rel=0.01)
    assert 0.05 <= result.latency_p50_s <= result.latency_p90_s <= result.latency_p99_s
    assert result.client_cpu_ms_per_request > 0


def test_percentiles() -> None:
    assert percentiles([]) == (None, None, None)
    assert percentiles([2.0]) == (2.0, 2.0, 2.0)
    p50, p90, p99 = percentiles([float(i) for i in range(1, 102)])
    assert (p50, p90, p99) == pytest.approx((51.0, 91.0, 100.0))


def _project_with(tmp_path, models: dict) -> str:
    """A project whose [models] are exactly `models` (ModelConfig objects); roles point at the first."""
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.project import init_project
    from evoinstruct.models.config import RolesConfig

    first = next(iter(models))
    roles = RolesConfig(
        **{r: first for r in ("generator", "evolver", "responder", "critic", "rewriter", "tagger")}
    )
    config = RunConfig(models=models, roles=roles)
    return str(init_project(tmp_path / "proj", config).root)


def test_cli_check_json_and_table(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys
) -> None:
    from tests.cli_helpers import run_cli

    monkeypatch.setenv("GOOD_KEY", "right-key")
    models = {
        "teacher": _cfg(server.url, api_key_env="GOOD_KEY"),
        "typo": _cfg(server.url, model="tinny", api_key_env="GOOD_KEY"),
    }
    project = _project_with(tmp_path, models)
    out = run_cli(capsys, "models", "check", "--json", "-p", project)
    assert out.code == 1, out.err
    rows = {r["name"]: r for r in out.json()}
    assert rows["teacher"]["ok"] and not rows["typo"]["ok"]
    table = run_cli(capsys, "models", "check", "-p", project, "--set", 'models.typo.model="tiny"')
    assert table.code == 0 and "teacher" in table.out and "ok" in table.out


def test_cli_bench_json(tmp_path, capsys) -> None:
    from tests.cli_helpers import run_cli

    with OpenAITestServer(delay=0.01) as server:
        project = _project_with(tmp_path, {"teacher": _cfg(server.url)})
        args = [
            "models",
            "bench",
            "teacher",
            "--requests",
            "20",
            "--concurrency",
            "4",
            "--max-tokens",
            "8",
            "-p",
            project,
        ]
        out = run_cli(capsys, *args, "--json")
        assert out.code == 0, out.err
        figures = out.json()
        assert figures["ok"] == 20 and figures["concurrency"] == 4 and figures["requests_per_s"] > 0
        table = run_cli(capsys, *args)
        assert table.code == 0 and "requests/s" in table.out
    missing = run_cli(capsys, "models", "bench", "judge", "-p", project)
    assert missing.code == 2 and "judge" in missing.err


async def test_an_in_process_model_missing_locally_is_reported_without_a_download() -> None:
    from evoinstruct.models.check import check_model

    cfg = ModelConfig(backend="transformers", path="no-such-org/no-such-model-xyz")
    result = await check_model("student", cfg)
    assert (
        not result.ok and "huggingface-cli download no-such-org/no-such-model-xyz" in result.error
    )


# Sixteen attempts against a flaky server: 10 s here under load.
@pytest.mark.slow
async def test_a_flaky_server_passes_the_check_a_dead_one_does_not(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transient errors (429 with Retry-After, 500, a dropped connection) are retried a few
    times; a server that answers nothing at all is still reported, after a bounded wait."""
    server.inject("500", times=3)
    server.inject("429", times=2, retry_after=0)
    server.inject("drop", times=2)
    monkeypatch.setenv("GOOD_KEY", "right-key")
    (flaky,) = await check_models({"teacher": _cfg(server.url, api_key_env="GOOD_KEY")})
    assert flaky.ok, flaky.error
    assert server.requests == 8  # seven transient failures, then the answer

    server.inject("500", times=20)
    (broken,) = await check_models({"teacher": _cfg(server.url, api_key_env="GOOD_KEY")})
    assert not broken.ok and "5xx" in broken.error
    assert server.requests == 16  # eight more attempts: bounded, then a plain reason


async def test_a_connection_dropped_mid_answer_is_not_called_a_wrong_url(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server accepted every attempt and then cut it: the URL is right, and the check says
    so (a wrong URL would send the user to fix what is not broken)."""
    server.inject("drop", times=20)
    monkeypatch.setenv("GOOD_KEY", "right-key")
    (result,) = await check_models({"teacher": _cfg(server.url, api_key_env="GOOD_KEY")})
    assert not result.ok and server.requests == 8  # retried as a transient error, bounded
    assert "wrong URL" not in result.error and "cannot connect" not in result.error
    assert "accepted the connection" in result.error and "dropped or truncated" in result.error


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("drop", "accepted the connection but it broke"),
        ("truncated", "accepted the connection but it broke"),
        ("malformed", "not a valid chat completion"),
        ("garbage", "not a valid chat completion"),
        ("drip", "no complete answer within 0.5 s"),
    ],
)
async def test_each_broken_answer_is_explained_as_what_it_is(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch, fault: str, words: str
) -> None:
    from evoinstruct.models.factory import build_model

    server.inject(fault, delay=1.0)
    monkeypatch.setenv("GOOD_KEY", "right-key")
    cfg = _cfg(server.url, api_key_env="GOOD_KEY", max_retries=0, timeout_s=0.5)
    model = build_model(cfg)
    try:
        async with asyncio.timeout(30):  # hang guard: a drip must end at the attempt deadline
            (failure,) = await model.generate([probe_request()])
    finally:
        await model.aclose()
    assert isinstance(failure, Failure)
    text = explain(failure, cfg)
    assert words in text and "wrong URL" not in text, text


async def test_a_garbled_answer_does_not_fail_the_check(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One garbage body from a flaky server must not end a daemon at its check before a round."""
    monkeypatch.setenv("GOOD_KEY", "right-key")
    server.inject("malformed", times=2)
    (result,) = await check_models({"teacher": _cfg(server.url, api_key_env="GOOD_KEY")})
    assert result.ok, result.error
    server.inject("malformed", times=10)
    (broken,) = await check_models({"teacher": _cfg(server.url, api_key_env="GOOD_KEY")})
    assert not broken.ok and "not a valid chat completion" in broken.error


def test_the_check_table_prints_brackets_in_errors_and_names(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """rich reads "[Errno 111]" or "[models.teacher]" as markup and drops it unless escaped."""
    from evoinstruct.cli.commands.models import check_command
    from evoinstruct.models import check as check_module
    from evoinstruct.models.check import CheckResult

    failed = CheckResult("teacher", "openai", "org/[x]-model", "http://127.0.0.1:9/v1", ok=False)
    failed.error = "cannot connect: [Errno 111] Connection refused"

    async def fake_check(models):
        return [failed]

    monkeypatch.setattr(check_module, "check_models", fake_check)
    assert check_command({}, as_json=False) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "[Errno 111]" in out and "org/[x]-model" in out
