"""InsTag: an LLM tags each instruction with intentions; tags are normalized and counted.

The tagger answers with a JSON list of {"tag", "explanation"}. Tags are
normalized (Unicode NFKC, lowercase, punctuation stripped, a tiny suffix
stemmer for English words; Chinese tags kept as they are after punctuation
stripping) and stored as normalized. Whether a tag is rare is a property of
the whole pool, which one tagging batch cannot see, so `resolve_rare` (merge a
rare tag into its nearest frequent tag, drop it, or keep it) runs at
selection, against the accepted pool's tag counts plus the batch's
(`selector.diversity.min_tag_count` and friends). Complexity = tags per
instruction; diversity = tag coverage.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.scoring.judge import failure_rejection, generate_counted
from evoinstruct.agents.selection.diversity import RarePolicy
from evoinstruct.models.base import ChatModel, ChatRequest, Failure
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, Rejection, Score
from evoinstruct.store.stages import Stage

SCORER = "instag"
DIMENSION = "tag_count"
TAG_KEY, EXPLANATION_KEY = "tag", "explanation"  # the prompt asks for these keys


class InsTagConfig(BaseModel):
    """InsTag tagging (METHODS 2.4)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Tag instructions with intention tags.")
    temperature: float = Field(0.0, ge=0, description="Tagger sampling temperature.")
    max_tokens: int = Field(512, ge=16, description="Room for the JSON list of tags.")
    max_tags: int = Field(
        10, ge=1, description="Most tags kept per instruction (prompt and parser)."
    )


@dataclass
class Tag:
    tag: str
    explanation: str = ""


@dataclass
class ParsedTags:
    """Tags read from an answer; ok is False when nothing in it was a tag list."""

    tags: list[Tag]
    ok: bool


# --- parsing --------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_OBJECT = re.compile(r"\{[^{}]*\}")
_TAG_KEYS = (TAG_KEY, "Tag", "name", "标签")
_EXPLANATION_KEYS = (EXPLANATION_KEY, "Explanation", "reason", "解释", "说明")


def _tag(item: object) -> Tag | None:
    if isinstance(item, str):
        return Tag(item.strip()) if item.strip() else None
    if not isinstance(item, dict):
        return None
    name = next((item[k] for k in _TAG_KEYS if isinstance(item.get(k), str)), "")
    if not name.strip():
        return None
    explanation = next((item[k] for k in _EXPLANATION_KEYS if isinstance(item.get(k), str)), "")
    return Tag(name.strip(), explanation.strip())


def _items(data: object) -> list[object] | None:
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    return data if isinstance(data, list) else None


def parse_tags(text: str | None) -> ParsedTags:
    """The tag list of an answer: a JSON list, a {"tags": [...]} object, or, for a truncated
    list, every complete {...} object in it."""
    raw = _FENCE.sub("", text or "").strip()
    for start, end in ((raw.find("["), raw.rfind("]")), (raw.find("{"), raw.rfind("}"))):
        if start == -1 or end <= start:
            continue
        try:
            items = _items(json.loads(raw[start : end + 1]))
        except json.JSONDecodeError:
            continue
        if items is not None:
            return ParsedTags([t for t in map(_tag, items) if t], True)
    recovered = []
    for chunk in _OBJECT.findall(raw):
        try:
            recovered.append(_tag(json.loads(chunk)))
        except json.JSONDecodeError:
            continue
    tags = [t for t in recovered if t]
    return ParsedTags(tags, bool(tags))


# --- normalization --------------------------------------------------------------------------

_VOWEL = re.compile(r"[aeiouy]")


def stem(word: str) -> str:
    """A tiny suffix stemmer, enough to merge plural and verb forms of English tag words."""
    if len(word) <= 3 or not word.isascii():
        return word
    if word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ies"):
        word = word[:-3] + "i"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if (
            word.endswith(suffix)
            and _VOWEL.search(word[: -len(suffix)])
            and len(word) - len(suffix) >= 3
        ):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    if word.endswith("ation") and len(word) > 7:
        word = word[:-3]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if word.endswith("y") and len(word) > 3:
        word = word[:-1] + "i"
    return word


