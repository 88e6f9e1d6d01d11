"""ROUGE-L novelty filter: drop an instruction whose ROUGE-L F1 with any pool instruction is > 0.7.

Self-Instruct's filter compares each new task with every pool instruction and
re-tokenizes the pool for every candidate (O(n²) tokenizations). Here each
pool instruction is tokenized once (`agents.text.tokenize`, so CJK text is
compared character by character), a prefix-filter inverted index shortlists
the only pool items that *can* exceed the threshold (prefix filtering with
length, overlap and positional bounds, as in set-similarity joins), and
exact ROUGE-L is computed on that shortlist with a bit-parallel LCS.
Decisions are the same as the exhaustive filter's (`novelty_exhaustive`,
built on rouge_score), by the argument below; tests and `bench/novelty.py`
check it.

Why the shortlist is exact
--------------------------
Let x, y be token sequences of lengths n, m; L = LCS(x, y); ROUGE-L F1 is
F = 2·P·R/(P+R) with P = L/m, R = L/n, i.e. F = 2L/(m+n). Let τ be the
threshold (0.7) and α = τ/(2−τ) (= 7/13 ≈ 0.538). A rejection needs F > τ;
every bound below is derived from the weaker F ≥ τ, so float rounding at
exact equality cannot hide a pair (ceilings also subtract 1e-9).

1. Length: L ≤ min(m, n), so F ≥ τ needs 2·min(m, n) ≥ τ(m+n).
2. Each side shares at least a fraction α of its own tokens: take m ≤ n.
   L ≥ τ(m+n)/2 and, by (1), m ≥ αn, so L ≥ τ(αn+n)/2 = τn/(2−τ) = αn;
   and n ≥ m gives L ≥ τm ≥ αm (τ ≥ α for τ ≤ 1). So L ≥ t(|s|) := ⌈α·|s|⌉
   for both sides s.
3. L ≤ O, the multiset overlap (an LCS is a common sub-multiset), and
   O ≤ |distinct shared tokens| + min(repeats in x, repeats in y), where
   "repeats" = length − number of distinct tokens.
4. Label the k-th occurrence of a token as the element (token, k): the
   multiset overlap becomes a set intersection, |X ∩ Y| = O. Fix a total
   order on tokens (rank) and order elements by (rank, k).
5. Prefix lemma: let pre(S) be the first |S| − t(|S|) + 1 elements of S. If
   |X ∩ Y| ≥ t(|X|) and ≥ t(|Y|), then the smallest common element u lies in
   pre(X) ∩ pre(Y). Proof: the t(|X|) − 1 elements after pre(X) cannot hold
   all of X ∩ Y, so pre(X) holds a common element, and u, not after it, is
   in pre(X) because a prefix is closed downward; likewise for Y. As u is
   the smallest common element it is an occurrence 0, (w, 0): so posting
   each distinct prefix token once, with the position of its first
   occurrence, loses nothing.
6. Positional bound: every common element is ≥ u, so O ≤ min(m − i, n − j)
   where i, j are u's positions in y and x; F ≥ τ needs this ≥ τ(m+n)/2.
   Probing y's prefix tokens in rank order, the first probe that meets x is
   at u (an earlier one would be a smaller common element), so the bound is
   evaluated with u's true positions.

So every indexed item with F ≥ τ shares a prefix token with the candidate
and passes bounds (1), (3) and (6): the shortlist holds every item the
candidate can be rejected for, and exact ROUGE-L on it (with rouge_score's
very float expression) finds the same best match; among equal best scores
the earliest added wins, as in the exhaustive loop. Any fixed order makes
this exact; rarest-first keeps prefixes and postings short. Token ranks are
fixed between re-indexings (a token first seen after one sorts before all
others, which keeps existing items' orders unchanged); when the index has
grown by `reindex_growth` the ranks are recomputed from document
frequencies and the postings rebuilt. Re-indexing changes speed, never
decisions. `agents.selection.pool_novelty` applies the same argument to ranks and
postings kept in SQLite beside the pool, where ranks are never recomputed
(a token first seen sorts before all others, for good: a pool of a million
is never re-posted inside a round), and adds a sketch bound and a rising
threshold.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.text import tokenize

_EPS = 1e-9


class NoveltyConfig(BaseModel):
    """ROUGE-L novelty settings (METHODS 1.1)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="Reject a candidate whose ROUGE-L F1 with any reference text is above this.",
    )
    reindex_growth: float = Field(
        2.0,
        gt=1.0,
        description="In-memory index only: recompute token ranks and postings when it has grown by this factor (speed only; the index file beside the pool never re-ranks).",
    )
    reindex_min: int = Field(
        256,
        ge=1,
        description="In-memory index only: do not re-index before it holds this many texts.",
    )


