"""Opening the selector's persistent indexes over a store: one index file (`PoolIndex`) read
by its two views, exact and near dedup (`PoolDedup`) and ROUGE-L novelty (`PoolNovelty`).

Apart from the three modules so that none of them imports another back: the views read
the index, the index knows nothing of its views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from evoinstruct.agents.selection.pool_dedup import PoolDedup
from evoinstruct.agents.selection.pool_index import PoolIndex
from evoinstruct.agents.selection.pool_novelty import PoolNovelty
from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes, decontaminator

if TYPE_CHECKING:
    from evoinstruct.store import Store


def open_pool_indexes(
    store: Store,
    config: SelectorConfig,
    tag_counts: Callable[[], Mapping[str, int]] | None = None,
) -> SelectorIndexes:
    """The selector's indexes over `store`'s accepted pool, read from its index file."""
    index = PoolIndex(store, config)
    return SelectorIndexes(
        dedup=PoolDedup(index),
        novelty=PoolNovelty(index),
        decontam=decontaminator(config),
        tag_counts=tag_counts,
    )
