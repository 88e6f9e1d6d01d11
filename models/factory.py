"""Build models from config, and resolve which model serves each role.

`build_model` turns one ModelConfig into a ChatModel (wrapped by the response
cache when a cache is given and the model's `cache` is on). `ModelSet` holds
the configured models by name, builds each one once on first use, and answers
`for_role(role)` from the roles table — the generator follows a promoted
student once `use_student` has been called, the scorer falls back to the
critic, and the embedder to the student.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from evoinstruct.models.activity import Activity, MeteredModel
from evoinstruct.models.base import ChatModel, Failure, Result, probe
from evoinstruct.models.cache import CachedModel, ResponseCache
from evoinstruct.models.config import ROLES, ModelConfig, RolesConfig
from evoinstruct.store.errors import ConfigError


def build_model(cfg: ModelConfig, *, cache: ResponseCache | None = None) -> ChatModel:
    """One backend for one config; heavy libraries load only for the backend chosen."""
    model: ChatModel
    if cfg.backend == "openai":
        from evoinstruct.models.openai_backend import OpenAIChatModel

        model = OpenAIChatModel(
            cfg, backoff_initial=cfg.backoff_initial_s, backoff_max=cfg.backoff_max_s
        )
    elif cfg.backend == "transformers":
        from evoinstruct.models.transformers_backend import TransformersModel

        model = TransformersModel(cfg)
    else:
        from evoinstruct.models.vllm_backend import VLLMModel

        model = VLLMModel(cfg)
    if cache is not None and cfg.cache:
        return CachedModel(model, cache)
    return model


Builder = Callable[..., ChatModel]


class ModelSet:
    """The run's models by name and the role → model table; each model is built once."""

    def __init__(
        self,
        models: dict[str, ModelConfig],
        roles: RolesConfig,
        *,
        cache: ResponseCache | None = None,
        builder: Builder = build_model,
        activity: Activity | None = None,
    ) -> None:
        for role in ROLES:
            name = getattr(roles, role)
            if name is not None and name not in models:
                known = ", ".join(sorted(models)) or "none"
                raise ConfigError(
                    f"role {role} names model {name!r}, which is not configured (models: {known})",
                    field=f"roles.{role}",
                )
        self.configs = dict(models)
        self.roles = roles
        self._cache = cache
        self._builder = builder
        # Every call of every model built here is counted, for the live view.
        self.activity = activity or Activity()
        self._built: dict[str, ChatModel] = {}
        self.student: ChatModel | None = None
        self._namespace: str | None = None

    def get(self, name: str) -> ChatModel:
        """The model configured under `name`, built on first use."""
        if name not in self._built:
            if name not in self.configs:
                raise ConfigError(f"no model named {name!r} is configured", field=f"models.{name}")
            built = self._builder(self.configs[name], cache=self._cache)
            self._built[name] = MeteredModel(built, self.activity)
            self._apply_namespace(self._built[name])
        return self._built[name]

    def load(self, roles: Sequence[str]) -> list[str]:
        """Build now every configured model serving `roles` (a model loads in seconds to
        minutes; the daemon does this in a worker thread, where it blocks nothing); returns
        their names. Built models are kept, so a later `for_role` finds them ready."""
        names = sorted({n for r in roles if (n := getattr(self.roles, r, None)) in self.configs})
        for name in names:
            self.get(name)
        return names

    def fresh(self, name: str, *, cached: bool = False) -> ChatModel:
        """A new instance of a configured model, owned (and closed) by the caller; `cached`:
        its calls go through the response cache, keyed by the adapter it serves."""
        if name not in self.configs:
            raise ConfigError(f"no model named {name!r} is configured", field=f"models.{name}")
        cache = self._cache if cached else None
        return MeteredModel(self._builder(self.configs[name], cache=cache), self.activity)

    def use_student(self, model: ChatModel | None) -> None:
        """The promoted student (None to go back to the configured generator)."""
        self.student = model
        self._apply_namespace(model)

    def _student_serves(self, role: str) -> bool:
        return (
            self.student is not None
            and self.roles.follow_student
            and role in self.roles.student_serves
        )

    def for_role(self, role: str) -> ChatModel | None:
        """The model serving `role`. Only the embedder can be None: no embedder and no student."""
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r} (roles: {', '.join(ROLES)})", field="roles")
        if self._student_serves(role):
            return self.student
        name = getattr(self.roles, role)
        if name is not None:
            return self.get(name)
        if role == "scorer":
            return self.for_role("critic")
        return self.student  # the embedder falls back to the student's hidden states

    def role_names(self) -> dict[str, str | None]:
        """Which configured name (or "student") serves each role right now, for status output."""
        names: dict[str, str | None] = {}
        for role in ROLES:
            if self._student_serves(role):
                names[role] = "student"
            elif (name := getattr(self.roles, role)) is not None:
                names[role] = name
            else:
                names[role] = (
                    self.roles.critic
                    if role == "scorer"
                    else ("student" if self.student is not None else None)
                )
        return names

    def set_cache_namespace(self, namespace: str | None) -> None:
        """Key sampled calls by `namespace` (the daemon's round) in every cached model."""
        self._namespace = namespace
        for model in [*self._built.values(), self.student]:
            self._apply_namespace(model)

    def _apply_namespace(self, model: ChatModel | None) -> None:
        if model is not None and hasattr(model, "namespace"):
            model.namespace = self._namespace

    async def preflight(self, roles: Sequence[str]) -> dict[str, Failure]:
        """One probe (short timeout, a few retries of transient errors) to each HTTP model the roles use.

        Returns the failures by model name; in-process models are left out (loading
        them is the check). A daemon calls this before its first round, so a wrong
        URL or key fails at once instead of filling a round with failed calls.
        """
        names = sorted(
            {n for r in roles if (n := getattr(self.roles, r, None)) and n in self.configs}
        )
        checked = [n for n in names if self.configs[n].backend == "openai"]

        async def one(name: str) -> Result:
            quick = self.configs[name].for_probe()
            model = self._builder(quick)
            try:
                result = await probe(model)
            finally:
                await model.aclose()
            return result

        results = await asyncio.gather(*(one(n) for n in checked))
        return {n: r for n, r in zip(checked, results, strict=True) if isinstance(r, Failure)}

    async def aclose(self) -> None:
        """Close every model this set built (the student belongs to whoever built it)."""
        for model in self._built.values():
            await model.aclose()
        self._built.clear()