@dataclass(frozen=True)
class NoveltyDecision:
    """Verdict on one candidate; a rejection names the most similar reference text."""

    id: str
    accepted: bool
    score: float | None = None  # best ROUGE-L F1 when rejected
    most_similar: str | None = None


def rouge_l_f1(lcs: int, m: int, n: int) -> float:
    """ROUGE-L F1 with rouge_score's float expression, so scores agree bit for bit."""
    if lcs == 0:
        return 0.0
    precision = lcs / m
    recall = lcs / n
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[object], b: Sequence[object]) -> int:
    """Length of the longest common subsequence (bit-parallel, Allison–Dix / Hyyrö)."""
    masks: dict[object, int] = {}
    bit = 1
    for tok in a:
        masks[tok] = masks.get(tok, 0) | bit
        bit <<= 1
    return _lcs_masks(masks, len(a), b)


def _lcs_masks(masks: dict, m: int, b: Iterable[object]) -> int:
    # V has a 0 bit per matched position of `a`; V + U carries the matches
    # forward, V − U (U ⊆ V, no borrow) keeps the others. Bits above m only
    # collect carries and never flow down, so they are masked once at the end.
    full = (1 << m) - 1
    v = full
    get = masks.get
    for tok in b:
        match = get(tok)
        if match:
            u = v & match
            v = (v + u) | (v - u)
    return m - (v & full).bit_count()


def min_overlap(length: int, threshold: float) -> int:
    """t(n) = ⌈α·n⌉ (α = τ/(2−τ)): the LCS any text of this length needs to reach F ≥ τ."""
    alpha = threshold / (2.0 - threshold)
    return max(1, math.ceil(alpha * length - _EPS)) if length else 0


def prefix_firsts(
    tids: Sequence[int], rank: Callable[[int], int], threshold: float, unknown: int = 0
) -> list[tuple[int, int]]:
    """(token, position of its first occurrence) for the distinct tokens of the prefix (5).

    Positions count elements in rank order; unknown tokens (never indexed)
    sort first and take the first `unknown` positions.
    """
    m = len(tids) + unknown
    end = m - min_overlap(m, threshold) + 1 if m else 0
    ordered = sorted(tids, key=rank)
    firsts: list[tuple[int, int]] = []
    prev = -1
    for pos in range(unknown, end):
        tid = ordered[pos - unknown]
        if tid != prev:
            firsts.append((tid, pos))
            prev = tid
    return firsts


