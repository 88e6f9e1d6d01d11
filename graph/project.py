"""A project directory: its config, pool, checkpoints, models, reports, overrides and log."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from evoinstruct.store.errors import ProjectError

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.store import Store

CONFIG_NAME = "evoinstruct.toml"
CONFIG_HEADER = """\
evoinstruct project config.
Layers: these values < environment EVOINSTRUCT__SECTION__KEY=value < `--set section.key=value`.
API keys are never written here: name the environment variable in api_key_env.
Every key is documented in the README's config reference.
"""


@dataclass(frozen=True)
class Project:
    """Paths of one project; nothing here opens a file until asked."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def pool_path(self) -> Path:
        return self.root / "pool.db"

    @property
    def checkpoints_path(self) -> Path:
        return self.root / "checkpoints.db"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def prompts_dir(self) -> Path:
        return self.root / "prompts"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    @property
    def lock_path(self) -> Path:
        return self.root / ".daemon.lock"

    @property
    def stop_path(self) -> Path:
        return self.root / ".stop-requested"

    def require(self) -> Project:
        if not self.config_path.is_file():
            raise ProjectError(
                f"not an evoinstruct project (no {CONFIG_NAME}); run `evoinstruct init {self.root}`",
                file=str(self.root),
            )
        return self

    def load_config(self, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        from evoinstruct.graph.config import load_config

        return load_config(self.require().config_path, overrides)

    def open_store(self) -> Store:
        from evoinstruct.store import open_store

        return open_store(self.require().pool_path)


def init_project(
    root: str | Path, config: RunConfig | None = None, *, force: bool = False
) -> Project:
    """Write a commented config and example seeds (English and Chinese) into `root`."""
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.config_toml import render_toml
    from evoinstruct.store import open_store

    project = Project(Path(root).resolve())
    if project.config_path.exists() and not force:
        raise ProjectError(
            f"{CONFIG_NAME} already exists (pass --force to overwrite)",
            file=str(project.config_path),
        )
    project.root.mkdir(parents=True, exist_ok=True)
    project.config_path.write_text(
        render_toml(config or RunConfig(), CONFIG_HEADER), encoding="utf-8"
    )
    seeds_dir = project.root / "seeds"
    seeds_dir.mkdir(exist_ok=True)
    packaged = resources.files("evoinstruct.prompts") / "seeds"
    for name in ("seed_tasks_en.jsonl", "seed_tasks_zh.jsonl"):
        with resources.as_file(packaged / name) as src:
            shutil.copyfile(src, seeds_dir / name)
    for sub in (project.models_dir, project.reports_dir):
        sub.mkdir(exist_ok=True)
    open_store(project.pool_path).close()
    return project
