"""The selector's indexes for a running daemon: built from the store once, then kept up to date.

The store is the source of truth; these in-memory indexes (exact hashes,
MinHash LSH, the ROUGE-L shortlist) are rebuilt from it when a process starts
and grow as select accepts examples. InsTag tag counts are not kept here: the
selector asks the store for the accepted pool's counts at each selection.
"""

from __future__ import annotations

from evoinstruct.agents.selector import SelectorIndexes
from evoinstruct.graph.round.deps import Deps


def selection_indexes(deps: Deps) -> SelectorIndexes:
    indexes = deps.extras.get("selector_indexes")
    if indexes is None:
        pool = deps.store.iter_examples(status="accepted")
        indexes = SelectorIndexes.build(pool, deps.config.selector, deps.store.tag_counts)
        deps.extras["selector_indexes"] = indexes
    return indexes