class NoveltyIndex:
    """Pool instructions, tokenized once, with a prefix-filter inverted index for exact shortlists."""

    def __init__(self, config: NoveltyConfig | None = None) -> None:
        self.config = config or NoveltyConfig()
        self._tau = self.config.threshold
        self._vocab: dict[str, int] = {}
        self._rank: list[int] = []
        self._df: list[int] = []
        self._next_rank = -1  # tokens first seen after a re-index sort before all others
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._toks: list[list[int]] = []
        self._lens: list[int] = []
        self._sets: list[frozenset[int]] = []
        self._excess: list[int] = []
        self._alive = bytearray()
        self._postings: dict[int, array] = {}  # token -> flat (idx, length, position) triples
        self._n_alive = 0
        self._indexed_size = 0

    @classmethod
    def build(
        cls, items: Iterable[tuple[str, str]], config: NoveltyConfig | None = None
    ) -> NoveltyIndex:
        """Rebuild from the store's (id, text) pairs: tokenize all, rank once, post once."""
        index = cls(config)
        for item_id, text in items:
            index._append(item_id, tokenize(text))
        index._reindex()
        return index

    def __len__(self) -> int:
        return self._n_alive

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._pos

    def add(self, item_id: str, text: str) -> None:
        """Add a reference text; an id already present is a no-op."""
        self.add_tokens(item_id, tokenize(text))

    def add_tokens(self, item_id: str, tokens: Sequence[str]) -> None:
        """Add an already tokenized text (tokens from `agents.text.tokenize`)."""
        if item_id in self._pos:
            return
        idx = self._append(item_id, tokens)
        if self._n_alive >= max(
            self.config.reindex_min, self.config.reindex_growth * self._indexed_size
        ):
            self._reindex()
        else:
            self._post(idx)

    def remove(self, item_id: str) -> None:
        """Forget a text (tombstoned; dropped from postings at the next re-index)."""
        idx = self._pos.pop(item_id, None)
        if idx is None:
            return
        self._alive[idx] = 0
        self._n_alive -= 1
        for tid in self._sets[idx]:
            self._df[tid] -= 1

    def best_match(self, text: str, exclude: str | None = None) -> tuple[float, str] | None:
        """(ROUGE-L F1, id) of the most similar reference text if above the threshold, else None.

        `exclude` (the candidate's own id, when it is already indexed) never matches.
        """
        found = self._match(tokenize(text), self._pos.get(exclude, -1) if exclude else -1)
        return None if found is None else (found[0], self._ids[found[1]])

    def match_tokens(
        self, tokens: Sequence[str], exclude: str | None = None
    ) -> tuple[float, str] | None:
        """`best_match` for an already tokenized text."""
        found = self._match(tokens, self._pos.get(exclude, -1) if exclude else -1)
        return None if found is None else (found[0], self._ids[found[1]])

    def filter(
        self, items: Iterable[tuple[str, str]], *, commit: bool = True
    ) -> list[NoveltyDecision]:
        """Sequential filter: each accepted candidate joins the references before the next.

        With commit=False the accepted ones are held in a scratch index and
        this index is left unchanged. A candidate whose id is already indexed
        is not compared with itself (re-running a batch changes nothing).
        """
        scratch = None if commit else NoveltyIndex(self.config)
        decisions = []
        for item_id, text in items:
            tokens = tokenize(text)
            found = self._match(tokens, self._pos.get(item_id, -1))
            best = None if found is None else (found[0], self._ids[found[1]])
            if scratch is not None:
                local = scratch._match(tokens)
                if local is not None and (best is None or local[0] > best[0]):
                    best = (local[0], scratch._ids[local[1]])
            if best is None:
                (self if scratch is None else scratch).add_tokens(item_id, tokens)
                decisions.append(NoveltyDecision(item_id, True))
            else:
                decisions.append(NoveltyDecision(item_id, False, best[0], best[1]))
        return decisions

    # -- internals ---------------------------------------------------------

    def _append(self, item_id: str, tokens: Sequence[str]) -> int:
        vocab, tids = self._vocab, []
        for tok in tokens:
            tid = vocab.get(tok)
            if tid is None:
                tid = vocab[tok] = len(self._rank)
                self._rank.append(self._next_rank)
                self._next_rank -= 1
                self._df.append(0)
            tids.append(tid)
        distinct = frozenset(tids)
        for tid in distinct:
            self._df[tid] += 1
        idx = len(self._ids)
        self._ids.append(item_id)
        self._pos[item_id] = idx
        self._toks.append(tids)
        self._lens.append(len(tids))
        self._sets.append(distinct)
        self._excess.append(len(tids) - len(distinct))
        self._alive.append(1)
        self._n_alive += 1
        return idx

    def _prefix_firsts(self, tids: Sequence[int], unknown: int = 0) -> list[tuple[int, int]]:
        return prefix_firsts(tids, self._rank.__getitem__, self._tau, unknown)

    def _post(self, idx: int) -> None:
        postings, n = self._postings, self._lens[idx]
        for tid, pos in self._prefix_firsts(self._toks[idx]):
            entries = postings.get(tid)
            if entries is None:
                entries = postings[tid] = array("q")
            entries.extend((idx, n, pos))

    def _reindex(self) -> None:
        df = self._df
        order = sorted(range(len(df)), key=lambda t: (df[t], t))
        rank = [0] * len(df)
        for r, tid in enumerate(order):
            rank[tid] = r
        self._rank, self._next_rank = rank, -1
        self._postings = {}
        for idx, alive in enumerate(self._alive):
            if alive:
                self._post(idx)
        self._indexed_size = self._n_alive

    def _shortlist(self, known: list[int], m: int) -> tuple[list[int], list[int]]:
        """Indexed items that pass the prefix (5), length (1) and positional (6) bounds."""
        chunks, where = [], []
        postings = self._postings
        for tid, pos in self._prefix_firsts(known, m - len(known)):
            entries = postings.get(tid)
            if entries is not None:
                chunks.append(np.frombuffer(entries, dtype=np.int64))
                where.append(np.full(len(entries) // 3, pos, dtype=np.int64))
        if not chunks:
            return [], []
        table = np.concatenate(chunks).reshape(-1, 3)
        # Probes run in rank order, so an item's first row is its smallest shared element.
        ids, first = np.unique(table[:, 0], return_index=True)
        n, j, i = table[first, 1], table[first, 2], np.concatenate(where)[first]
        tau = self._tau
        need = tau * (m + n) / 2.0 - _EPS
        ok = (np.minimum(m, n) * 2.0 >= tau * (m + n) - _EPS) & (np.minimum(m - i, n - j) >= need)
        return ids[ok].tolist(), n[ok].tolist()

    def _match(self, tokens: Sequence[str], exclude: int = -1) -> tuple[float, int] | None:
        """(F1, internal index) of the best reference with F1 > τ; ties go to the earliest added."""
        m = len(tokens)
        if m == 0 or self._n_alive == 0:
            return None
        vocab = self._vocab
        masks: dict[int, int] = {}
        known: list[int] = []
        bit = 1
        for tok in tokens:
            tid = vocab.get(tok)
            if tid is not None:
                masks[tid] = masks.get(tid, 0) | bit
                known.append(tid)
            bit <<= 1
        if not known:
            return None
        half = self._tau / 2.0
        qset = frozenset(known)
        q_excess = m - len(set(tokens))
        alive, toks, sets, excess = self._alive, self._toks, self._sets, self._excess
        best_f, best_idx = self._tau, -1
        for idx, n in zip(*self._shortlist(known, m), strict=True):  # ascending idx
            if not alive[idx] or idx == exclude:
                continue
            # Overlap bound (3): L ≤ O ≤ shared distinct tokens + repeated occurrences.
            extra = excess[idx]
            if len(qset & sets[idx]) + min(extra, q_excess) < half * (m + n) - _EPS:
                continue
            f = rouge_l_f1(_lcs_masks(masks, m, toks[idx]), m, n)
            if f > best_f:  # strict: among equal scores the earliest added wins
                best_f, best_idx = f, idx
        return None if best_idx < 0 else (best_f, best_idx)


class RougeTokenizerAdapter:
    """Gives rouge_score the project's tokens (CJK characters, casefolded words)."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


def novelty_exhaustive(
    pool: Iterable[tuple[str, str]],
    candidates: Iterable[tuple[str, str]],
    threshold: float = 0.7,
) -> list[NoveltyDecision]:
    """Reference filter: rouge_score ROUGE-L against every reference, same sequential semantics.

    O(pool × candidates) and re-tokenizes per pair, like the original; used
    by tests and the benchmark to check `NoveltyIndex`. Needs the dev
    dependency rouge-score.
    """
    from rouge_score import rouge_scorer  # dev dependency: imported only here

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizerAdapter())
    references = list(pool)
    decisions = []
    for item_id, text in candidates:
        best_f, best_id = threshold, None
        for ref_id, ref_text in references:
            f = scorer.score(ref_text, text)["rougeL"].fmeasure
            if f > best_f:
                best_f, best_id = f, ref_id
        if best_id is None:
            references.append((item_id, text))
            decisions.append(NoveltyDecision(item_id, True))
        else:
            decisions.append(NoveltyDecision(item_id, False, best_f, best_id))
    return decisions
