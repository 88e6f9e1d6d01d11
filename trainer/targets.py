"""Which model answers the suite for `evoinstruct eval`: a version, the base student, the teacher.

`models` is the run's model set (`models.factory.ModelSet`): named
configs, roles, `fresh(name)` for a model of our own and `get(name)` for a
shared one. A version or the base is served by a fresh student instance with
the version's adapter handed to it (or none), exactly as the generator would
serve it; the teacher is the model configured under that name, else the one
answering the pool's instructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evoinstruct.models.base import ChatModel
from evoinstruct.store.errors import InputError
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.suite import Suite
from evoinstruct.trainer.verifiable import Progress, SuiteResult, run_suite

if TYPE_CHECKING:
    from evoinstruct.store import Store


def teacher_model(models: Any) -> ChatModel:
    """The teacher: the model configured as "teacher", else the one writing the pool's answers."""
    if "teacher" in models.configs:
        return models.get("teacher")
    return models.for_role("responder")


@dataclass
class Target:
    """A model ready to answer, what to call it, and whether we must close it."""

    label: str
    model: ChatModel
    version_row: dict[str, Any] | None = None
    owned: bool = False

    async def close(self) -> None:
        if self.owned:
            await self.model.aclose()


async def resolve_target(store: Store, models: Any, target: str | None) -> Target:
    """`vN` (a registered version), `base`, `teacher`, or None: the active generator.

    Before any promotion (or with roles.follow_student off) the active generator
    is the model of the generator role, named by its config name.
    """
    from evoinstruct.trainer.promote import hand_off

    if target is None:
        active = store.active_model()
        if active is not None and models.roles.follow_student:
            target = active["version"]
        else:
            return Target(models.roles.generator, models.for_role("generator"))
    if target == "teacher":
        return Target("teacher", teacher_model(models))
    row = None
    if target != "base":
        row = store.model_version(target)
        if row is None:
            known = ", ".join(v["version"] for v in store.model_versions()) or "none"
            raise InputError(
                f"no model version {target!r} (known: {known}; or base, teacher)", field="TARGET"
            )
    # Through the response cache (keyed by the adapter served): a stopped evaluation keeps
    # what it answered, and the next one reads it back.
    student = models.fresh(models.roles.student, cached=True)
    try:
        await hand_off(student, row)  # None drops an adapter the config may load on start
    except BaseException:
        await student.aclose()
        raise
    return Target(target, student, row, owned=True)


async def evaluate_target(
    store: Store,
    models: Any,
    suite: Suite,
    cfg: TrainerConfig,
    target: str | None,
    *,
    reuse: bool = True,
    progress: Progress | None = None,
) -> SuiteResult:
    """Resolve the target, answer the suite with it (or reuse its stored result), store it."""
    chosen = await resolve_target(store, models, target)
    try:
        row = chosen.version_row
        return await run_suite(
            store,
            suite,
            chosen.model,
            cfg.suite,
            label=chosen.label,
            version=row["version"] if row else None,
            adapter_path=row["path"] if row else None,
            reuse=reuse,
            confidence=cfg.gate.confidence,
            progress=progress,
        )
    finally:
        await chosen.close()