def normalize_tag(tag: str) -> str:
    """Lowercase, punctuation to spaces, English words stemmed; Chinese characters as they are."""
    text = unicodedata.normalize("NFKC", tag).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(stem(word) for word in text.split())


def _bigrams(tag: str) -> set[str]:
    padded = f" {tag} "
    return {padded[i : i + 2] for i in range(len(padded) - 1)}


def similarity(a: str, b: str) -> float:
    """Character-bigram Jaccard similarity of two normalized tags (works for Chinese too)."""
    x, y = _bigrams(a), _bigrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def resolve_rare(
    tag_lists: Sequence[list[str]],
    counts: Mapping[str, int],
    *,
    min_count: int,
    policy: RarePolicy,
    min_similarity: float,
) -> list[list[str]]:
    """Apply the rare-tag policy to every example's tags; duplicates after merging removed.

    A tag counted fewer than `min_count` times in `counts` is rare; `counts`
    should cover the pool the tags are compared within, not one batch.
    """
    frequent = sorted(t for t, c in counts.items() if c >= min_count)
    mapping: dict[str, str | None] = {}
    for tag in {t for tags in tag_lists for t in tags}:
        if counts.get(tag, 0) >= min_count or policy == "keep":
            mapping[tag] = tag
        elif policy == "drop":
            mapping[tag] = None
        else:
            best = max(frequent, key=lambda f: (similarity(tag, f), counts[f], f), default=None)
            near = best is not None and similarity(tag, best) >= min_similarity
            mapping[tag] = best if near else tag
    resolved = []
    for tags in tag_lists:
        mapped = [mapping[t] for t in tags if mapping[t] is not None]
        resolved.append(list(dict.fromkeys(mapped)))
    return resolved


# --- the tagging pass -----------------------------------------------------------------------


@dataclass
class InsTagOutcome:
    """Tag-count scores (tags in the explanation), failures, and the tags per example id."""

    scores: list[Score] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    tags: dict[str, list[str]] = field(default_factory=dict)


def instag_prompt(prompts: PromptLibrary, example: Example, config: InsTagConfig) -> str:
    """The tagging prompt for one example (the critic's, and the prompt preview's)."""
    return prompts.render(
        "instag",
        instruction=example.instruction,
        input=example.input,
        max_tags=config.max_tags,
        tag_key=TAG_KEY,
        explanation_key=EXPLANATION_KEY,
    )


async def tag_examples(
    batch: Sequence[Example],
    model: ChatModel,
    prompts: PromptLibrary,
    config: InsTagConfig,
    counters: Counter[str],
) -> InsTagOutcome:
    """Tag every instruction in one batch of calls; tags normalized, rare ones left to selection."""
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": instag_prompt(prompts, e, config)}],
            temperature=config.temperature,
            max_tokens=config.max_tokens,
        )
        for e in batch
    ]
    results = await generate_counted(model, requests, counters)
    outcome = InsTagOutcome()
    for example, result in zip(batch, results, strict=True):
        if isinstance(result, Failure):
            outcome.rejections.append(failure_rejection(result, example.id, Stage.CRITIQUE))
            continue
        parsed = parse_tags(result.text)
        if not parsed.ok:
            counters["instag_unparseable"] += 1
            outcome.scores.append(
                Score(example.id, SCORER, DIMENSION, None, raw_output=result.text)
            )
            continue
        normalized = [n for n in (normalize_tag(t.tag) for t in parsed.tags) if n]
        tags = list(dict.fromkeys(normalized))[: config.max_tags]
        outcome.tags[example.id] = tags
        outcome.scores.append(
            Score(
                example.id,
                SCORER,
                DIMENSION,
                float(len(tags)),
                raw_output=result.text,
                explanation=json.dumps(tags, ensure_ascii=False),
            )
        )
    return outcome
