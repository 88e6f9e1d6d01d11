"""Shared fixtures: projects in tmp dirs, tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `make test` runs one pytest worker per core (pytest-xdist): each worker's torch, and every
# process a test starts, computes on one thread, or the workers would fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """An initialised project directory (config, example seeds, empty pool)."""
    from evoinstruct.graph.project import init_project

    return init_project(tmp_path / "proj").root


@pytest.fixture
def store(tmp_path: Path):
    from evoinstruct.store import open_store

    s = open_store(tmp_path / "pool.db")
    yield s
    s.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight llama with a trained tokenizer, built once for the whole session."""
    from evoinstruct.models.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def scripted_deps(tmp_path: Path):
    """A fresh project's dependencies with every model the scripted teacher (in extras)."""
    from evoinstruct.graph.project import init_project
    from evoinstruct.graph.round.deps import deps_for_project
    from evoinstruct.models.factory import ModelSet
    from tests.fake_teacher import scripted_teacher

    project = init_project(tmp_path / "proj")
    config = project.load_config()
    teacher = scripted_teacher()
    models = ModelSet(config.models, config.roles, builder=lambda cfg, cache=None: teacher)
    deps = deps_for_project(project, config, models=models)
    deps.extras["teacher"] = teacher
    yield deps
    deps.store.close()


@pytest.fixture
def seeded_deps(scripted_deps):
    """`scripted_deps` with the English example seeds in the pool."""
    from evoinstruct.store.seeds import add_seed_file

    seeds = scripted_deps.project.root / "seeds" / "seed_tasks_en.jsonl"
    add_seed_file(scripted_deps.store, seeds)
    return scripted_deps
