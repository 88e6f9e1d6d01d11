"""The Store facade: one object that owns all SQL of the pool."""

from __future__ import annotations

from pathlib import Path

from evoinstruct.store.cache import CacheMixin
from evoinstruct.store.db import open_store_db
from evoinstruct.store.evals import EvalsMixin
from evoinstruct.store.experiments import ExperimentsMixin
from evoinstruct.store.generation_calls import GenerationCallsMixin
from evoinstruct.store.pool import PoolMixin
from evoinstruct.store.preferences import PreferencesMixin
from evoinstruct.store.registry import RegistryMixin
from evoinstruct.store.runs import RunsMixin
from evoinstruct.store.starts import StartsMixin


class Store(
    PoolMixin,
    RunsMixin,
    StartsMixin,
    RegistryMixin,
    CacheMixin,
    EvalsMixin,
    PreferencesMixin,
    ExperimentsMixin,
    GenerationCallsMixin,
):
    """The one object other packages use to read and write the pool."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = open_store_db(self.path)

    def close(self) -> None:
        self.db.close()

    def checkpoint_wal(self) -> None:
        """Fold the WAL back into the database file (after pruning, on shutdown)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path) -> Store:
    """Open the pool at `path` (WAL, busy timeout, migrations applied)."""
    return Store(path)
