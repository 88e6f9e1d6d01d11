"""The persistent novelty index decides exactly as the exhaustive ROUGE-L check (tests/exhaustive.py).

Real SQLite in tmp_path. Pools are English, Chinese and mixed, grown in rounds
and accepted in shuffled order (so the file's own numbering differs from the
pool's rowids), with repeated texts (ties broken by the pool's order). The
candidates are planted: near copies, paraphrases, exact copies, unrelated
texts, and copies of earlier candidates of the same batch (the in-batch rule).
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from evoinstruct.agents.selection.novelty_postings import item_postings, token_bit
from evoinstruct.agents.selection.pool_index import PoolIndex
from evoinstruct.agents.selection.pool_indexes import open_pool_indexes
from evoinstruct.agents.selector import SelectorConfig, SelectorIndexes
from evoinstruct.agents.text import tokenize
from evoinstruct.store import Store, open_store
from evoinstruct.store.records import ExampleDraft
from tests import exhaustive

CONFIG = SelectorConfig(steps=["exact_dedup", "near_dedup", "novelty"], constraints="off")

EN_VERBS = "write explain list compare summarize translate describe classify plan design".split()
EN_FORMS = "poem story essay report email table dialogue plan quiz speech".split()
EN_TOPICS = (
    "river city market garden train budget galaxy recipe protein volcano harbor library "
    "glacier orchestra satellite bakery forest election vaccine bridge desert museum"
).split()
EN_AUDIENCE = "kids students engineers managers tourists doctors beginners".split()
EN_SYNONYMS = {
    "write": "compose",
    "explain": "clarify",
    "list": "enumerate",
    "compare": "contrast",
    "kids": "children",
    "story": "tale",
    "short": "brief",
}
ZH_VERBS = ["写", "解释", "列出", "比较", "总结", "翻译", "描述", "设计"]
ZH_FORMS = ["诗", "故事", "文章", "报告", "邮件", "表格", "对话", "计划"]
ZH_TOPICS = [
    "河流", "城市", "市场", "花园", "火车", "预算", "星系", "菜谱", "蛋白质", "火山",
    "港口", "图书馆", "冰川", "乐队", "卫星", "面包店", "森林", "选举", "疫苗", "桥梁",
]  # fmt: skip
ZH_AUDIENCE = ["儿童", "学生", "工程师", "经理", "游客", "医生", "初学者"]
ZH_SYNONYMS = {"写": "撰写", "解释": "说明", "列出": "举出", "儿童": "孩子", "故事": "小说"}


SYLLABLES = "ka lo mi ne ru ta so vi pe da ri mo lu ba ze ko fi na te go".split()
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 800)]


def _topic(rng: random.Random, zh: bool) -> str:
    """A known topic or a made-up one (pseudo-words, rare characters): pools need both."""
    if rng.random() < 0.3:
        return rng.choice(ZH_TOPICS if zh else EN_TOPICS)
    if zh:
        return "".join(rng.choice(HAN) for _ in range(rng.randint(2, 3)))
    return " ".join(
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        for _ in range(rng.randint(1, 3))
    )


def fresh(rng: random.Random) -> str:
    """An English, Chinese or mixed instruction from templates and content words."""
    kind = rng.random()
    if kind < 0.55:
        topics = [_topic(rng, zh=False) for _ in range(3)]
        return rng.choice(
            [
                f"{rng.choice(EN_VERBS).title()} a short {rng.choice(EN_FORMS)} about the "
                f"{topics[0]} and the {topics[1]} for {rng.choice(EN_AUDIENCE)}.",
                f"Explain how the {topics[0]} affects the {topics[1]} in {rng.randint(2, 9)} sentences.",
                f"What is the difference between a {topics[0]} and a {topics[1]}?",
                f"Give {rng.randint(2, 9)} reasons why the {topics[0]} needs a {topics[1]} "
                f"near the {topics[2]}.",
            ]
        )
    topics = [_topic(rng, zh=True) for _ in range(3)]
    if kind < 0.9:
        return rng.choice(
            [
                f"请{rng.choice(ZH_VERBS)}一篇关于{topics[0]}和{topics[1]}的{rng.choice(ZH_FORMS)}，"
                f"面向{rng.choice(ZH_AUDIENCE)}。",
                f"用{rng.randint(2, 9)}句话解释{topics[0]}如何影响{topics[1]}。",
                f"{topics[0]}和{topics[1]}有什么区别？",
                f"列出{rng.randint(2, 9)}个{topics[0]}附近需要{topics[1]}的理由。",
            ]
        )
    en = [_topic(rng, zh=False) for _ in range(2)]
    return rng.choice(
        [
            f"请用中文解释 {en[0]} 和 {en[1]} 的区别，并举一个{topics[0]}的例子。",
            f"Translate 这段关于{topics[0]}的文字 into English for {rng.choice(EN_AUDIENCE)}.",
        ]
    )


def _join(tokens: list[str], like: str) -> str:
    return "".join(tokens) if any("\u4e00" <= ch <= "\u9fff" for ch in like) else " ".join(tokens)


def near_copy(rng: random.Random, text: str) -> str:
    """One to three token edits (delete, replace, insert)."""
    tokens = tokenize(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(tokens))
        op = rng.randrange(3)
        word = rng.choice(EN_TOPICS + ZH_TOPICS + list("的了和"))
        if op == 0 and len(tokens) > 2:
            tokens.pop(i)
        elif op == 1:
            tokens[i] = word
        else:
            tokens.insert(i, word)
    return _join(tokens, text)


def paraphrase(rng: random.Random, text: str) -> str:
    """Synonyms, a swapped neighbour pair, a polite opening or closing: ROUGE-L near the threshold."""
    out = text
    for a, b in {**EN_SYNONYMS, **ZH_SYNONYMS}.items():
        if a in out and rng.random() < 0.7:
            out = out.replace(a, b, 1)
    tokens = tokenize(out)
    if len(tokens) > 3:
        i = rng.randrange(len(tokens) - 1)
        tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
    extra = rng.choice([["please"], ["请你"], ["in", "detail"], ["详细地"], []])
    tokens = extra + tokens if rng.random() < 0.5 else tokens + extra
    return _join(tokens, text)


def exact_copy(rng: random.Random, text: str) -> str:
    return rng.choice([text.upper(), f"  {text}  ", text.rstrip(".。？?") + "!", text])


def twin(text: str) -> str:
    """Another example with the very same tokens (a comma inside): every score ties with it."""
    if any("\u4e00" <= ch <= "\u9fff" for ch in text):
        return text[:2] + "、" + text[2:]
    first, _, rest = text.partition(" ")
    return f"{first}, {rest}"


def grow(store: Store, rng: random.Random, texts: list[str], round: int) -> None:
    """Insert as candidates (some with a token-identical twin: ROUGE-L ties) and accept them
    in a shuffled order, so the order the index sees them differs from the pool's."""
    drafts = [ExampleDraft(t, output=f"answer {round}-{i}") for i, t in enumerate(texts)]
    drafts += [ExampleDraft(twin(t), output="twin") for t in rng.sample(texts, len(texts) // 6)]
    ids = store.add_candidates(drafts, round=round).ids
    rng.shuffle(ids)
    for start in range(0, len(ids), 9):
        store.set_status(ids[start : start + 9], "accepted")


def pool_texts(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    for _ in range(n):
        out.append(near_copy(rng, rng.choice(out)) if out and rng.random() < 0.3 else fresh(rng))
    return out


def planted(rng: random.Random, pool: list[str], n: int) -> list[tuple[str, str]]:
    """n candidates: near copies, paraphrases, exact copies, unrelated, and in-batch copies."""
    out: list[str] = []
    makers = [near_copy, paraphrase, exact_copy]
    while len(out) < n:
        roll = rng.random()
        if roll < 0.35:
            out.append(fresh(rng))
        elif roll < 0.45 and out:
            out.append(rng.choice([near_copy, paraphrase])(rng, rng.choice(out[-30:])))
        else:
            out.append(rng.choice(makers)(rng, rng.choice(pool)))
    return [(f"cand-{k:04d}", t) for k, t in enumerate(out)]


def accepted(store: Store, field: str = "instruction") -> list[tuple[str, str]]:
    return [(e.id, getattr(e, field)) for e in store.iter_examples(status="accepted")]


def test_the_sketch_bound_holds_at_the_first_shared_element() -> None:
    """Bound (7): 1 + the candidate's elements after u whose bit the item's row at u holds
    is at least the multiset overlap, whatever the tokens, repeats and ranks."""
    rng = random.Random(3)
    checked = 0
    for _ in range(3000):
        x = [rng.randrange(60) for _ in range(rng.randint(1, 30))]
        y = [rng.randrange(60) for _ in range(rng.randint(1, 30))]
        ranks = rng.sample(range(60), 60)
        rank = ranks.__getitem__
        shared = Counter(x) & Counter(y)
        if not shared:
            continue
        u = min(shared, key=rank)
        rows = {tid: (slack, sketch) for tid, _, slack, sketch in item_postings(x, rank, 0.0)}
        slack, sketch = rows[u]
        assert sorted(x, key=rank)[len(x) - slack] == u  # the row is at u's first occurrence
        after = sorted(y, key=rank)
        after = after[after.index(u) + 1 :]
        bound = 1 + sum(sketch >> token_bit(t) & 1 for t in after)
        assert bound >= sum(shared.values())
        checked += 1
    assert checked > 1000


@pytest.mark.slow  # ~1,100 candidates against every pool text, the exhaustive way
def test_file_decides_as_the_exhaustive_rouge_l_check_on_planted_bilingual_candidates(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    store = open_store(tmp_path / "pool.db")
    texts = pool_texts(rng, 160)
    grow(store, rng, texts, round=0)
    indexes = open_pool_indexes(store, CONFIG)
    for round in (1, 2):  # grown through the log, and some leave the pool
        more = pool_texts(rng, 80) + [near_copy(rng, t) for t in rng.sample(texts, 30)]
        texts += more
        grow(store, rng, more, round=round)
    gone = rng.sample([i for i, _ in accepted(store)], 40)
    store.set_status(gone, "rejected")
    pool = accepted(store)
    candidates = planted(rng, texts, 1100)

    expected = exhaustive.novelty(pool, candidates)
    got = indexes.novelty.filter(candidates, commit=False)
    assert got == expected  # verdicts, scores bit for bit, and the example named

    # The check exercised what it claims: both verdicts in both languages, rejections
    # by pool texts and by earlier candidates of the batch, scores at the threshold's
    # edge, and ties that the pool's order breaks.
    by_id = dict(candidates)
    rejected = [d for d in expected if not d.accepted]
    kinds = Counter(
        ("zh" if any("\u4e00" <= c <= "\u9fff" for c in by_id[d.id]) else "en", d.accepted)
        for d in expected
    )
    assert min(kinds.values()) >= 80, kinds
    assert sum(d.most_similar in by_id for d in rejected) >= 20
    assert sum(0.7 < d.score <= 0.75 for d in rejected) >= 20  # type: ignore[operator]
    # Ties: the pool's order names the example, which the file's own order would not.
    pool_text = dict(pool)
    order = {item_id: k for k, (item_id, _) in enumerate(pool)}
    file = indexes.novelty.index.file  # type: ignore[attr-defined]
    ties = against_file_order = 0
    for d in rng.sample(rejected, 200):
        if d.most_similar not in pool_text:
            continue
        lcs = exhaustive.Lcs(tokenize(by_id[d.id]))
        best = [i for i, t in pool if lcs.rouge_l(tokenize(t)) == d.score]
        ties += len(best) > 1
        ords = {i: file.item_state(i)[0] for i in best}
        against_file_order += min(ords, key=ords.__getitem__) != min(best, key=order.__getitem__)
    assert ties >= 30 and against_file_order >= 5, (ties, against_file_order)
    # rouge_score, the dev dependency, agrees on what was named.
    for d in rng.sample(rejected, 60):
        ref = pool_text.get(d.most_similar) or by_id[d.most_similar]  # type: ignore[arg-type]
        assert exhaustive.rouge_score_f1(ref, by_id[d.id]) == d.score

    # One at a time against the pool alone (no in-batch references) decides the same too.
    for item_id, text in candidates[:100]:
        assert indexes.novelty.best_match(text, item_id) == _best(pool, item_id, text)
    store.close()


def _best(pool: list[tuple[str, str]], item_id: str, text: str) -> tuple[float, str] | None:
    d = exhaustive.novelty(pool, [(item_id, text)])[0]
    return None if d.accepted else (d.score, d.most_similar)  # type: ignore[return-value]


def _dump_and_reload(path: Path) -> None:
    """What `sqlite3 pool.db .dump | sqlite3 new.db` and a rename do: rowids renumbered."""
    old = sqlite3.connect(path)
    script = "\n".join(old.iterdump())
    old.close()
    path.unlink()
    Path(f"{path}-wal").unlink(missing_ok=True)
    Path(f"{path}-shm").unlink(missing_ok=True)
    new = sqlite3.connect(path)
    new.executescript(script)
    new.close()


@pytest.mark.parametrize("compaction", ["vacuum", "dump_and_reload"])
def test_compacting_the_pool_keeps_every_decision_exact(tmp_path: Path, compaction: str) -> None:
    rng = random.Random(11)
    path = tmp_path / "pool.db"
    store = open_store(path)
    texts = pool_texts(rng, 200)
    grow(store, rng, texts, round=0)
    grow(store, rng, pool_texts(rng, 60), round=1)
    PoolIndex(store, CONFIG).close()
    # Deletions all over the table: rejected candidates and accepted examples alike.
    rows = [r[0] for r in store.db.execute("SELECT id FROM examples ORDER BY rowid")]
    doomed = rows[::5] + rows[1::7]
    with store.transaction() as db:
        db.execute(f"DELETE FROM examples WHERE id IN ({','.join('?' * len(doomed))})", doomed)
    PoolIndex(store, CONFIG).close()  # the deletions reach the index through the log
    before = dict(store.db.execute("SELECT id, rowid FROM examples"))
    store.close()
    if compaction == "vacuum":
        conn = sqlite3.connect(path)
        conn.execute("VACUUM")
        conn.close()
    else:
        _dump_and_reload(path)
    store = open_store(path)
    after = dict(store.db.execute("SELECT id, rowid FROM examples"))
    if compaction == "dump_and_reload":
        assert sum(before[i] != after[i] for i in after) > len(after) // 2  # really renumbered
    # New examples take rowids the index once knew under other examples.
    grow(store, rng, pool_texts(rng, 50) + [near_copy(rng, t) for t in texts[:30]], round=2)

    index = PoolIndex(store, CONFIG)
    assert index.rebuilt_because is None and index.work["rebuilds"] == 0
    index.close()
    indexes = open_pool_indexes(store, CONFIG)
    pool = accepted(store)
    candidates = planted(rng, texts, 260)
    assert indexes.novelty.filter(candidates, commit=False) == exhaustive.novelty(pool, candidates)
    sigs = exhaustive.signatures(pool, CONFIG.dedup)
    for k, (_, text) in enumerate(candidates[:120]):
        exclude = pool[k % len(pool)][0] if k % 4 == 0 else None
        assert indexes.dedup.exact(text, exclude) == exhaustive.exact(pool, text, exclude)
        assert indexes.dedup.near(text, exclude) == exhaustive.near(
            sigs, text, CONFIG.dedup, exclude
        )
    store.close()


def test_the_pool_doubling_rewrites_no_row_of_the_examples_already_indexed(
    tmp_path: Path,
) -> None:
    """No re-rank: what growth costs is the rows of what was added, whatever the size reached."""
    rng = random.Random(5)
    store = open_store(tmp_path / "pool.db")
    grow(store, rng, pool_texts(rng, 150), round=0)
    index = PoolIndex(store, CONFIG)
    conn = index.file.conn
    postings = set(conn.execute("SELECT tid, n, slack, ord, rec FROM postings"))
    ranks = set(conn.execute("SELECT token, tid, rank FROM vocab"))
    size = len(index)
    for round in (1, 2, 3, 4):
        grow(store, rng, pool_texts(rng, 60) + ["全新的词汇：量子纠缠与拓扑绝缘体"], round=round)
        index.sync()
    assert len(index) >= 2 * size and index.work["rebuilds"] == 1
    assert postings <= set(conn.execute("SELECT tid, n, slack, ord, rec FROM postings"))
    now = set(conn.execute("SELECT token, tid, rank FROM vocab"))
    assert ranks <= now  # every token keeps its id and rank ...
    new_ranks = [r for _, _, r in now - ranks]
    assert new_ranks and max(new_ranks) < min(r for _, _, r in ranks)  # ... new ones sort first
    # and it still decides as a file built from scratch would.
    reference = SelectorIndexes.build(store.iter_examples(status="accepted"), CONFIG)
    probes = planted(rng, [t for _, t in accepted(store)], 150)
    persistent = open_pool_indexes(store, CONFIG)
    assert persistent.novelty.filter(probes, commit=False) == reference.novelty.filter(
        probes, commit=False
    )
    index.close()
    store.close()


def test_texts_of_thousands_of_tokens_and_empty_ones_decide_as_the_exhaustive_check(
    tmp_path: Path,
) -> None:
    """Windows past what one packed integer holds take the wide path; nothing is lost."""
    rng = random.Random(13)
    words = [f"w{k}" for k in range(400)]
    long_en = [
        " ".join(rng.choice(words) for _ in range(rng.randint(2500, 3200))) for _ in range(3)
    ]
    long_zh = "".join(rng.choice(HAN) for _ in range(3000))
    store = open_store(tmp_path / "pool.db")
    grow(store, rng, pool_texts(rng, 40) + long_en + [long_zh], round=0)
    indexes = open_pool_indexes(store, CONFIG)
    candidates = [
        (f"long-{k}", near_copy(rng, text)) for k, text in enumerate(long_en + [long_zh])
    ] + [
        ("shuffled", " ".join(rng.sample(long_en[0].split(), 2400))),
        ("unrelated", " ".join(rng.choice(words) for _ in range(3000))),
        ("empty", ""),
        ("punctuation", "!!! ？？ ..."),
        ("unknown", "zzqx yyqx"),
        ("short", near_copy(rng, accepted(store)[0][1])),
    ]
    expected = exhaustive.novelty(accepted(store), candidates)
    assert indexes.novelty.filter(candidates, commit=False) == expected
    assert sum(not d.accepted for d in expected) >= 4
    store.close()
