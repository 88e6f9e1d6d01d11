"""The response cache wrapper and the role resolver, over the real OpenAI backend and test server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from evoinstruct.models.activity import MeteredModel
from evoinstruct.models.base import ChatRequest, Failure, Generation
from evoinstruct.models.cache import CachedModel, cache_key
from evoinstruct.models.config import ModelConfig, RolesConfig
from evoinstruct.models.factory import ModelSet, build_model
from evoinstruct.models.openai_backend import OpenAIChatModel
from evoinstruct.store.errors import ConfigError
from tests.doubles import ScriptedModel
from tests.openai_server import OpenAITestServer


class DictCache:
    """The store's cache_get/cache_put contract over a dict that keeps JSON, like SQLite would."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def cache_get(self, key: str) -> dict[str, Any] | None:
        row = self.rows.get(key)
        return None if row is None else json.loads(row)

    def cache_put(self, key: str, value: dict[str, Any]) -> None:
        self.rows[key] = json.dumps(value, ensure_ascii=False)


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as s:
        yield s


def _cfg(url: str, **kw: Any) -> ModelConfig:
    return ModelConfig(backend="openai", base_url=url, model="tiny", max_retries=0, **kw)


def _ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], **kw)


async def test_a_resumed_call_is_not_paid_twice(server: OpenAITestServer) -> None:
    cache = DictCache()
    model = build_model(_cfg(server.url), cache=cache)
    assert isinstance(model, CachedModel)
    requests = [_ask("春天"), _ask("summer", temperature=0.2)]
    first = await model.generate(requests)
    assert server.requests == 2 and not any(r.cached for r in first)
    again = await build_model(_cfg(server.url), cache=cache).generate(requests)
    assert server.requests == 2  # answered from the cache
    assert all(isinstance(r, Generation) and r.cached for r in again)
    assert [r.text for r in again] == [r.text for r in first]
    assert again[0].completion_tokens == first[0].completion_tokens
    await model.aclose()


async def test_any_change_in_the_request_or_model_misses(server: OpenAITestServer) -> None:
    cache = DictCache()
    model = CachedModel(OpenAIChatModel(_cfg(server.url)), cache)
    await model.generate([_ask("x")])
    await model.generate([_ask("x", temperature=0.1)])
    await model.generate([_ask("x", stop=("\n",))])
    await model.generate([_ask("y")])
    assert server.requests == 4
    base = _ask("x")
    keys = {
        cache_key("tiny", None, base),
        cache_key("tiny", "v2", base),
        cache_key("other", None, base),
        cache_key("tiny", None, _ask("x", seed=1)),
    }
    assert len(keys) == 4 and all(len(k) == 64 for k in keys)
    assert cache_key("tiny", None, base) == cache_key("tiny", None, _ask("x"))
    await model.aclose()


async def test_failures_are_never_cached(server: OpenAITestServer) -> None:
    cache = DictCache()
    model = CachedModel(OpenAIChatModel(_cfg(server.url)), cache)
    server.inject("500")
    (failed,) = await model.generate([_ask("q")])
    assert isinstance(failed, Failure) and cache.rows == {}
    (ok,) = await model.generate([_ask("q")])
    assert isinstance(ok, Generation) and not ok.cached and len(cache.rows) == 1
    await model.aclose()


async def test_identical_requests_in_a_batch_keep_their_own_answers() -> None:
    counter = iter(range(100))
    inner = ScriptedModel(default=lambda request: f"sample {next(counter)}")
    cache = DictCache()
    model = CachedModel(inner, cache)
    first = await model.generate([_ask("same", temperature=1.0)] * 3)
    assert [r.text for r in first] == ["sample 0", "sample 1", "sample 2"]
    again = await model.generate([_ask("same", temperature=1.0)] * 3)
    assert [r.text for r in again] == ["sample 0", "sample 1", "sample 2"]
    assert len(inner.calls) == 3 and model.hits == 3 and model.misses == 3


async def test_the_adapter_version_is_part_of_the_key() -> None:
    inner = ScriptedModel(default="answer")
    model = CachedModel(inner, DictCache())
    await model.generate([_ask("q")])
    inner.adapter_version = "student-2"
    await model.generate([_ask("q")])
    assert len(inner.calls) == 2 and model.adapter_version == "student-2"
    await model.generate([_ask("q")])
    assert len(inner.calls) == 2


async def test_other_weights_under_the_same_version_name_miss() -> None:
    """The key holds the digest of the adapter's files: a project copied and trained again
    keeps its version names, never its old answers."""
    inner = ScriptedModel(default="answer")
    model = CachedModel(inner, DictCache())
    inner.adapter_version, inner.adapter_digest = "v1", "digest-a"
    await model.generate([_ask("q")])
    await model.generate([_ask("q")])
    assert len(inner.calls) == 1
    inner.adapter_digest = "digest-b"
    await model.generate([_ask("q")])
    assert len(inner.calls) == 2 and model.adapter_digest == "digest-b"
    inner.adapter_digest = "digest-a"
    await model.generate([_ask("q")])
    assert len(inner.calls) == 2


