"""The dataset card: README.md with the Hub's YAML header and the pool's provenance."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoinstruct.store.export.containers import EXPORT_SUFFIXES
from evoinstruct.store.export.dataset_info import DATASET_INFO, dataset_info_entry
from evoinstruct.store.export.names import is_local_path, model_label, model_name
from evoinstruct.store.export.pairs import COLUMNS as PAIR_COLUMNS
from evoinstruct.store.export.pairs import LINEAGE_COLUMNS as PAIR_LINEAGE_COLUMNS
from evoinstruct.store.export.pairs import PairStats
from evoinstruct.store.export.selection import ExportFilter, ExportStats

CARD_NAME = "README.md"
# Written at the end of every card: a README.md carrying it is ours to replace.
CARD_MARKER = "<!-- written by `evoinstruct export`: exporting here again replaces this file -->"

# What each kind of withheld example is, as the card says it.
WITHHELD = {
    "suite": "copy a suite prompt",
    "held_out_type": "carry a held-out constraint type",
    "suite_phrasing": "carry a suite-only phrasing",
}


@dataclass
class CardOptions:
    """What the card and dataset_info.json entry need beyond the pool itself."""

    name: str
    license: str | None = None
    language: str = "en"  # when no exported example says which language it is in
    version: str = "unknown"  # of evoinstruct


@dataclass
class CardData:
    """Everything a card says, collected once: rendered for the local files and for the Hub."""

    options: CardOptions
    fmt: str
    container: str
    filt: ExportFilter
    with_lineage: bool
    stats: ExportStats | PairStats
    pool: dict[str, Any]
    rounds: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    rejections: list[tuple[str, str, int]]
    exported_at: str
    aliases: dict[str, str] = field(default_factory=dict)


def size_category(n: int) -> str:
    """The Hub's `size_categories` value for n rows."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    return next((label for bound, label in bounds if n < bound), "n>1B")


def _is_our_card(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return CARD_MARKER in fh.read(1_000_000)
    except OSError:
        return False


def card_path(out: Path) -> Path:
    """Where the card of `out` goes: README.md of its directory, as the Hub and
    `load_dataset(DIR)` read it, unless that README.md is someone else's (a project's
    or repository's own): then `<stem>.README.md` beside the data, left for the user to
    move."""
    readme = out.parent / CARD_NAME
    if not (readme.exists() or readme.is_symlink()) or _is_our_card(readme):
        return readme
    return out.with_name(f"{out.stem}.{CARD_NAME}")


def _scrub(value: Any) -> Any:
    """A config value as a card shows it: local paths by name only."""
    if isinstance(value, str):
        return model_name(value) if is_local_path(value) else value
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def _short(value: Any) -> str:
    value = _scrub(value)
    if isinstance(value, list) and len(value) > 6:
        return f"{len(value)} items"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return "none" if value is None else str(value)


def _settings(prefix: str, section: Mapping[str, Any]) -> list[str]:
    """One line per part of a config section: `off`, or its settings."""
    lines: list[str] = []
    scalars: list[str] = []
    for key, value in section.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            if value.get("enabled") is False:
                lines.append(f"- `{prefix}.{key}`: off")
            elif key in ("min_scores", "max_scores"):
                scalars.append(f"{key}={_short(value)}")
            else:
                lines.extend(_settings(f"{prefix}.{key}", value))
        elif key != "enabled":
            scalars.append(f"{key}={_short(value)}")
    if scalars:
        lines.insert(0, f"- `{prefix}`: " + ", ".join(scalars))
    return lines


def _models_by_role(config: Mapping[str, Any]) -> list[str]:
    models = config.get("models") or {}
    roles = config.get("roles") or {}
    lines = []
    for role, name in roles.items():
        if not isinstance(name, str) or role == "student":
            continue
        if name in models:
            lines.append(f"{role}: {model_label(models[name])} (`{name}`)")
    student = roles.get("student")
    if roles.get("follow_student") and isinstance(student, str) and student in models:
        lines.append(
            f"student (generates once a version is promoted): {model_label(models[student])}"
        )
    return lines


def _counts(counter: Mapping[Any, int], total: int) -> str:
    return ", ".join(
        f"{k} {n} ({100 * n / total:.0f}%)" if total else f"{k} {n}"
        for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))
    )


