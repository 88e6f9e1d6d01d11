"""Training data from the pool: the mix, the held-out split, masked tokenization and packing.

The mix (METHODS.md §4) is the new accepted examples plus a share of the
human seeds plus a replay share of examples earlier versions trained on — a
student trained only on its own newest data regresses — plus a share of
generation-task examples: a generation call's prompt answered with its tasks
the loop accepted (`trainer.generation_data`), so the student promoted as the
generator has learned to write tasks that survive the filters (METHODS §5.3). A version continues
from the active version's weights when their adapters have the same shape;
"new" then means not seen by that version's lineage. A fixed fraction of
accepted examples, chosen by a hash of the id, is held out: because the
choice depends on the id alone, no version ever trains on a held-out example
and every version is measured on comparable data. Examples that share an
n-gram with a prompt of the held-out verifiable suite (`trainer.suite`), or
carry a held-out constraint type or a suite-only phrasing
(`trainer.suite.held_out`), take no role at all: the suite measures what no
version trained on.

Each example becomes prompt tokens (labels -100) followed by response tokens
and EOS (learned), tokenized separately so the prompt is cut exactly where
generation starts at serving time.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from evoinstruct.store.errors import ConfigError
from evoinstruct.store.records import Example
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.generation_data import (
    GenerationExample,
    generation_examples,
    split_seen,
)

if TYPE_CHECKING:
    from datasets import Dataset

    from evoinstruct.store import Store

IGNORE_INDEX = -100
T = TypeVar("T")


# --- the mix ------------------------------------------------------------------------
def is_heldout(example_id: str, fraction: float) -> bool:
    """Whether an example belongs to the held-out set: a pure function of its id."""
    digest = hashlib.sha256(f"heldout:{example_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12 < fraction


@dataclass
class TrainingMix:
    """Which pool examples one training run uses, by role."""

    new: list[Example] = field(default_factory=list)
    seeds: list[Example] = field(default_factory=list)
    replay: list[Example] = field(default_factory=list)
    heldout: list[Example] = field(default_factory=list)
    generation: list[GenerationExample] = field(default_factory=list)
    available: dict[str, int] = field(default_factory=dict)

    @property
    def train(self) -> list[Example]:
        """The pool examples trained on (generation examples are not pool rows)."""
        return [*self.new, *self.seeds, *self.replay]

    def manifest(self) -> dict[str, Any]:
        """Example ids by role, and how many of each role the pool offered."""
        return {
            "new": [e.id for e in self.new],
            "seed": [e.id for e in self.seeds],
            "replay": [e.id for e in self.replay],
            "heldout": [e.id for e in self.heldout],
            "generation": [g.id for g in self.generation],
            "available": dict(self.available),
        }


def compose_mix(
    seeds: Sequence[Example],
    new: Sequence[Example],
    replay_pool: Sequence[Example],
    heldout: Sequence[Example],
    cfg: TrainerConfig,
    rng: random.Random,
    generation: tuple[Sequence[GenerationExample], Sequence[GenerationExample]] = ((), ()),
) -> TrainingMix:
    """Size the mix around the new examples: seeds, replay and generation take their shares.

    With N new examples the mix holds N / (1 - seed_share - replay_share -
    generation_share) examples; a role with fewer examples than its share
    contributes all it has (with none, its share takes no room). `generation` is
    (fresh, seen): calls the lineage has not trained on are taken first.
    """
    chosen_new = list(new)
    if cfg.max_new_examples is not None and len(chosen_new) > cfg.max_new_examples:
        chosen_new = _sample_in_order(chosen_new, cfg.max_new_examples, rng)
    fresh, seen = generation
    # No generation example at all (Alpaca mode, nothing accepted yet): the share takes no
    # room, and the mix is what it would be without it.
    generation_share = cfg.generation_share if fresh or seen else 0.0
    total = len(chosen_new) / (1 - cfg.seed_share - cfg.replay_share - generation_share)
    n_seed = min(len(seeds), round(total * cfg.seed_share))
    n_replay = min(len(replay_pool), round(total * cfg.replay_share))
    n_generation = round(total * generation_share)
    n_fresh = min(len(fresh), n_generation)
    n_seen = min(len(seen), n_generation - n_fresh)
    return TrainingMix(
        new=chosen_new,
        seeds=_sample_in_order(seeds, n_seed, rng),
        replay=_sample_in_order(replay_pool, n_replay, rng),
        heldout=list(heldout),
        generation=_sample_in_order(fresh, n_fresh, rng) + _sample_in_order(seen, n_seen, rng),
        available={
            "new": len(new),
            "seed": len(seeds),
            "replay": len(replay_pool),
            "heldout": len(heldout),
            "generation": len(fresh) + len(seen),
        },
    )


def _sample_in_order(items: Sequence[T], k: int, rng: random.Random) -> list[T]:
    # Keep pool order so the manifest reads chronologically; the Trainer shuffles anyway.
    picked = set(rng.sample(range(len(items)), k))
    return [item for i, item in enumerate(items) if i in picked]


# Adapter-shape fields: a version can only continue from one trained with the same.
_SHAPE_FIELDS = (
    "method",
    "base_model",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "num_virtual_tokens",
)


def starting_version(store: Store, cfg: TrainerConfig) -> dict[str, Any] | None:
    """The version this run continues from: the active one, if its adapter has our shape."""
    if cfg.init_from == "base":
        return None
    active = store.active_model()
    if active is None:
        return None
    wanted = cfg.model_dump(mode="json")
    if any(active["config"].get(f) != wanted[f] for f in _SHAPE_FIELDS):
        return None
    return active


def lineage_trained_ids(store: Store, version: str | None, role: str = "train") -> set[str]:
    """Every id `version` and the versions it continued from trained on in `role` ("train":
    pool examples; "generation": generation examples)."""
    ids: set[str] = set()
    seen: set[str] = set()
    while version and version not in seen:
        seen.add(version)
        ids.update(store.training_manifest(version, role=role))
        row = store.model_version(version)
        version = row["config"].get("parent_version") if row else None
    return ids


@dataclass
class PoolSplit:
    """The accepted pool by role for one run; `suite_overlap` never trains nor measures."""

    seeds: list[Example] = field(default_factory=list)
    new: list[Example] = field(default_factory=list)
    old: list[Example] = field(default_factory=list)
    heldout: list[Example] = field(default_factory=list)
    suite_overlap: list[Example] = field(default_factory=list)
    # Held back by the split: a held-out type or a suite-only phrasing.
    held_out: list[Example] = field(default_factory=list)


def _split_pool(store: Store, cfg: TrainerConfig, already: set[str]) -> PoolSplit:
    from evoinstruct.trainer.suite import held_back_kind, training_guard

    # The held-out suite's prompts, types and phrasings stay out of every role, seeds
    # included: a version that saw one would be measured on its own training data.
    guard = training_guard(store, cfg.suite)
    split = PoolSplit()
    for ex in store.iter_examples(status="accepted", has_output=True):
        if not (ex.output or "").strip():
            continue
        reason = guard.hit(ex)
        if reason is not None:
            if held_back_kind(reason) == "suite":
                split.suite_overlap.append(ex)
            else:
                split.held_out.append(ex)
        elif ex.source == "seed":
            split.seeds.append(ex)
        elif is_heldout(ex.id, cfg.heldout_fraction):
            split.heldout.append(ex)
        elif ex.id in already:
            split.old.append(ex)
        else:
            split.new.append(ex)
    return split


def select_mix(
    store: Store, cfg: TrainerConfig, rng: random.Random, parent: str | None = None
) -> TrainingMix:
    """Compose this run's mix; new = accepted and not trained on by `parent`'s lineage.

    Starting from the base model (no parent) every accepted example is new.
    Examples that copy a held-out suite prompt are left out and counted in
    `available["suite_overlap"]`, those carrying a held-out type or a suite-only
    phrasing in `available["held_out"]`.
    """
    split = _split_pool(store, cfg, lineage_trained_ids(store, parent))
    generation: tuple[list[GenerationExample], list[GenerationExample]] = ([], [])
    if cfg.generation_share > 0:
        # Only tasks that may train at all make an answer: held-out and suite-overlapping
        # ones stay out of the generation examples as they stay out of the pool's roles.
        trainable = {e.id: e for e in (*split.new, *split.old)}
        untrainable = (*split.suite_overlap, *split.held_out, *split.heldout)
        found = generation_examples(store.generation_calls(), trainable, untrainable)
        generation = split_seen(found, lineage_trained_ids(store, parent, role="generation"))
    mix = compose_mix(split.seeds, split.new, split.old, split.heldout, cfg, rng, generation)
    mix.available["suite_overlap"] = len(split.suite_overlap)
    mix.available["held_out"] = len(split.held_out)
    return mix


def count_new(store: Store, cfg: TrainerConfig) -> int:
    """Accepted examples no earlier training has seen (the schedule's threshold).

    Counted against the version this run continues from, else the latest version
    trained: a run from the base model (or after a version the gate turned down)
    must not count the same examples as new again and retrain on every schedule.
    """
    parent = starting_version(store, cfg)
    versions = store.model_versions()
    reference = parent["version"] if parent else (versions[-1]["version"] if versions else None)
    return len(_split_pool(store, cfg, lineage_trained_ids(store, reference)).new)


# --- formatting -----------------------------------------------------------------------
def resolve_template(tokenizer: Any, template: str) -> str:
    """'chat' or 'alpaca' for this tokenizer under the configured choice."""
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat:
        raise ConfigError(
            "template = 'chat' but the tokenizer has no chat template; use 'auto' or 'alpaca'",
            field="trainer.template",
        )
    if template == "auto":
        return "chat" if has_chat else "alpaca"
    return template


def _chat_template(template: str) -> str | None:
    # The in-process backend serves base models with this Alpaca-style layout; training
    # with the very same template keeps what the student learns and what it sees equal.
    from evoinstruct.models.transformers_backend import PLAIN_CHAT_TEMPLATE

    return PLAIN_CHAT_TEMPLATE if template == "alpaca" else None


def user_content(instruction: str, input: str = "") -> str:
    return f"{instruction}\n\n{input}" if input.strip() else instruction


def prompt_messages(system: str, instruction: str, input: str = "") -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages.append({"role": "user", "content": user_content(instruction, input)})
    return messages


def render_prompt(
    tokenizer: Any, template: str, system: str, instruction: str, input: str = ""
) -> str:
    """The text a model sees before it starts answering (template: 'chat' or 'alpaca')."""
    return tokenizer.apply_chat_template(
        prompt_messages(system, instruction, input),
        chat_template=_chat_template(template),
        tokenize=False,
        add_generation_prompt=True,
    )


def render_response(tokenizer: Any, template: str, example: Example, prompt: str) -> str:
    """The text the template puts after the prompt for this answer, up to its end-of-turn."""
    messages = prompt_messages(example.system, example.instruction, example.input)
    messages.append({"role": "assistant", "content": example.output or ""})
    full = tokenizer.apply_chat_template(
        messages, chat_template=_chat_template(template), tokenize=False
    )
    if not full.startswith(prompt):
        # Templates that rewrite earlier turns (e.g. strip reasoning) break the prefix
        # property; fall back to the bare answer, which the EOS rule below completes.
        return example.output or ""
    response = full[len(prompt) :]
    # What a template adds after the end-of-turn token (a newline) is never generated.
    eos = tokenizer.eos_token
    if eos and eos in response:
        response = response[: response.rindex(eos) + len(eos)]
    return response


def encode_example(tokenizer: Any, template: str, example: Example) -> tuple[list[int], list[int]]:
    """Prompt ids and response ids (ending in EOS), tokenized separately.

    Both are tokenized without added special tokens, as the in-process backend
    tokenizes prompts at serving time: a chat template writes its own BOS.
    """
    prompt = render_prompt(tokenizer, template, example.system, example.instruction, example.input)
    response = render_response(tokenizer, template, example, prompt)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    eos_id = tokenizer.eos_token_id
    if eos_id is not None and (not response_ids or response_ids[-1] != eos_id):
        response_ids.append(eos_id)
    return prompt_ids, response_ids


# --- tokenization, truncation, packing ------------------------------------------------
@dataclass
class TokenStats:
    """What tokenization did to the mix; reported in metrics.json."""

    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    tokens: int = 0
    response_tokens: int = 0
    truncated_ids: list[str] = field(default_factory=list)
    dropped_ids: list[str] = field(default_factory=list)
    blocks: int | None = None

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["truncated_ids"] = self.truncated_ids[:20]
        out["dropped_ids"] = self.dropped_ids[:20]
        return out


def tokenize_examples(
    examples: Iterable[Example], tokenizer: Any, template: str, max_length: int
) -> tuple[list[dict[str, Any]], TokenStats]:
    """Rows of input_ids and labels; over-long answers are cut at max_length and counted.

    An example whose prompt alone fills max_length has nothing to learn and is
    dropped (counted, with its id).
    """
    rows: list[dict[str, Any]] = []
    stats = TokenStats()
    for ex in examples:
        stats.examples += 1
        prompt_ids, response_ids = encode_example(tokenizer, template, ex)
        if len(prompt_ids) >= max_length:
            stats.dropped += 1
            stats.dropped_ids.append(ex.id)
            continue
        room = max_length - len(prompt_ids)
        if len(response_ids) > room:
            response_ids = response_ids[:room]
            stats.truncated += 1
            stats.truncated_ids.append(ex.id)
        rows.append(
            {
                "example_id": ex.id,
                "input_ids": prompt_ids + response_ids,
                "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
            }
        )
        stats.tokens += len(prompt_ids) + len(response_ids)
        stats.response_tokens += len(response_ids)
    return rows, stats


def pack_rows(rows: Sequence[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """Best-fit-decreasing packing of whole examples into blocks of at most max_length.

    Position ids restart at 0 for every example; with no attention mask the
    model turns them into a block-diagonal mask, so packed examples never see
    each other. Examples are never split, so every label mask stays intact.
    """
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        need = len(rows[i]["input_ids"])
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = max_length, len(bins)
            bins.append([])
        bins[b].append(i)
        bisect.insort(free, (room - need, b))
    blocks = []
    for members in bins:
        block: dict[str, Any] = {
            "example_ids": [],
            "input_ids": [],
            "labels": [],
            "position_ids": [],
        }
        for i in members:
            row = rows[i]
            block["example_ids"].append(row["example_id"])
            block["input_ids"].extend(row["input_ids"])
            block["labels"].extend(row["labels"])
            block["position_ids"].extend(range(len(row["input_ids"])))
        blocks.append(block)
    return blocks


def build_dataset(
    examples: Sequence[Example], tokenizer: Any, cfg: TrainerConfig
) -> tuple[Dataset, TokenStats]:
    """The training `datasets.Dataset` (packed when configured) and its token statistics."""
    from datasets import Dataset

    template = resolve_template(tokenizer, cfg.template)
    rows, stats = tokenize_examples(examples, tokenizer, template, cfg.max_length)
    if cfg.packing:
        rows = pack_rows(rows, cfg.max_length)
        stats.blocks = len(rows)
    return Dataset.from_list(rows), stats


@dataclass
class Collator:
    """Right-pads a batch; packed blocks get position ids instead of an attention mask."""

    pad_token_id: int

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        packed = "position_ids" in features[0]
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        batch["position_ids" if packed else "attention_mask"] = []
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if packed:
                # Padding forms its own short "sequence" at the end of the block.
                batch["position_ids"].append(list(f["position_ids"]) + list(range(pad)))
            else:
                batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def pad_token_id(tokenizer: Any) -> int:
    """The pad id to use; tokenizers without one pad with EOS (labels mask it anyway)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    raise ConfigError("the tokenizer has neither a pad nor an EOS token", field="base_model")
