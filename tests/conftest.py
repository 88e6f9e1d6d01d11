"""Shared fixtures: projects in tmp dirs, tiny models built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


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
    from evoinstruct.agents.models.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")
