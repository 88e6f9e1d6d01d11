"""A project directory: its config, pool, checkpoints, models, reports, overrides and log."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from evoinstruct.store.errors import ProjectError

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.store import Store

CONFIG_NAME = "evoinstruct.toml"
# Names the project for `langgraph dev`; `init` writes it into the project's `.env`.
PROJECT_ENV = "EVOINSTRUCT_PROJECT"
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
    def env_path(self) -> Path:
        return self.root / ".env"

    @property
    def studio_path(self) -> Path:
        return self.root / "langgraph.json"

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


SEED_FILES = {"en": "seed_tasks_en.jsonl", "zh": "seed_tasks_zh.jsonl"}


def example_seeds(project: Project, language: str = "en") -> list[Path]:
    """The example seed files `init` copies, the project language's first."""
    order = [language, *(lang for lang in SEED_FILES if lang != language)]
    return [project.root / "seeds" / SEED_FILES[lang] for lang in order if lang in SEED_FILES]


def init_project(
    root: str | Path,
    config: RunConfig | None = None,
    *,
    force: bool = False,
    language: str | None = None,
    header: str = CONFIG_HEADER,
    notes: Mapping[str, str] | None = None,
) -> Project:
    """Write a commented config and example seeds (English and Chinese) into `root`.

    `language` sets `project.language` in the written config (`en` or `zh`); `notes`
    are comments above single keys (why a profile sets them), `header` the file's opening.
    """
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.graph.config_toml import render_toml
    from evoinstruct.store import open_store

    if language is not None:
        if language not in SEED_FILES:
            raise ProjectError(
                f"unknown language {language!r}; choose one of {', '.join(SEED_FILES)}",
                field="--language",
            )
        config = config or RunConfig()
        project_section = config.project.model_copy(update={"language": language})
        config = config.model_copy(update={"project": project_section})
    project = Project(Path(root).resolve())
    if project.config_path.exists() and not force:
        raise ProjectError(
            f"{CONFIG_NAME} already exists (pass --force to overwrite)",
            file=str(project.config_path),
        )
    project.root.mkdir(parents=True, exist_ok=True)
    project.config_path.write_text(
        render_toml(config or RunConfig(), header, notes), encoding="utf-8"
    )
    seeds_dir = project.root / "seeds"
    seeds_dir.mkdir(exist_ok=True)
    packaged = resources.files("evoinstruct.prompts") / "seeds"
    for name in SEED_FILES.values():
        with resources.as_file(packaged / name) as src:
            shutil.copyfile(src, seeds_dir / name)
    for sub in (project.models_dir, project.reports_dir):
        sub.mkdir(exist_ok=True)
    open_store(project.pool_path).close()
    write_studio_files(project)
    return project


# `langgraph dev`, started in the project directory, serves the round graph from the
# installed package (module syntax: no second copy of the module from a file path) and
# loads `.env`, where the graph finds the project it runs rounds on.
STUDIO_CONFIG = {
    "dependencies": ["evoinstruct"],
    "graphs": {"evolution_round": "evoinstruct.graph.round.build:studio_graph"},
    "env": ".env",
}
ENV_HEADER = """\
# Read by `langgraph dev` (langgraph.json names this file): the project its rounds run on.
# API keys that evoinstruct.toml names in api_key_env may go here too; keep this file private.
"""


def write_studio_files(project: Project) -> None:
    """A `langgraph.json` (unless the user has one) and the project's line in `.env`.

    `.env` may hold the user's own keys, so only the EVOINSTRUCT_PROJECT line is
    replaced; every other line stays. The path is absolute, so it names the same project
    from any working directory; a project moved elsewhere needs that one line edited.
    """
    import json
    import re

    if not project.studio_path.exists():
        project.studio_path.write_text(json.dumps(STUDIO_CONFIG, indent=2) + "\n", encoding="utf-8")
    line = f"{PROJECT_ENV}={_dotenv_quote(str(project.root))}"
    if project.env_path.exists():
        ours = re.compile(rf"\s*(export\s+)?{PROJECT_ENV}\s*=")
        kept = [
            row
            for row in project.env_path.read_text(encoding="utf-8").splitlines()
            if not ours.match(row)
        ]
        text = "\n".join([*kept, line]) + "\n"
    else:
        text = ENV_HEADER + line + "\n"
    project.env_path.write_text(text, encoding="utf-8")


def _dotenv_quote(value: str) -> str:
    """A path as a dotenv value: unquoted, a " #" in it would start a comment."""
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
