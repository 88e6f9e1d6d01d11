"""A deterministic stand-in teacher for graph and daemon tests (English prompts).

It reads which template a request was rendered from and answers in that
template's format: numbered task lists, instances, evolved prompts, answers,
judge scores, task types and ReAlign rewrites. Replies depend only on the
request, so a re-run after a crash gets the same answers, as a real cached
teacher would. Tests use it through ScriptedModel (in process) or as the reply
function of the loopback OpenAI test server (for daemon subprocesses).
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

VERBS = [
    "Describe",
    "Explain",
    "Compare",
    "Summarize",
    "Evaluate",
    "Outline",
    "Plan",
    "Critique",
    "Design",
    "List",
]
TOPICS = [
    "tidal energy",
    "medieval trade routes",
    "sourdough baking",
    "volcanic soil",
    "jazz improvisation",
    "urban beekeeping",
    "satellite navigation",
    "coral reef ecology",
    "board game design",
    "glacier retreat",
    "public library funding",
    "bicycle maintenance",
    "origami engineering",
    "desert agriculture",
    "language learning apps",
    "solar sailing",
    "ancient calendars",
    "noise pollution",
    "tea ceremonies",
    "open source licensing",
    "deep sea mining",
    "winter cycling",
    "museum lighting",
    "fermented foods",
]
AUDIENCES = [
    "for a curious teenager",
    "for a city council",
    "for first-year students",
    "for a small bakery owner",
    "for hospital volunteers",
    "for a hiking club",
    "for retired engineers",
    "for a school newsletter",
]
CONSTRAINTS = [
    "in exactly five bullet points",
    "citing two concrete historical examples",
    "using no more than ninety words",
    "with a short comparison table at the end",
    "and finish with one open question for discussion",
]


def _rng(text: str) -> random.Random:
    return random.Random(int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16))


def _user(messages: list[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


ZH_VERBS = ["介绍", "解释", "比较", "总结", "评价", "列出", "规划", "分析"]
ZH_TOPICS = [
    "潮汐能",
    "茶道",
    "城市养蜂",
    "古代历法",
    "珊瑚礁",
    "自行车保养",
    "发酵食品",
    "博物馆照明",
]
ZH_AUDIENCES = ["给中学生", "给社区居民", "给一年级大学生", "给小面包店店主", "给退休工程师"]


def _zh_task(rng: random.Random) -> str:
    return f"请{rng.choice(ZH_AUDIENCES)}{rng.choice(ZH_VERBS)}{rng.choice(ZH_TOPICS)}，重点谈谈{rng.choice(ZH_TOPICS)}。"


def _task(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)} {rng.choice(TOPICS)} {rng.choice(AUDIENCES)}, focusing on {rng.choice(TOPICS)}."


def _between(text: str, start: str, end: str | None) -> str:
    after = text.split(start, 1)[1] if start in text else text
    return (after.split(end, 1)[0] if end and end in after else after).strip()


def teacher_reply(messages: list[dict[str, str]]) -> str:
    """The teacher's answer to one chat request."""
    text = _user(messages)
    rng = _rng(text)
    if text.startswith("Here are some example tasks"):
        first, last = (int(x) for x in re.search(r"Number them (\d+) to (\d+)", text).groups())
        return "\n".join(f"{i}. {_task(rng)}" for i in range(first, last + 1))
    if text.startswith("下面是一些只靠文字就能完成的示例任务"):
        first, last = (int(x) for x in re.search(r"编号从 (\d+) 到 (\d+)", text).groups())
        return "\n".join(f"{i}. {_zh_task(rng)}" for i in range(first, last + 1))
    if text.startswith("下面的任务是否属于分类任务"):
        return "否"
    if text.startswith("请为下面的任务编写示例"):
        return f"示例 1\n输入：无\n输出：这是关于{rng.choice(ZH_TOPICS)}的一个认真的回答。"
    if text.startswith("Is the following task a classification task"):
        return "No"
    if text.startswith("Write examples for the task below"):
        task = _between(text, "Task:", None)
        return f"Example 1\nInput: None\nOutput: {_answer(task, rng)}"
    if "#The Given Prompt#" in text:
        given = _between(text, "#The Given Prompt#", "#")
        if "#Created Prompt#" in text:
            return _task(rng)
        return f"{given.rstrip('.')} {rng.choice(CONSTRAINTS)}."
    if text.startswith("Compare the two instructions below"):
        return "Not Equal"
    if text.startswith("You are an impartial judge. Compare two AI assistants"):
        return f"Both answers are short.\nWinner: {rng.choice(['A', 'B', 'tie'])}"
    if text.startswith("Decide which type of task"):
        return "open_qa"
    if "### Original response" in text:
        original = _between(text, "### Original response", "\nRules:")
        return f"Reasoning: group the content into clear points.\nRevised response:\n{original}\n\nIn short: the points above answer the question."
    if "first line the score" in text.lower() or re.search(r"score from \d", text):
        return f"{rng.choice(['4.5', '5', '5', '4', '3'])}\nThe response is relevant and mostly correct."
    return _answer(text, rng)


def _answer(prompt: str, rng: random.Random) -> str:
    topic = rng.choice(TOPICS)
    return (
        f"Here is a careful answer about {topic}. First, consider the main causes and how they interact. "
        f"Second, look at a concrete case from {rng.choice(TOPICS)} that shows the effect clearly. "
        f"Finally, weigh the costs and benefits before deciding what to do next."
    )


def server_reply(body: dict[str, Any]) -> str:
    """Adapter for OpenAITestServer(reply=...)."""
    return teacher_reply(body["messages"])


def scripted_teacher(**kwargs: Any):
    """A ScriptedModel that answers every request as the teacher would."""
    from tests.doubles import ScriptedModel

    return ScriptedModel(default=lambda request: teacher_reply(list(request.messages)), **kwargs)