async def test_cache_off_per_model(server: OpenAITestServer) -> None:
    cache = DictCache()
    model = build_model(_cfg(server.url, cache=False), cache=cache)
    assert isinstance(model, OpenAIChatModel)
    await model.generate([_ask("q")])
    await model.generate([_ask("q")])
    assert server.requests == 2 and cache.rows == {}
    await model.aclose()


async def test_the_api_key_never_reaches_the_cache(
    server: OpenAITestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-cache-LEAKCHECK-77"
    monkeypatch.setenv("EVO_CACHE_KEY", secret)
    cache = DictCache()
    model = build_model(_cfg(server.url, api_key_env="EVO_CACHE_KEY"), cache=cache)
    await model.generate([_ask("q")])
    assert cache.rows and secret not in json.dumps(cache.rows) and secret not in repr(model)
    await model.aclose()


# -- roles -----------------------------------------------------------------------


def _models(url: str) -> dict[str, ModelConfig]:
    return {"teacher": _cfg(url), "judge": _cfg(url, cache=False)}


async def test_roles_build_each_model_once(server: OpenAITestServer) -> None:
    built: list[str] = []

    def builder(cfg: ModelConfig, *, cache=None):
        built.append(str(cfg.cache))
        return build_model(cfg, cache=cache)

    roles = RolesConfig(critic="judge", tagger="judge")
    models = ModelSet(_models(server.url), roles, cache=DictCache(), builder=builder)
    teacher = models.for_role("generator")
    assert models.for_role("evolver") is teacher and models.for_role("responder") is teacher
    judge = models.for_role("critic")
    assert models.for_role("tagger") is judge and judge is not teacher
    assert models.for_role("scorer") is judge  # unset scorer falls back to the critic
    assert models.for_role("embedder") is None  # no embedder, no student yet
    # Every model the set builds is metered for the live view, around what the builder made.
    assert isinstance(teacher, MeteredModel) and isinstance(judge, MeteredModel)
    assert isinstance(teacher.inner, CachedModel) and isinstance(judge.inner, OpenAIChatModel)
    assert len(built) == 2
    student = ScriptedModel(default="from the student", model_id="student-1")
    models.use_student(student)
    assert models.for_role("generator") is student
    assert models.for_role("embedder") is student and models.for_role("critic") is judge
    assert models.role_names()["generator"] == "student"
    models.use_student(None)
    assert models.for_role("generator") is teacher
    await models.aclose()


def test_roles_can_refuse_to_follow_the_student(server: OpenAITestServer) -> None:
    models = ModelSet(_models(server.url), RolesConfig(follow_student=False))
    models.use_student(ScriptedModel(default="x"))
    assert models.for_role("generator") is models.get("teacher")


def test_the_student_can_also_serve_the_responder(server: OpenAITestServer) -> None:
    """Iterated rejection sampling: the promoted student answers as well as generates."""
    roles = RolesConfig(student_serves=["generator", "responder"])
    models = ModelSet(_models(server.url), roles)
    student = ScriptedModel(default="x")
    models.use_student(student)
    assert models.for_role("generator") is student and models.for_role("responder") is student
    assert models.for_role("evolver") is models.get("teacher")
    assert models.role_names()["responder"] == "student"


def test_roles_naming_an_unknown_model_are_a_config_error(server: OpenAITestServer) -> None:
    with pytest.raises(ConfigError) as err:
        ModelSet(_models(server.url), RolesConfig(critic="gpt-judge"))
    assert err.value.field == "roles.critic" and "gpt-judge" in str(err.value)
    models = ModelSet(_models(server.url), RolesConfig())
    with pytest.raises(ConfigError):
        models.for_role("painter")


async def test_sampled_calls_are_cached_per_round_greedy_calls_across_rounds(
    server: OpenAITestServer,
) -> None:
    cache = DictCache()
    models = ModelSet({"teacher": _cfg(server.url)}, RolesConfig(), cache=cache)
    sampled, greedy = _ask("evolve this", temperature=1.0), _ask("judge this", temperature=0.0)
    models.set_cache_namespace("round-000001")
    teacher = models.for_role("evolver")
    await teacher.generate([sampled, greedy])
    await teacher.generate([sampled, greedy])  # a resume within round 1: both from the cache
    assert server.requests == 2
    models.set_cache_namespace("round-000002")
    await teacher.generate([sampled, greedy])  # round 2: a fresh sample, the same verdict
    assert server.requests == 3
    await models.aclose()
