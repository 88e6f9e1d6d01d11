"""Writing the pool out in the formats LLaMA-Factory, TRL and `datasets` read.

The format is the row shape (alpaca, sharegpt, openai; `parquet` is alpaca rows),
the output's suffix the container (.json, .jsonl, .parquet). `export` writes the
data file alone (`evoinstruct filter` uses it); `export_dataset` also writes a
dataset card (README.md with the Hub's YAML header and the pool's provenance) and a
LLaMA-Factory `dataset_info.json` entry beside it; `push_to_hub` uploads both.

Every file is written one way: into a hidden partial file beside its target, then
renamed over it, all files of one export together or none. A symlink is written
through (its target is replaced), a device, FIFO or directory is refused, and an
OSError becomes one line naming the file, with nothing left behind.

The modules, one job each: `names` (model names without local paths), `rows` (row
shapes and lineage columns), `selection` (the filter, the stream from the store and
its counts), `containers` (JSON, JSON Lines, Parquet and their schemas), `files` (safe
writing), `card` (the dataset card), `dataset_info` (LLaMA-Factory's entry), `dataset`
(`export` and `export_dataset`) and `hub` (the push).
"""

from __future__ import annotations

from evoinstruct.store.export.card import (
    CARD_MARKER,
    CARD_NAME,
    COLUMNS,
    LINEAGE_COLUMNS,
    CardData,
    CardOptions,
    card_path,
    render_card,
    size_category,
)
from evoinstruct.store.export.containers import (
    EXPORT_SUFFIXES,
    PARQUET_BATCH,
    output_container,
)
from evoinstruct.store.export.dataset import (
    SPLIT_STEMS,
    ExportResult,
    export,
    export_dataset,
    split_of,
)
from evoinstruct.store.export.dataset_info import (
    DATASET_INFO,
    dataset_info_entry,
    read_dataset_info,
)
from evoinstruct.store.export.files import OutputFiles
from evoinstruct.store.export.hub import HUB_PROBE_TIMEOUT_S, check_hub_push, push_to_hub
from evoinstruct.store.export.names import is_local_path, model_aliases, model_label, model_name
from evoinstruct.store.export.rows import (
    CONSTRAINT_PARAMS,
    EXPORT_FORMATS,
    constraints_of,
    to_record,
)
from evoinstruct.store.export.selection import (
    ExportFilter,
    ExportStats,
    iter_export,
    parse_min_score,
)

__all__ = [
    "CARD_MARKER",
    "CARD_NAME",
    "COLUMNS",
    "CONSTRAINT_PARAMS",
    "DATASET_INFO",
    "EXPORT_FORMATS",
    "EXPORT_SUFFIXES",
    "HUB_PROBE_TIMEOUT_S",
    "LINEAGE_COLUMNS",
    "PARQUET_BATCH",
    "SPLIT_STEMS",
    "CardData",
    "CardOptions",
    "ExportFilter",
    "ExportResult",
    "ExportStats",
    "OutputFiles",
    "card_path",
    "check_hub_push",
    "constraints_of",
    "dataset_info_entry",
    "export",
    "export_dataset",
    "is_local_path",
    "iter_export",
    "model_aliases",
    "model_label",
    "model_name",
    "output_container",
    "parse_min_score",
    "push_to_hub",
    "read_dataset_info",
    "render_card",
    "size_category",
    "split_of",
    "to_record",
]