COLUMNS = {
    "alpaca": [
        ("instruction", "the task"),
        ("input", "its input (may be empty)"),
        ("output", "the response"),
        ("system", "system prompt (may be empty)"),
    ],
    "sharegpt": [
        ("conversations", "turns `{from, value}`, `from` human or gpt"),
        ("system", "system prompt (may be empty)"),
    ],
    "openai": [("messages", "turns `{role, content}`, `role` system, user or assistant")],
}
LINEAGE_COLUMNS = [
    ("id", "content-hash id in the pool (`evoinstruct inspect example ID`)"),
    ("parent_id", "the example it was evolved or rewritten from"),
    ("operation", "how: self_instruct, an Evol-Instruct operation, realign:TYPE"),
    ("round", "the round it was made in (0: seeds)"),
    ("source", "seed, generated, evolved, rewritten"),
    ("status", "accepted, rejected, candidate, superseded"),
    ("model_version", "the model that wrote it, by name (a student version such as v3)"),
    ("scores", "list of `{scorer, dimension, value}`"),
    ("constraints", "verifiable constraints `{id, params}` (IFEval ids)"),
]


# For chat models: TRL applies the model's chat template to conversational rows only.
PAIRS_TO_CONVERSATION = [
    "",
    "# TRL's conversational form, so DPOTrainer applies the model's chat template:",
    "data = data.map(",
    "    lambda r: {",
    '        "prompt": ([{"role": "system", "content": r["system"]}] if r["system"] else [])',
    '        + [{"role": "user", "content": r["prompt"]}],',
    '        "chosen": [{"role": "assistant", "content": r["chosen"]}],',
    '        "rejected": [{"role": "assistant", "content": r["rejected"]}],',
    "    },",
    '    remove_columns=["system"],',
    ")",
]
PAIRS_TRL = (
    "TRL: `DPOTrainer(model=..., args=DPOConfig(...), train_dataset=data)` reads the rows "
    "as loaded (plain-text prompts) or as mapped above (chat messages)."
)


def render_card(
    card: CardData, data_files: Sequence[Mapping[str, str]], repo: str | None = None
) -> str:
    """The dataset card: the Hub's YAML header, how to load it, and the pool's provenance.

    `data_files` are the `configs` entries (paths relative to the card); `repo` is the Hub
    repo the card is for (None: a local directory).
    """
    import yaml

    opts, stats = card.options, card.stats
    languages = [lang for lang, _ in stats.languages.most_common() if lang in ("en", "zh")]
    header = {
        "language": languages or [opts.language],
        "license": opts.license or "unknown",
        "size_categories": [size_category(stats.count)],
        "task_categories": ["text-generation"],
        "tags": [
            "synthetic",
            "instruction-tuning",
            "self-instruct",
            "evol-instruct",
            "evoinstruct",
        ],
        "pretty_name": opts.name,
        "configs": [{"config_name": "default", "data_files": [dict(d) for d in data_files]}],
    }
    pairs = isinstance(stats, PairStats)
    if pairs:
        header["tags"] += ["dpo", "preference"]
    elif stats.sources.get("rewritten"):
        header["tags"].append("realign")
    shape = "alpaca" if card.fmt == "parquet" else card.fmt
    container = EXPORT_SUFFIXES[f".{card.container}"]
    files = ", ".join(f"`{d['path']}`" for d in data_files)
    first = data_files[0]
    if repo:
        entry = {"hf_hub_url": repo, **dataset_info_entry(card.fmt, "")}
        entry.pop("file_name")
        factory = (
            f"LLaMA-Factory: add `{opts.name}` to your `{DATASET_INFO}` as "
            f"`{json.dumps(entry, ensure_ascii=False)}`."
        )
    else:
        factory = (
            f"LLaMA-Factory: `{DATASET_INFO}` beside the data names it `{opts.name}` "
            f"(`dataset: {opts.name}` with `dataset_dir` this directory). Data: {files}."
        )
    builder = "parquet" if card.container == "parquet" else "json"
    load = (
        f'data = load_dataset("{repo}", split="{first["split"]}")'
        if repo
        else f'data = load_dataset("{builder}", data_files="{first["path"]}", split="train")'
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {opts.name}",
        "",
        _intro(stats, shape, container),
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        load,
        *(PAIRS_TO_CONVERSATION if pairs else []),
        "```",
        "",
        *([PAIRS_TRL, ""] if pairs else []),
        factory,
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "| --- | --- |",
    ]
    if pairs:
        columns = PAIR_COLUMNS + (PAIR_LINEAGE_COLUMNS if card.with_lineage else [])
    else:
        columns = COLUMNS[shape] + (LINEAGE_COLUMNS if card.with_lineage else [])
    lines += [f"| `{name}` | {meaning} |" for name, meaning in columns]
    lines += ["", "## Composition", ""]
    if pairs:
        lines += stats.lines()
    else:
        lines += _example_composition(stats)
    lines.append(f"- Exported: {'; '.join(card.filt.describe())}")
    lines += _provenance(card)
    lines += ["", f"Exported by evoinstruct {opts.version} on {card.exported_at}.", "", CARD_MARKER]
    return "\n".join(lines) + "\n"


