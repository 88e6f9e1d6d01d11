"""Benchmark: the fast ROUGE-L novelty filter against the exhaustive rouge_score reference.

Generates synthetic instructions from English and Chinese templates (Zipf-
distributed content words, so common words are common as in real data) with
planted near-duplicates (an earlier instruction with one to three token
edits). On a subset both can finish, both filters run the same sequential
semantics from an empty pool; the script prints the share of identical
decisions (accept/reject, and for rejections the best score and the most
similar id) and the speed ratio. Then it times the fast filter on all items.

    .venv/bin/python bench/novelty.py [--n 50000] [--subset 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import time

from evoinstruct.agents.selection.novelty import NoveltyConfig, NoveltyIndex, novelty_exhaustive
from evoinstruct.agents.text import tokenize
from evoinstruct.text.rules import has_cjk

EN_TEMPLATES = [
    "Write a {adj} {form} about {topic} for {audience}.",
    "Explain how {topic} affects {topic2} in {n} sentences.",
    "Give {n} examples of {topic} and describe why each one {verb} {topic2}.",
    "Summarize the following text about {topic} in a {adj} tone.",
    "What is the difference between {topic} and {topic2}?",
    "Classify the sentiment of this review of {topic}: {adj} {topic2} {verb} {topic3}.",
    "Translate the sentence about {topic} into French and keep the {adj} style.",
    "Create a {form} that compares {topic}, {topic2} and {topic3} for {audience}.",
    "Suggest {n} ways to {verb} {topic} without {topic2}.",
    "List the steps needed to {verb} a {adj} {topic} using {topic2}.",
]
ZH_TEMPLATES = [
    "请写一篇关于{topic}的{adj}{form}，面向{audience}。",
    "用{n}句话解释{topic}如何影响{topic2}。",
    "列出{n}个{topic}的例子，并说明它们为什么{verb}{topic2}。",
    "{topic}和{topic2}有什么区别？",
    "请把下面这段关于{topic}的文字总结成{adj}的{form}。",
    "给{audience}设计一个关于{topic}、{topic2}和{topic3}的{form}。",
    "判断这条关于{topic}的评论的情感：{adj}{topic2}{verb}{topic3}。",
    "提出{n}种不用{topic2}就能{verb}{topic}的方法。",
]
EN_FORMS = [
    "poem",
    "story",
    "essay",
    "report",
    "email",
    "table",
    "dialogue",
    "plan",
    "quiz",
    "speech",
]
ZH_FORMS = ["诗", "故事", "文章", "报告", "邮件", "表格", "对话", "计划", "测验", "演讲"]
EN_AUDIENCE = ["children", "students", "engineers", "managers", "tourists", "doctors", "beginners"]
ZH_AUDIENCE = ["儿童", "学生", "工程师", "经理", "游客", "医生", "初学者"]
SYLLABLES = "ka lo mi ne ru ta so vi pe da ri mo lu ba ze ko fi na te go".split()
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def _zipf_pick(rng: random.Random, vocab: list[str]) -> str:
    # Rank r drawn with P ∝ 1/r (inverse-CDF of a log-uniform), like word frequencies.
    r = int(len(vocab) ** rng.random()) - 1
    return vocab[min(r, len(vocab) - 1)]


def _vocabularies(rng: random.Random) -> tuple[list[str], list[str]]:
    en = sorted(
        {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(30000)}
    )
    zh = sorted({"".join(rng.choice(HAN) for _ in range(rng.randint(2, 3))) for _ in range(30000)})
    rng.shuffle(en)
    rng.shuffle(zh)
    return en, zh


def _phrase(rng: random.Random, vocab: list[str], zh: bool) -> str:
    words = [_zipf_pick(rng, vocab) for _ in range(rng.randint(1, 3))]
    return "".join(words) if zh else " ".join(words)


def _fresh(rng: random.Random, en: list[str], zh: list[str]) -> str:
    is_zh = rng.random() < 0.4
    vocab = zh if is_zh else en
    template = rng.choice(ZH_TEMPLATES if is_zh else EN_TEMPLATES)
    return template.format(
        adj=_zipf_pick(rng, vocab),
        form=rng.choice(ZH_FORMS if is_zh else EN_FORMS),
        topic=_phrase(rng, vocab, is_zh),
        topic2=_phrase(rng, vocab, is_zh),
        topic3=_phrase(rng, vocab, is_zh),
        audience=rng.choice(ZH_AUDIENCE if is_zh else EN_AUDIENCE),
        verb=_zipf_pick(rng, vocab),
        n=rng.randint(2, 9),
    )


def _near_copy(rng: random.Random, text: str, en: list[str], zh: list[str]) -> str:
    tokens = tokenize(text)
    is_zh = any(has_cjk(t) for t in tokens)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(3)
        i = rng.randrange(len(tokens))
        if op == 0 and len(tokens) > 2:
            tokens.pop(i)
        elif op == 1:
            tokens[i] = rng.choice(HAN) if is_zh else _zipf_pick(rng, en)
        else:
            tokens.insert(i, rng.choice(HAN) if is_zh else rng.choice(["the", "a", "very", "new"]))
    return ("" if is_zh else " ").join(tokens)


def synthetic_instructions(
    n: int, seed: int = 0, near_dup_rate: float = 0.1
) -> list[tuple[str, str]]:
    """n (id, instruction) pairs; about near_dup_rate of them are edited copies of earlier ones."""
    rng = random.Random(seed)
    en, zh = _vocabularies(rng)
    items: list[tuple[str, str]] = []
    for i in range(n):
        if items and rng.random() < near_dup_rate:
            text = _near_copy(rng, rng.choice(items)[1], en, zh)
        else:
            text = _fresh(rng, en, zh)
        items.append((f"i{i:06d}", text))
    return items


def _exhaustive_pretokenized(items: list[tuple[str, str]], threshold: float) -> list[bool]:
    """Alpaca's variant: pool tokens cached, rouge_score's LCS over every pair."""
    from rouge_score.rouge_scorer import _score_lcs

    refs: list[list[str]] = []
    accepted = []
    for _, text in items:
        tokens = tokenize(text)
        ok = all(_score_lcs(ref, tokens).fmeasure <= threshold for ref in refs)
        if ok:
            refs.append(tokens)
        accepted.append(ok)
    return accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--skip-pretokenized", action="store_true")
    args = parser.parse_args()

    items = synthetic_instructions(args.n, args.seed)
    subset = items[: args.subset]
    n_zh = sum(has_cjk(text) for _, text in items)
    print(f"{len(items)} synthetic instructions ({n_zh} Chinese); subset {len(subset)}")

    t0 = time.perf_counter()
    reference = novelty_exhaustive([], subset, args.threshold)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = NoveltyIndex(NoveltyConfig(threshold=args.threshold)).filter(subset)
    t_fast = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(reference, fast, strict=True))
    same_verdict = sum(a.accepted == b.accepted for a, b in zip(reference, fast, strict=True))
    rejected = sum(not d.accepted for d in reference)
    print(f"subset: exhaustive (rouge_score.score per pair) {t_ref:.2f} s, fast {t_fast:.3f} s")
    print(f"  rejected by the reference: {rejected} of {len(subset)}")
    print(
        f"  identical decisions (verdict, best score, most similar id): {same}/{len(subset)} = {same / len(subset):.4%}"
    )
    print(f"  identical accept/reject verdicts: {same_verdict}/{len(subset)}")
    print(f"  speed ratio: {t_ref / t_fast:.0f}x")
    met = same / len(subset) >= 0.999 and t_ref / t_fast >= 50
    print(f"  targets (identical >= 99.9%, ratio >= 50x): {'met' if met else 'NOT met'}")
    if not args.skip_pretokenized:
        t0 = time.perf_counter()
        pre = _exhaustive_pretokenized(subset, args.threshold)
        t_pre = time.perf_counter() - t0
        agree = sum(p == d.accepted for p, d in zip(pre, fast, strict=True))
        print(
            f"  exhaustive with cached pool tokens (Alpaca's variant): {t_pre:.2f} s, ratio {t_pre / t_fast:.0f}x, verdicts agree {agree}/{len(subset)}"
        )

    index = NoveltyIndex(NoveltyConfig(threshold=args.threshold))
    decisions, elapsed, step = [], 0.0, max(1, len(items) // 5)
    for start in range(0, len(items), step):
        t0 = time.perf_counter()
        decisions += index.filter(items[start : start + step])
        elapsed += time.perf_counter() - t0
        print(f"  fast filter: {start + step:>6} items in {elapsed:6.2f} s (pool {len(index)})")
    kept = sum(d.accepted for d in decisions)
    print(
        f"all {len(items)}: fast filter {elapsed:.2f} s ({len(items) / elapsed:.0f} items/s), "
        f"kept {kept}, rejected {len(items) - kept}"
    )
    # The exhaustive filter's cost is proportional to the pairs it scores: each
    # candidate against every reference accepted before it.
    pairs_subset = _pairs(reference)
    estimate = t_ref / pairs_subset * _pairs(decisions)
    print(
        f"exhaustive on all {len(items)} (extrapolated per pair): {estimate / 3600:.1f} h, ratio ~{estimate / elapsed:.0f}x"
    )


def _pairs(decisions: list) -> int:
    pairs = accepted = 0
    for d in decisions:
        pairs += accepted
        accepted += d.accepted
    return pairs


if __name__ == "__main__":
    main()
