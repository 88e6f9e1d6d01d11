"""Exhaustive references for the selector's pool indexes: every pool text scanned, nothing indexed.

What the indexes (in memory, and in `pool.selector.db`) must decide, written the
slow and obvious way, in the pool's order (rowid, `Store.iter_examples`):

* exact: the first pool text with the same normalized hash; None when that is
  the candidate itself;
* near: every pool signature that agrees with the candidate's on all values of
  one LSH band (datasketch's candidate rule, with the bands it picks), kept at
  estimated Jaccard ≥ threshold; the highest wins, ties to the smallest id;
* novelty (METHODS 1.1): ROUGE-L F1 on the project's tokens (`agents.text.tokenize`:
  CJK characters one by one, other words casefolded) against every pool text;
  above the threshold rejects and names the best, ties to the first in the pool.
  A batch is checked in order, each accepted candidate joining the references
  before the next. The LCS is computed here (`Lcs`), apart from the code it
  checks; `rouge_score_f1` is rouge_score itself, for spot checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evoinstruct.agents.selection.dedup import DedupConfig, lsh_bands, minhash_signature
from evoinstruct.agents.selection.novelty import NoveltyDecision, RougeTokenizerAdapter, rouge_l_f1
from evoinstruct.agents.text import text_hash, tokenize


def exact(pool: Sequence[tuple[str, str]], text: str, exclude: str | None = None) -> str | None:
    """The first pool id whose text normalizes like `text` (None when it is `exclude`)."""
    key = text_hash(text)
    for item_id, other in pool:
        if text_hash(other) == key:
            return None if item_id == exclude else item_id
    return None


def signatures(
    pool: Sequence[tuple[str, str]], config: DedupConfig
) -> list[tuple[str, np.ndarray | None]]:
    """Each pool text's MinHash signature, computed once for many `near` questions."""
    return [(item_id, minhash_signature(text, config)) for item_id, text in pool]


def near(
    pool: Sequence[tuple[str, np.ndarray | None]],
    text: str,
    config: DedupConfig,
    exclude: str | None = None,
) -> tuple[str, float] | None:
    """The most similar pool text by estimated Jaccard among the banding rule's candidates."""
    sig = minhash_signature(text, config)
    if sig is None:
        return None
    b, r = lsh_bands(config)
    mine = sig[: b * r].reshape(b, r)
    best: tuple[str, float] | None = None
    for item_id, other in sorted(pool, key=lambda row: row[0]):  # ties go to the smallest id
        if item_id == exclude or other is None:
            continue
        if not (other[: b * r].reshape(b, r) == mine).all(axis=1).any():
            continue
        sim = float(np.count_nonzero(other == sig)) / sig.size
        if sim >= config.jaccard_threshold and (best is None or sim > best[1]):
            best = (item_id, sim)
    return best


class Lcs:
    """One token sequence's LCS length against many others.

    Bit-parallel (Crochemore et al., 2001): bit i of V is 0 where a[i] ends a
    common subsequence found so far, V' = (V + (V & M)) | (V & ~M) per token of
    the other sequence (M: where that token occurs in a); the LCS length is the
    number of zero bits among the first m.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.m = len(tokens)
        self.where: dict[str, int] = {}
        for i, token in enumerate(tokens):
            self.where[token] = self.where.get(token, 0) | (1 << i)

    def length(self, other: Sequence[str]) -> int:
        full = (1 << self.m) - 1
        v = full
        for token in other:
            match = self.where.get(token, 0)
            v = ((v + (v & match)) | (v & ~match)) & full
        return self.m - v.bit_count()

    def rouge_l(self, other: Sequence[str]) -> float:
        """ROUGE-L F1 (rouge_score's float expression)."""
        if not self.m or not other:
            return 0.0
        return rouge_l_f1(self.length(other), self.m, len(other))


def novelty(
    pool: Sequence[tuple[str, str]],
    batch: Sequence[tuple[str, str]],
    threshold: float = 0.7,
) -> list[NoveltyDecision]:
    """Every batch text against every pool text, then against the batch texts accepted before it."""
    references = [(item_id, tokenize(text)) for item_id, text in pool]
    in_pool = {item_id for item_id, _ in pool}
    decisions = []
    for item_id, text in batch:
        tokens = tokenize(text)
        lcs = Lcs(tokens)
        m = len(tokens)
        best_f, best_id = threshold, None
        for ref_id, ref in references:
            n = len(ref)
            # F = 2·LCS/(m+n) ≤ 2·min(m, n)/(m+n): a pair failing this cannot exceed the best.
            if ref_id == item_id or 2 * min(m, n) < best_f * (m + n):
                continue
            f = lcs.rouge_l(ref)
            if f > best_f:
                best_f, best_id = f, ref_id
        if best_id is None:
            if item_id not in in_pool:
                references.append((item_id, tokens))
            decisions.append(NoveltyDecision(item_id, True))
        else:
            decisions.append(NoveltyDecision(item_id, False, best_f, best_id))
    return decisions


def rouge_score_f1(reference: str, candidate: str) -> float:
    """rouge_score's own ROUGE-L F1 with the project's tokens (the dev dependency as referee)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizerAdapter())
    return scorer.score(reference, candidate)["rougeL"].fmeasure