def _intro(stats: ExportStats | PairStats, shape: str, container: str) -> str:
    if isinstance(stats, PairStats):
        return (
            f"{stats.count} preference pairs in prompt/chosen/rejected rows ({container}), "
            "verified in code with no judge: evoinstruct's responder draws several answers to "
            "one prompt with verifiable constraints (IFEval-style) and checks each. `chosen` "
            "passes every constraint of the prompt strictly; `rejected` is an answer to the same "
            "prompt, from the same draw, that fails at least one (SPaR, Tülu 3). No pair comes "
            "from two prompts or from a draw where no answer passed."
        )
    return (
        f"{stats.count} instruction-tuning examples in {shape} rows ({container}), grown with "
        "evoinstruct: LLM agents generate tasks (Self-Instruct), evolve them (Evol-Instruct), "
        "answer, judge and filter them."
    )


def _example_composition(stats: ExportStats) -> list[str]:
    lines = []
    lines.append(f"- Languages: {_counts(stats.languages, stats.count) or 'none'}")
    lines.append(f"- Sources: {_counts(stats.sources, stats.count) or 'none'}")
    if stats.rounds:
        by_round = ", ".join(f"{r}: {n}" for r, n in sorted(stats.rounds.items()))
        lines.append(f"- By round made in: {by_round}")
    if stats.operations:
        lines.append(f"- Operations: {_counts(stats.operations, sum(stats.operations.values()))}")
    if stats.writers:
        lines.append(f"- Written by: {_counts(stats.writers, sum(stats.writers.values()))}")
    if stats.with_constraints:
        ids = ", ".join(f"`{i}` {n}" for i, n in stats.constraint_ids.most_common())
        lines.append(
            f"- Verifiable constraints: {stats.with_constraints} examples carry them ({ids})"
        )
    if stats.withheld:
        kinds = ", ".join(f"{n} {WITHHELD.get(k, k)}" for k, n in sorted(stats.withheld.items()))
        lines.append(
            f"- Withheld: {sum(stats.withheld.values())} examples the project's held-out "
            f"suite measures ({kinds})"
        )
    return lines


def _provenance(card: CardData) -> list[str]:
    lines = ["", "## Provenance", ""]
    finished = [r for r in card.rounds if r.get("finished_at")]
    lines.append(f"- Rounds: {len(card.rounds)} run, {len(finished)} finished")
    generators = Counter(r.get("model_version") or "teacher" for r in card.rounds)
    if card.rounds:
        lines.append(
            "- Generator by round: "
            + ", ".join(f"{name} {n}" for name, n in sorted(generators.items()))
        )
    config = card.rounds[-1]["config"] if card.rounds else {}
    for line in _models_by_role(config):
        lines.append(f"- {line}")
    for v in card.versions:
        state = "active" if v.get("active") else "promoted" if v.get("promoted") else "trained"
        base = model_name(v.get("base"), card.aliases) or "?"
        lines.append(
            f"- Student {v['version']}: {v.get('method')} on {base}, round {v.get('round')}, {state}"
        )
    sections = [(key, config.get(key)) for key in ("critic", "selector")]
    if any(isinstance(section, dict) for _, section in sections):
        changed = [
            r["number"]
            for r in card.rounds[:-1]
            if any(r["config"].get(k) != s for k, s in sections)
        ]
        lines += ["", f"### Filters and thresholds (round {card.rounds[-1]['number']})", ""]
        if changed:
            lines.append(f"Rounds {', '.join(map(str, changed))} ran with other settings.")
            lines.append("")
        for key, section in sections:
            if isinstance(section, dict):
                lines += _settings(key, section)
    pool = card.pool.get("by_status") or {}
    lines += ["", "### Acceptance by stage", ""]
    if pool:
        lines.append("Pool: " + ", ".join(f"{s} {n}" for s, n in pool.items()) + ".")
        lines.append("")
    verdicts = [(s, r, n) for s, r, n in card.rejections if not r.startswith("model_failure:")]
    failures = sum(n for _, r, n in card.rejections if r.startswith("model_failure:"))
    if verdicts:
        lines += ["| stage | reason | rejections |", "| --- | --- | --- |"]
        lines += [f"| {s} | {r} | {n} |" for s, r, n in verdicts]
    else:
        lines.append("No rejections recorded.")
    if failures:
        lines += ["", f"Failed model calls (no verdict; tried again later): {failures}."]
    return lines
