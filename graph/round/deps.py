"""What nodes need, injected through the graph's runtime context: never module globals."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evoinstruct.store.stages import Stage

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.project import Project
    from evoinstruct.graph.round.training import TrainerSteps
    from evoinstruct.models.factory import ModelSet
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.store import Store


@dataclass
class Deps:
    """The store, the models by role, the prompts, the config, seeded randomness, the clock."""

    store: Store
    config: RunConfig
    prompts: PromptLibrary
    models: ModelSet  # role -> ChatModel
    project: Project | None = None
    clock: Callable[[], float] = time.monotonic
    trainer: TrainerSteps | None = None  # when the training branch is on
    extras: dict[str, Any] = field(default_factory=dict)
    # Set by the daemon the moment a stop is requested: work that can stop cleanly at once (a
    # training run, which checkpoints) need not wait for the grace before its cancellation.
    stopping: threading.Event = field(default_factory=threading.Event)

    def prompts_for(self, language: str) -> PromptLibrary:
        """The prompts of `language` (a bilingual project's other language too), overrides kept."""
        if language == self.prompts.language:
            return self.prompts
        libraries = self.extras.setdefault("prompts", {})
        if language not in libraries:
            from evoinstruct.prompts.library import PromptLibrary

            libraries[language] = PromptLibrary(language, override_dir=self.prompts.override_dir)
        return libraries[language]

    def rng(self, round: int, stage: Stage) -> random.Random:
        """One generator per (round, stage): a node re-run after a crash makes the same choices."""
        return stage_rng(self.config.project.seed, round, stage)


def stage_rng(seed: int, round: int, stage: Stage) -> random.Random:
    """The random stream of `stage` in `round` (what `Deps.rng` gives the round's node)."""
    return random.Random(f"{seed}:{round}:{stage}")


def deps_for_project(
    project: Project, config: RunConfig, *, models: ModelSet | None = None
) -> Deps:
    """Open the project's store and wire models, prompts and the trainer from its config.

    `models` replaces the configured models (tests pass a ModelSet of doubles).
    """
    from evoinstruct.graph.round.training import TrainerSteps
    from evoinstruct.models.factory import ModelSet
    from evoinstruct.prompts.library import PromptLibrary

    store = project.open_store()
    prompts = PromptLibrary(config.project.language, override_dir=project.prompts_dir)
    if models is None:
        models = ModelSet(config.models, config.roles, cache=store)
    trainer = TrainerSteps(config.trainer, project.root, weak_to_strong=config.weak_to_strong)
    return Deps(
        store=store, config=config, prompts=prompts, models=models, project=project, trainer=trainer
    )
