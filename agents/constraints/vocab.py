"""Word lists the samplers draw from, and the pick-a-word helpers they share.

Keyword samplers prefer words taken from the instruction (a forbidden or
repeated word that belongs to the topic makes a real constraint); the lists
here fill in when the instruction has too few. Chinese has no spaces, so
Chinese candidates are list words that occur in the instruction rather than
segments cut from it: a heuristic cut yields non-words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from evoinstruct.agents.constraints.registry import SampleContext
from evoinstruct.agents.textstats import STOPWORDS_EN
from evoinstruct.text.rules import normalize

KEYWORDS = {
    "en": (
        "balance", "bridge", "candle", "journey", "future", "garden", "history", "energy",
        "community", "silence", "window", "memory", "river", "mountain", "harvest", "compass",
        "lantern", "network", "pattern", "signal", "village", "weather", "freedom", "kitchen",
        "library", "ocean", "puzzle", "rhythm", "shadow", "strategy", "treasure", "wisdom",
        "courage", "curiosity", "horizon", "legacy", "mirror", "season", "velocity", "anchor",
    ),
    "zh": (
        "春天", "夏天", "秋天", "冬天", "城市", "乡村", "历史", "未来", "文化", "科技", "自然",
        "环境", "教育", "健康", "经济", "社会", "家庭", "朋友", "学习", "工作", "时间", "生活",
        "音乐", "艺术", "旅行", "故事", "梦想", "希望", "勇气", "智慧", "记忆", "河流", "山峰",
        "大海", "森林", "花园", "灯塔", "桥梁", "窗户", "书籍", "市场", "数据", "网络", "能源",
        "安全", "效率", "质量", "创新", "传统", "平衡", "方法", "问题", "原因", "结果", "影响",
        "发展", "变化", "计划", "目标", "经验", "团队", "用户", "产品", "设计", "算法", "模型",
        "语言", "诗歌", "月亮", "太阳", "星星", "雨水", "风景", "食物", "运动", "孩子", "老师",
    ),
}  # fmt: skip

FILLERS = {
    "en": (
        "very", "really", "just", "actually", "basically", "thing", "stuff", "good",
        "important", "great", "nice", "interesting", "however", "many",
    ),
    "zh": ("非常", "真的", "其实", "东西", "一些", "重要", "很好", "有趣", "基本上", "总之", "然后", "特别"),
}  # fmt: skip

START_PHRASES = {
    "en": ("Certainly", "Here is my answer", "Great question", "In short", "To begin with", "Well"),
    "zh": ("好的", "简单来说", "总的来说", "这是一个好问题", "我的回答如下"),
}  # fmt: skip

END_PHRASES = {
    "en": (
        "Is there anything else I can help with?",
        "Let me know if you have additional questions.",
        "Hope this helps.",
        "That is all.",
        "Any other questions?",
    ),
    "zh": ("还有什么可以帮您的吗？", "希望对你有帮助。", "以上就是全部内容。", "如有疑问，欢迎继续提问。"),
}  # fmt: skip

# Paragraph openers: OPENING_WORDS suit a first paragraph, FIRST_WORDS any later one.
OPENING_WORDS = {
    "en": ("first", "today", "imagine", "overall", "generally"),
    "zh": ("首先", "今天", "想象", "通常", "一般来说"),
}
FIRST_WORDS = {
    "en": ("however", "moreover", "finally", "additionally", "meanwhile", "therefore", "second",
           "next"),
    "zh": ("其次", "然而", "此外", "最后", "总之", "同时", "因此"),
}  # fmt: skip

POSTSCRIPT_MARKERS = {"en": ("P.S.", "P.P.S"), "zh": ("P.S.", "附言")}
SECTION_SPLITERS = {"en": ("Section", "SECTION", "Part", "PART"), "zh": ("SECTION", "Section")}

_LATIN_CANDIDATE = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")


def instruction_words(instruction: str, language: str) -> list[str]:
    """Content words of the instruction, first occurrence order, lower-cased.

    Latin words of four or more letters that are not stop words, in either
    language (a Chinese instruction may name "Python"); for Chinese also the
    list keywords it contains.
    """
    seen: dict[str, None] = {}
    for word in _LATIN_CANDIDATE.findall(instruction):
        low = word.lower()
        if len(low) >= 4 and low not in STOPWORDS_EN:
            seen.setdefault(low, None)
    if language == "zh":
        hits = sorted((instruction.find(w), w) for w in KEYWORDS["zh"] if w in instruction)
        for _, w in hits:
            seen.setdefault(w, None)
    return list(seen)


def overlaps(word: str, reserved: frozenset[str]) -> bool:
    """Whether a word shares text with a reserved word or phrase (either contains the other)."""
    norm = normalize(word)
    return any(norm in r or r in norm for r in reserved)


def pick_words(
    ctx: SampleContext,
    n: int,
    fallback: Sequence[str],
    *,
    from_instruction: float,
) -> list[str]:
    """n distinct words: each from the instruction with probability `from_instruction`.

    Words that overlap reserved ones, or each other, are skipped; the fallback
    list is the reserve when the instruction runs out.
    """
    topic = instruction_words(ctx.instruction, ctx.language)
    spare = list(fallback)
    out: list[str] = []
    taken = set(ctx.reserved)
    for _ in range(n):
        word = None
        for source in (topic, spare) if ctx.rng.random() < from_instruction else (spare, topic):
            free = [w for w in source if not overlaps(w, frozenset(taken))]
            if free:
                word = ctx.rng.choice(free)
                break
        if word is None:
            break
        out.append(word)
        taken.add(normalize(word))
    return out


def pick_phrase(ctx: SampleContext, options: Sequence[str]) -> str:
    """One option that does not overlap reserved text (any option if none is free)."""
    free = [o for o in options if not overlaps(o, ctx.reserved)]
    return ctx.rng.choice(free or list(options))


# Paragraph markers: symbols a keyboard or input method types, none of them a markdown
# bullet ("-", "*", "+") or quote (">"), so a marked paragraph stays plain prose.
PARAGRAPH_MARKERS = {
    "en": ("§", "▶", "◆", "=>", "::"),
    "zh": ("▶", "◆", "※", "§", "=>"),
}
# Labels a line may start with ("Summary: ..."); Chinese ones end in the full-width colon.
LINE_LABELS = {
    "en": ("Summary:", "Key takeaway:", "Bottom line:", "Next step:", "Action item:"),
    "zh": ("总结：", "要点：", "结论：", "建议：", "一句话总结："),
}
# Single code points with an emoji presentation of their own (no variation selector needed).
EMOJI = ("🌱", "✅", "🚀", "💡", "📌", "🎯", "🔑", "⭐", "🌊", "📚")
