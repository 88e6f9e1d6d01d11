"""The round graph as LangGraph Studio (`langgraph dev`) serves it: real dependencies per run.

The API server hands a graph only JSON: the run's `context` is a dict, and LangGraph
would coerce it with `Deps(**context)`, which cannot work (a store, models and
prompts are not JSON). So the served graph declares a small JSON context
(`StudioContext`: which project, which `--set` overrides) and opens the project's
`Deps` itself at the start of every run, closing them when the run ends or
pauses at an interrupt. Opening per run, not per server, keeps no SQLite
connection or model alive between runs and picks up config edits at once.

A run with an input starts the project's next round, as the daemon does
(`start_round`, the active model version, a fresh cache namespace); a run with
no input (Studio's "continue" after an interrupt) resumes the thread's round.
One thread holds one round, as in the daemon: a second round needs a new thread,
because the state's reducers would merge the old round's counts and notes in.

The project comes from the run's context (`project`), else from the
EVOINSTRUCT_PROJECT environment variable, which `evoinstruct init` writes into
the project's `.env`, the file its `langgraph.json` names.
"""

from __future__ import annotations

import os
import typing
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import typing_extensions
from filelock import FileLock, Timeout
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from evoinstruct.graph.project import PROJECT_ENV, Project
from evoinstruct.graph.round.deps import Deps
from evoinstruct.store.errors import EvoError

# Set to "false" by `langgraph dev` unless it runs with --allow-blocking; then its
# BlockBuster turns every synchronous SQLite call of the store into an error.
ALLOW_BLOCKING_ENV = "LANGGRAPH_ALLOW_BLOCKING"


class StudioError(EvoError, RuntimeError):
    """A run that cannot start or failed, worded for the user.

    A RuntimeError too: the API server shows Studio the message of builtin error types only
    and replaces any other with "An internal error occurred".
    """


class StudioContext(BaseModel):
    """What a Studio run may choose; everything else comes from the project's config."""

    model_config = ConfigDict(extra="ignore")

    project: str | None = Field(
        default=None,
        description=f"Project directory; empty uses ${PROJECT_ENV} (from the project's .env).",
    )
    overrides: list[str] = Field(
        default_factory=list,
        description='Config overrides as on the command line\'s --set: "loop.generate_calls=2".',
    )


class StudioInput(BaseModel):
    """A run's input in Studio's form: nothing, usually."""

    round: int | None = Field(
        default=None,
        description="Leave empty to run the project's next round.",
    )


def resolve_project(settings: StudioContext) -> Project:
    """The run's project: its context first, then the environment."""
    where = settings.project or os.environ.get(PROJECT_ENV)
    if not where:
        raise StudioError(
            f"no project for this run: set {PROJECT_ENV} (the .env that `evoinstruct init` "
            "writes beside langgraph.json does) or pass `project` in the run's context"
        )
    try:
        return Project(Path(where).expanduser().resolve()).require()
    except EvoError as exc:
        raise StudioError(str(exc)) from exc


def _refuse_blockbuster() -> None:
    if os.environ.get(ALLOW_BLOCKING_ENV, "").lower() == "false":
        raise StudioError(
            "the round's store is synchronous SQLite, which `langgraph dev` forbids in a run "
            "unless it is started as `langgraph dev --allow-blocking`"
        )


@asynccontextmanager
async def open_deps(project: Project, overrides: list[str]) -> AsyncIterator[Deps]:
    """The daemon's wiring for one run, with the project's lock held throughout.

    The lock is the daemon's: a daemon and a Studio run on one project would race for
    round numbers and both write the same stages.
    """
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.graph.round.training import activate_student

    lock = FileLock(str(project.lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StudioError(
            f"the project {project.root} is busy: a daemon or another Studio run holds its "
            "lock (`evoinstruct stop` stops a daemon)"
        ) from None
    try:
        deps = deps_for_project(project, project.load_config(overrides))
        try:
            await activate_student(deps.store, deps.models)
            yield deps
        finally:
            await deps.models.aclose()
            deps.store.close()
    finally:
        lock.release()


def begin_round(deps: Deps, given: Mapping[str, Any]) -> dict[str, Any]:
    """Record the round in the store and build the input the daemon would give it."""
    last = deps.store.last_round()
    number = given.get("round") or (last["number"] if last else 0) + 1
    active = deps.store.active_model()
    version = active["version"] if active else None
    deps.store.start_round(number, deps.config.model_dump(mode="json"), version)
    return {"round": number, "model_version": version, "counts": {}, "notes": []}


def _portable_jsonschema(schema: Any) -> dict[str, Any]:
    """JSON schema of a state TypedDict; pydantic refuses `typing.TypedDict` before 3.12."""
    if typing.is_typeddict(schema):
        hints = typing.get_type_hints(schema, include_extras=True)
        schema = typing_extensions.TypedDict(schema.__name__, hints, total=schema.__total__)  # type: ignore[operator]
    return TypeAdapter(schema).json_schema()


class StudioGraph(CompiledStateGraph):
    """The compiled round graph whose runs open the project's `Deps` from a JSON context.

    Every way the server runs a graph (astream, astream_events v2 and v3, ainvoke) goes
    through `astream`, so that is the one place the context is swapped. A `Deps` passed
    in (tests, in-process use) is used as it is.
    """

    @classmethod
    def from_compiled(cls, graph: CompiledStateGraph) -> StudioGraph:
        # The same construction as Pregel.copy, under this class.
        attrs = {k: v for k, v in graph.__dict__.items() if k != "__orig_class__"}
        return cls(**{**attrs, "context_schema": StudioContext})

    def get_input_jsonschema(self, config: Any = None) -> dict[str, Any]:
        return StudioInput.model_json_schema()

    def get_output_jsonschema(self, config: Any = None) -> dict[str, Any]:
        return _portable_jsonschema(self.builder.output_schema)

    async def astream(  # type: ignore[override]
        self, input: Any, config: Any = None, *, context: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        if isinstance(context, Deps):
            async for chunk in super().astream(input, config, context=context, **kwargs):
                yield chunk
            return
        _refuse_blockbuster()
        settings = StudioContext.model_validate(
            context.model_dump() if isinstance(context, BaseModel) else context or {}
        )
        project = resolve_project(settings)
        number = await self._round_of(input, config)
        try:
            async with open_deps(project, settings.overrides) as deps:
                if isinstance(input, Mapping):
                    input = begin_round(deps, input)
                    number = input["round"]
                if number is not None:
                    from evoinstruct.graph.round.threads import thread_id

                    # Sampled calls get per-round cache entries, as in the daemon.
                    deps.models.set_cache_namespace(thread_id(number))
                async for chunk in super().astream(input, config, context=deps, **kwargs):
                    yield chunk
        except EvoError as exc:
            if isinstance(exc, StudioError):
                raise
            what = f"round {number} failed" if number is not None else "the round cannot start"
            raise StudioError(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def _round_of(self, input: Any, config: Any) -> int | None:
        """The round this thread already holds; a fresh input on such a thread is refused."""
        if self.checkpointer is None or not (config or {}).get("configurable", {}).get("thread_id"):
            return None
        held = (await self.aget_state(config)).values.get("round")
        if held is not None and isinstance(input, Mapping):
            raise StudioError(
                f"this thread already ran round {held}: start a new thread for a new round"
            )
        return held
