"""The selector's indexes for a running daemon: kept in SQLite beside the pool, never rebuilt at start.

What the selector needs per accepted example (exact hash, MinHash signature
and LSH band keys, the novelty filter's token ids and postings) lives in
`pool.selector.db` next to `pool.db` and follows the store's change log
(`agents.selection.pool_index`): opening it applies what changed since the daemon last
ran, and memory stays flat however large the pool grows. The store remains
the source of truth. InsTag tag counts are not kept here: the selector asks
the store for the accepted pool's counts at each selection.
"""

from __future__ import annotations

from evoinstruct.agents.selection.pool_indexes import open_pool_indexes
from evoinstruct.agents.selector import SelectorIndexes
from evoinstruct.graph.round.deps import Deps


def selection_indexes(deps: Deps) -> SelectorIndexes:
    indexes = deps.extras.get("selector_indexes")
    if indexes is None:
        indexes = open_pool_indexes(deps.store, deps.config.selector, deps.store.tag_counts)
        deps.extras["selector_indexes"] = indexes
    return indexes
