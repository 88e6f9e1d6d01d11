"""Instruction generation: Self-Instruct and the Alpaca variant, with their filters and instances.

`generate` shows the model demos (human seeds plus accepted machine examples)
and asks for a numbered list of new tasks (Alpaca: continuing the demos'
numbered blocks), parses the list and drops tasks that fail the cheap filters
(length, blacklist, bad prefix, truncation, another language than the
prompt's, the request's own words); each call leaves a `CallRecord` of what
its tasks met. In Self-Instruct mode the tasks are instructions only;
`generate_instances` then writes input/output instances for them, output-first
for classification tasks. In Alpaca mode each task comes with its input and
output.

ROUGE-L novelty against the pool is done by the step around the agent
(`agents.generation_step`), not here.
"""

from __future__ import annotations

import dataclasses
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evoinstruct.agents.outcome import AgentOutcome
from evoinstruct.agents.text import join_tokens, ngrams, tokenize
from evoinstruct.agents.textstats import find_phrase, is_punctuation
from evoinstruct.models.base import ChatModel, ChatRequest, model_version
from evoinstruct.prompts.library import PromptLibrary
from evoinstruct.store.records import Example, ExampleDraft, Rejection
from evoinstruct.store.stages import Stage
from evoinstruct.text.rules import count_words, has_cjk, language_of, normalize

Mode = Literal["self_instruct", "alpaca"]
CALL_KEY = "generation_call"  # a draft's meta key: the number of the call that wrote it
# What parsing sets aside that was never a task: it counts in no call's tasks or drops.
NOT_TASKS = frozenset({"preamble", "aside"})

# Markers a template writes and the parser reads: one definition for both.
NO_INPUT = {"en": "<noinput>", "zh": "<无输入>"}
NONE_INPUT = {"en": "None", "zh": "无"}
EXAMPLE_LABEL = {"en": "Example", "zh": "示例"}
_EMPTY_INPUTS = {"<noinput>", "<no input>", "no input", "none", "<none>", "n/a", "无", "<无输入>"}
_EMPTY_INPUTS |= {"无输入", "（无）", "(none)"}

DEFAULT_BLACKLIST = {
    "en": ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map"]
    + ["maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"],
    "zh": ["图片", "图像", "照片", "图表", "画", "绘制", "绘图", "文件", "地图", "视频", "音频"]
    + ["音乐", "流程图", "示意图", "前往"],
}
DEFAULT_BAD_PREFIXES = {
    "en": ["Write a program"],
    "zh": [
        "编写一个程序",
        "写一个程序",
        "编写一段程序",
        "写一段程序",
        "请编写一个程序",
        "请写一个程序",
    ],
}


class Decoding(BaseModel):
    """Sampling parameters of one kind of call."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    presence_penalty: float | None = Field(None, description="Unset where unsupported.")
    max_tokens: int = Field(1024, ge=1, description="Completion token limit.")


class GeneratorConfig(BaseModel):
    """Self-Instruct / Alpaca generation (METHODS 1.1)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(
        "self_instruct",
        description="self_instruct: instructions, then instances; alpaca: instruction/input/output in one call.",
    )
    demos_human: int = Field(6, ge=0, description="Human seed demos per Self-Instruct call.")
    demos_machine: int = Field(
        2, ge=0, description="Accepted machine demos per Self-Instruct call (0 while none exist)."
    )
    alpaca_demos: int = Field(3, ge=0, description="Human seed demos per Alpaca call.")
    self_instruct_tasks_per_call: int = Field(
        8,
        ge=1,
        description="New tasks asked per Self-Instruct call (a list of its own, numbered from 1).",
    )
    tasks_per_call: int = Field(
        20,
        ge=1,
        description="New tasks asked per Alpaca call; the prompt and the stop marker both use it.",
    )
    self_instruct_decoding: Decoding = Field(
        default_factory=lambda: Decoding(
            temperature=0.7, top_p=0.5, presence_penalty=2.0, max_tokens=1024
        ),
        description="Self-Instruct's released settings.",
    )
    alpaca_decoding: Decoding = Field(
        default_factory=lambda: Decoding(
            temperature=1.0, top_p=1.0, presence_penalty=None, max_tokens=3072
        ),
        description="Alpaca's released settings.",
    )
    min_words: int = Field(
        4, ge=0, description="Drop tasks with fewer words (CJK characters count as words)."
    )
    max_words: int = Field(150, ge=1, description="Drop tasks with more words.")
    blacklist: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_BLACKLIST.items()},
        description="Per language: words a text-only model cannot serve (word-boundary, case-insensitive; CJK as substrings).",
    )
    bad_prefixes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_BAD_PREFIXES.items()},
        description="Per language: drop tasks starting with these (case-insensitive).",
    )
    generate_instances: bool = Field(
        True,
        description="Self-Instruct: write instances for new tasks; False leaves outputs to the responder.",
    )
    classification_check: bool = Field(
        True,
        description="Ask the model whether a task is classification (yes/no); off uses meta['is_classification'].",
    )
    classify_max_tokens: int = Field(8, ge=1, description="Token limit of the yes/no answer.")
    instances_per_call: int = Field(
        5, ge=1, description="Instances asked per task; the prompt and the stop marker both use it."
    )
    instances_kept: int = Field(
        1,
        ge=1,
        description="Instances kept per task, sampled; each becomes a draft with the same instruction.",
    )
    instance_decoding: Decoding = Field(
        default_factory=lambda: Decoding(
            temperature=0.0, top_p=1.0, presence_penalty=1.5, max_tokens=512
        ),
        description="Instance generation settings (Self-Instruct's released script).",
    )

    def demo_counts(self) -> tuple[int, int]:
        """(human, machine) demos per call for the current mode."""
        if self.mode == "alpaca":
            return self.alpaca_demos, 0
        return self.demos_human, self.demos_machine

    def call_size(self) -> int:
        """New tasks asked per call for the current mode."""
        return self.tasks_per_call if self.mode == "alpaca" else self.self_instruct_tasks_per_call

    def decoding(self) -> Decoding:
        return self.alpaca_decoding if self.mode == "alpaca" else self.self_instruct_decoding


@dataclass
class ParsedTask:
    """One task read from a model's list; output is None when the mode writes instructions only."""

    instruction: str
    input: str = ""
    output: str | None = None
    raw: str = ""


@dataclass
class Instance:
    input: str
    output: str
    raw: str = ""


@dataclass
class CallRecord:
    """One generation call as it was made: the prompt, its language, and what its tasks met.

    `tasks` counts the tasks the answer held (a preamble or an aside is none); `drops`
    counts, per reason, those that parsing or a filter took. Its drafts carry
    `meta[CALL_KEY] = index`.
    """

    index: int
    prompt: str
    first_index: int
    language: str
    template: str
    model_version: str
    tasks: int = 0
    drops: Counter[str] = field(default_factory=Counter)


@dataclass
class GenerateOutcome(AgentOutcome):
    """Kept drafts, rejections with reasons, usage counters, and one record per call."""

    stage = Stage.GENERATE

    drafts: list[ExampleDraft] = field(default_factory=list)
    call_records: list[CallRecord] = field(default_factory=list)


# --- numbering -------------------------------------------------------------


def numbering(n_demos: int, count: int) -> tuple[int, int, tuple[str, ...]]:
    """First and last new task number and the stop markers, all from the one `count`."""
    first, last = n_demos + 1, n_demos + count
    return first, last, (f"\n{last + 1}.", f"\n{last + 1}、")


def task_list(tasks: Sequence[str], first_index: int) -> str:
    """Tasks as the numbered list a Self-Instruct answer is read from ("9. ...", one a line).

    The trainer writes the accepted tasks of a call this way as the answer the student
    learns for that call's prompt, so what it learns to write is what `parse_tasks` reads.
    """
    return "\n".join(f"{first_index + i}. {_one_line(t)}" for i, t in enumerate(tasks))


def instance_stops(max_examples: int, language: str) -> tuple[str, ...]:
    label = EXAMPLE_LABEL.get(language, EXAMPLE_LABEL["en"])
    return (f"{label} {max_examples + 1}", "\nTask:", "\n任务：")


# --- parsing ---------------------------------------------------------------

_ITEM_RE = re.compile(
    r"^\s*(?:\*\*)?(?:(?:task|任务)\s*)?(\d{1,3})\s*(?:\*\*)?\s*[.)、:：](?!\d)\s*(?:\*\*)?\s*(.*)$",
    re.IGNORECASE,
)
# List markers a weak model stacks after an item's number ("1. 1. - A snail is..."), and the
# bullet that starts a line of content under a task rather than the task's next line.
_STACKED_MARKERS_RE = re.compile(r"^(?:(?:\d{1,3}\s*[.)、](?!\d)|[-*•])\s*)+")
_BULLET_RE = re.compile(r"^\s*[-*•]\s")
_ALPACA_ITEM_RE = re.compile(
    r"^[ \t]*(?:\*\*)?(\d{1,3})\s*[.)、]\s*(?:instruction|指令)\s*(?:\*\*)?\s*[:：]",
    re.IGNORECASE | re.MULTILINE,
)
_ALPACA_FIELD_RE = re.compile(
    r"^[ \t]*(?:\*\*)?(?:\d{1,3}\s*[.)、]\s*)?(instruction|input|output|指令|输入|输出)\s*(?:\*\*)?\s*[:：]",
    re.IGNORECASE | re.MULTILINE,
)
_SEPARATOR_RE = re.compile(r"^[ \t]*#{3,}[ \t]*$", re.MULTILINE)
_EXAMPLE_RE = re.compile(
    r"^[ \t]*(?:\*\*)?(?:example|示例|例子|样例)\s*(\d+)\s*(?:\*\*)?\s*[:：.]?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_INSTANCE_FIELD_RE = re.compile(
    r"^[ \t]*(?:\*\*)?(input|output|class label|label|输入|输出|类别标签|标签)\s*(?:\*\*)?\s*[:：]",
    re.IGNORECASE | re.MULTILINE,
)
_FIELD_KEYS = {
    "instruction": "instruction",
    "指令": "instruction",
    "input": "input",
    "输入": "input",
}
_FIELD_KEYS |= {"output": "output", "输出": "output", "class label": "label", "label": "label"}
_FIELD_KEYS |= {"类别标签": "label", "标签": "label"}


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip("*").strip()


def _clean_input(text: str) -> str:
    text = text.strip()
    return "" if text.lower() in _EMPTY_INPUTS else text


def _spans(matches: list[re.Match[str]], end: int) -> list[tuple[re.Match[str], int]]:
    """Each match with the position where the next one starts (or `end`)."""
    ends = [m.start() for m in matches[1:]] + [end]
    return list(zip(matches, ends[: len(matches)], strict=True))


def _fields(block: str, pattern: re.Pattern[str], implicit: str | None) -> dict[str, str]:
    """Labelled fields of one block; text before the first label goes to `implicit`."""
    matches = list(pattern.finditer(block))
    found: dict[str, str] = {}
    head = block[: matches[0].start()] if matches else block
    if implicit and head.strip():
        found[implicit] = head.strip()
    for match, end in _spans(matches, len(block)):
        found.setdefault(_FIELD_KEYS[match[1].lower()], block[match.end() : end].strip())
    return found


@dataclass
class _Split:
    """An answer cut into its parts: the text before the first item, the numbered items,
    and unnumbered text set apart from the items by a blank line."""

    lead: str
    items: list[tuple[int, str]]
    aside: str = ""
    ends_aside: bool = False  # the answer's last line is aside: its last item was complete


def _split_self_instruct(text: str) -> _Split:
    """Continuation lines join their item; after a blank line, unnumbered text is an aside
    (a chat model's closing remark, a second preamble), never part of a task; so is a
    bulleted line under an item (the model writing content for it)."""
    lead: list[str] = []
    items: list[tuple[int, list[str]]] = []
    aside: list[str] = []
    joining = False
    last = ""
    for line in text.splitlines():
        match = _ITEM_RE.match(line)
        if match:
            items.append((int(match[1]), [match[2]]))
            joining, last = True, "item"
        elif not items:
            lead.append(line)
        elif not line.strip() or _BULLET_RE.match(line):
            # A blank line ends an item; a bulleted line under it is content, not the task.
            joining = False
            if line.strip():
                aside.append(line)
                last = "aside"
        elif joining:
            items[-1][1].append(line)
        else:
            aside.append(line)
            last = "aside"
    return _Split(
        "\n".join(lead).strip(),
        [(n, "\n".join(lines).strip()) for n, lines in items],
        "\n".join(aside).strip(),
        last == "aside",
    )


def _split_alpaca(text: str) -> _Split:
    text = _SEPARATOR_RE.sub("", text)
    starts = list(_ALPACA_ITEM_RE.finditer(text))
    lead = text[: starts[0].start()] if starts else text
    items = [(int(m[1]), text[m.start() : end].strip()) for m, end in _spans(starts, len(text))]
    return _Split(lead.strip(), items)


def _lead_is_task(lead: str, items: list[tuple[int, str]], first_index: int, cued: bool) -> bool:
    """A chat model may continue right after a prompt's "N." cue: the lead is task N unless
    N exists. Without a cue a lead is never a task ("Sure! I'm ready to help.")."""
    if not cued or not lead or lead.rstrip().endswith((":", "：")):
        return False
    return all(number != first_index for number, _ in items)


def parse_tasks(
    text: str,
    finish_reason: str,
    *,
    mode: Mode,
    first_index: int,
    count: int,
    demos: Sequence[str] = (),
    cued: bool = True,
) -> tuple[list[ParsedTask], list[Rejection]]:
    """Read the numbered list a generation call wrote.

    Handles "9.", "9)", "9、", "Task 9:" numbering, a first task written
    without its number after a prompt that ends on the "N." cue (`cued`),
    preambles, and asides (unnumbered text after a blank
    line, such as a chat model's closing remark). When the call stopped on
    length the last task is dropped as truncated, unless an aside followed it.
    A chat model often writes the demo list out again before its own tasks,
    and a weak one repeats a task: a copy of a demo (`echoed_demo`) or of an
    earlier task of the same answer (`repeated`) is dropped and takes no place
    among the `count` tasks kept; tasks past `count` are dropped too
    (`over_count`).
    """
    split = (_split_alpaca if mode == "alpaca" else _split_self_instruct)(text)
    lead, items = split.lead, split.items
    blocks = [block for _, block in items]
    rejections: list[Rejection] = []
    if _lead_is_task(lead, items, first_index, cued):
        blocks.insert(0, lead)
    elif lead:
        rejections.append(Rejection(Stage.GENERATE, "preamble", None, lead, None, lead))
    if split.aside:
        rejections.append(Rejection(Stage.GENERATE, "aside", None, split.aside, None, split.aside))
    # Cut on length inside an aside, the last item was whole.
    if finish_reason == "length" and blocks and not split.ends_aside:
        cut = blocks.pop()
        rejections.append(
            Rejection(Stage.GENERATE, "truncated", "finish_reason=length", cut, None, cut)
        )
    tasks: list[ParsedTask] = []
    echoes = {normalize(d) for d in demos}
    seen: set[str] = set()
    for block in blocks:
        task, problem = _read_task(block, mode)
        key = normalize(task.instruction) if task is not None else ""
        if task is None:
            rejections.append(Rejection(Stage.GENERATE, "malformed", problem, block, None, block))
        elif key in echoes or key in seen:
            reason = "echoed_demo" if key in echoes else "repeated"
            rejections.append(
                Rejection(Stage.GENERATE, reason, None, block, None, task.instruction)
            )
        elif len(tasks) >= count:
            rejections.append(
                Rejection(Stage.GENERATE, "over_count", count, block, None, task.instruction)
            )
        else:
            seen.add(key)
            tasks.append(task)
    return tasks, rejections


def _read_task(block: str, mode: Mode) -> tuple[ParsedTask | None, str | None]:
    if mode == "self_instruct":
        instruction = _STACKED_MARKERS_RE.sub("", _one_line(block))
        return (ParsedTask(instruction, raw=block), None) if instruction else (None, "empty task")
    fields = _fields(block, _ALPACA_FIELD_RE, "instruction")
    instruction = _one_line(fields.get("instruction", ""))
    if not instruction:
        return None, "no instruction"
    if "output" not in fields:
        return None, "no output field"
    task = ParsedTask(instruction, _clean_input(fields.get("input", "")), fields["output"], block)
    return task, None


def parse_instances(
    text: str, finish_reason: str, *, output_first: bool
) -> tuple[list[Instance], list[tuple[str, str]]]:
    """Read "Example N" blocks (input-first: Input/Output; output-first: Class label/Input).

    Returns the instances and (reason, raw block) for blocks that were dropped.
    """
    starts = list(_EXAMPLE_RE.finditer(text))
    blocks = [text[: starts[0].start()] if starts else text]
    blocks += [text[m.end() : end] for m, end in _spans(starts, len(text))]
    blocks = [b for b in blocks if b.strip()]
    dropped: list[tuple[str, str]] = []
    if finish_reason == "length" and blocks:
        dropped.append(("truncated", blocks.pop()))
    instances: list[Instance] = []
    for block in blocks:
        fields = _fields(block, _INSTANCE_FIELD_RE, None)
        answer = fields.get("label") if output_first else fields.get("output")
        if answer is None:
            dropped.append(("malformed_instance", block))
            continue
        instances.append(Instance(_clean_input(fields.get("input", "")), answer.strip(), block))
    return instances, dropped


def parse_yes_no(text: str) -> bool | None:
    """First yes/no answer in the text (English or Chinese); None when there is none."""
    match = re.search(r"(\bno\b|\bnot\b|不是|否|不属于)|(\byes\b|是|属于)", text, re.IGNORECASE)
    if match is None:
        return None
    return match[2] is not None


# --- filters ---------------------------------------------------------------


def check_instruction(
    text: str, *, language: str, config: GeneratorConfig
) -> tuple[str, Any] | None:
    """The first filter a task fails, as (reason, evidence), or None when it passes."""
    words = count_words(text)
    if words < config.min_words:
        return "too_short", words
    if words > config.max_words:
        return "too_long", words
    if not any(ch.isalpha() for ch in text):
        return "no_words", words  # numbers and marks only: a weak model's "1. 2. 3. 4."
    hit = find_phrase(text, config.blacklist.get(language, []))
    if hit is not None:
        return f"blacklist:{hit.lower()}", hit
    if _bad_first_char(text[0]):
        return "bad_prefix", text[0]
    for prefix in config.bad_prefixes.get(language, []):
        if text.lower().startswith(prefix.lower()):
            return "bad_prefix", prefix
    return None


def _bad_first_char(char: str) -> bool:
    """ASCII punctuation (Self-Instruct's rule) or other punctuation and symbols.

    Opening brackets and quotes outside ASCII are allowed: a Chinese task
    often starts with a title or a quote, such as 《红楼梦》 or “春眠不觉晓”.
    """
    if char in string.punctuation:
        return True
    return is_punctuation(char) and unicodedata.category(char) not in ("Ps", "Pi")


def filter_instances(
    instances: Sequence[Instance],
) -> tuple[list[Instance], list[tuple[str, Instance]], bool]:
    """Drop bad instances; the bool is True when one input maps to two outputs (drop the task)."""
    kept: list[Instance] = []
    dropped: list[tuple[str, Instance]] = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        key = (normalize(inst.input), normalize(inst.output))
        if not inst.output.strip():
            dropped.append(("empty_output", inst))
        elif key[0] == key[1]:
            dropped.append(("input_equals_output", inst))
        elif inst.input.rstrip().endswith((":", "：")) or inst.output.rstrip().endswith(
            (":", "：")
        ):
            dropped.append(("incomplete_instance", inst))
        elif key in seen:
            dropped.append(("duplicate_instance", inst))
        else:
            seen.add(key)
            kept.append(inst)
    outputs: dict[str, set[str]] = {}
    for inst in kept:
        if inst.input.strip():
            outputs.setdefault(normalize(inst.input), set()).add(normalize(inst.output))
    return kept, dropped, any(len(v) > 1 for v in outputs.values())


# --- the agent ---------------------------------------------------------------


def _request(text: str, dec: Decoding, stop: tuple[str, ...] = ()) -> ChatRequest:
    return ChatRequest(
        messages=[{"role": "user", "content": text}],
        temperature=dec.temperature,
        top_p=dec.top_p,
        max_tokens=dec.max_tokens,
        presence_penalty=dec.presence_penalty,
        stop=stop,
    )


def call_prompt(
    demos: Sequence[Example | ExampleDraft], prompts: PromptLibrary, config: GeneratorConfig
) -> tuple[str, int]:
    """The prompt one generation call on these demos sends, and its first new task's number."""
    _, request, first = _render_generation(demos, prompts, config)
    return request.messages[-1]["content"], first


def _render_generation(
    demos: Sequence[Example | ExampleDraft], prompts: PromptLibrary, config: GeneratorConfig
) -> tuple[str, ChatRequest, int]:
    # Alpaca's numbered blocks continue the demos' numbering. Self-Instruct's demos are a
    # bulleted list and the new tasks a list of their own from 1: a chat model asked to
    # continue a numbered list writes it out again from 1 (measured on SmolLM2-135M).
    listed = len(demos) if config.mode == "alpaca" else 0
    first, last, stops = numbering(listed, config.call_size())
    no_input = NO_INPUT[prompts.language]
    if config.mode == "alpaca":
        name = "generate_alpaca"
        rows = [
            {"instruction": _one_line(d.instruction), "input": d.input.strip() or no_input}
            | {"output": (d.output or "").strip()}
            for d in demos
        ]
        variables: dict[str, Any] = {"demos": rows, "no_input": no_input}
    else:
        name = "generate_self_instruct"
        variables = {"demos": [_one_line(d.instruction) for d in demos]}
    text = prompts.render(name, first_index=first, last_index=last, **variables)
    return name, _request(text, config.decoding(), stops), first


async def generate(
    demo_sets: Sequence[Sequence[Example | ExampleDraft]],
    model: ChatModel,
    prompts: PromptLibrary,
    config: GeneratorConfig,
    rng: Random,
) -> GenerateOutcome:
    """One generation call per demo set (shuffled with `rng`), all in one batch.

    Pick each set with `config.demo_counts()` (e.g. `store.sample_demos`).
    Returns new tasks as drafts (Alpaca: with input and output), a rejection
    for every task dropped by parsing or a filter, and a `CallRecord` per call
    (a draft names its call's number in `meta[CALL_KEY]`). A task written in
    another language than the prompt's is dropped (`wrong_language`).
    """
    outcome = GenerateOutcome()
    plans = []
    for demos in demo_sets:
        shuffled = list(demos)
        rng.shuffle(shuffled)
        plans.append((shuffled, *_render_generation(shuffled, prompts, config)))
    results = await model.generate([plan[2] for plan in plans]) if plans else []
    version = model_version(model)
    for call, ((demos, name, request, first), result) in enumerate(
        zip(plans, results, strict=True)
    ):
        record = CallRecord(
            call,
            request.messages[0]["content"],
            first,
            prompts.language,
            prompts.template_name(name),
            version,
        )
        outcome.call_records.append(record)
        if not outcome.count(result):
            # No task exists yet to name the failure by: the call's number tells failures apart.
            outcome.fail(result, evidence={"call": call})
            continue
        tasks, problems = parse_tasks(
            result.text,
            result.finish_reason,
            mode=config.mode,
            first_index=first,
            count=config.call_size(),
            demos=[d.instruction for d in demos],
            cued=record.prompt.rstrip().splitlines()[-1].startswith(f"{first}."),
        )
        dropped = [p.reason for p in problems if p.reason not in NOT_TASKS]
        record.tasks = len(tasks) + len(dropped)
        record.drops.update(dropped)
        outcome.rejections.extend(problems)
        if not tasks and not problems:
            outcome.reject("no_tasks", raw_output=result.text)
        provenance = {
            "operation": config.mode,
            "model_version": version,
            "template": record.template,
        }
        demo_ids = [d.id for d in demos if isinstance(d, Example)]
        asked = prompt_ngrams(record.prompt, [_one_line(d.instruction) for d in demos])
        for task in tasks:
            # The text's own language picks the blacklist; a task in another language than
            # the prompt's is dropped: the generator writes in the language it is asked in.
            language = text_language(task.instruction, prompts.language)
            if not written_in(task.instruction, prompts.language):
                failed: tuple[str, Any] | None = ("wrong_language", language)
            elif copied := asked & set(ngrams(tokenize(task.instruction), COPY_NGRAM)):
                failed = ("copied_prompt", join_tokens(list(min(copied))))
            else:
                failed = check_task(task, language=language, config=config)
            if failed is not None:
                outcome.reject(
                    failed[0], text=task.instruction, raw_output=task.raw, evidence=failed[1]
                )
                record.drops[failed[0]] += 1
                continue
            draft = ExampleDraft(
                task.instruction, task.input, task.output, language=language, **provenance
            )
            draft.meta["demo_ids"] = list(demo_ids)
            draft.meta[CALL_KEY] = call
            outcome.drafts.append(draft)
    return outcome


COPY_NGRAM = 6  # a task sharing this many tokens in a row with the prompt's own words copied them


def prompt_ngrams(prompt: str, demos: Sequence[str]) -> set[tuple[str, ...]]:
    """The COPY_NGRAM-grams of a generation prompt's own words (its demos taken out): a weak
    model asked for tasks sometimes hands back the request itself ("Write 8 new tasks of
    your own...") as one, which no novelty check against the pool would catch."""
    for demo in demos:
        prompt = prompt.replace(demo, "\n")
    return set(ngrams(tokenize(prompt), COPY_NGRAM))


def written_in(text: str, language: str) -> bool:
    """Whether a task is in `language`: a Chinese one has Chinese characters, an English one
    is not mostly Chinese. A task may quote the other language ("把这句话翻译成中文：I am
    here", "Translate 你好 into English") and still be the prompt's."""
    if language == "zh":
        return has_cjk(text)
    return language_of(text) != "zh"


def text_language(text: str, fallback: str) -> str:
    """'en' or 'zh' by the text's script; `fallback` when it has neither."""
    detected = language_of(text)
    return fallback if detected == "other" else detected


def check_task(
    task: ParsedTask, *, language: str, config: GeneratorConfig
) -> tuple[str, Any] | None:
    """The instruction filters, plus the instance filters when the task came with an output."""
    failed = check_instruction(task.instruction, language=language, config=config)
    if failed is None and task.output is not None:
        _, bad, _ = filter_instances([Instance(task.input, task.output)])
        failed = (bad[0][0], None) if bad else None
    return failed


async def _classify(
    drafts: Sequence[ExampleDraft],
    model: ChatModel,
    prompts: PromptLibrary,
    config: GeneratorConfig,
    outcome: GenerateOutcome,
) -> list[bool | None]:
    """is_classification per draft; None where the check call failed (the task is rejected)."""
    flags: list[bool | None] = [bool(d.meta.get("is_classification", False)) for d in drafts]
    if not config.classification_check:
        return flags
    ask = [i for i, d in enumerate(drafts) if not isinstance(d.meta.get("is_classification"), bool)]
    dec = Decoding(temperature=0.0, max_tokens=config.classify_max_tokens)
    requests = [
        _request(prompts.render("is_classification", instruction=drafts[i].instruction), dec)
        for i in ask
    ]
    results = await model.generate(requests) if requests else []
    for i, result in zip(ask, results, strict=True):
        if not outcome.count(result):
            outcome.fail(result, drafts[i])
            flags[i] = None
            continue
        answer = parse_yes_no(result.text)
        if answer is None:
            # Routing only: an unreadable answer falls back to input-first, counted.
            outcome.counters["unparsed_classification"] += 1
        flags[i] = bool(answer)
    return flags


async def generate_instances(
    drafts: Sequence[ExampleDraft],
    model: ChatModel,
    prompts: PromptLibrary,
    config: GeneratorConfig,
    rng: Random,
) -> GenerateOutcome:
    """Write instances for instruction-only drafts: classification output-first, others input-first.

    Each kept instance (up to `instances_kept`, sampled with `rng`) becomes a
    draft with that input and output; all valid instances stay in
    `meta["instances"]`. A task whose one input got two outputs is dropped.
    """
    outcome = GenerateOutcome()
    flags = await _classify(drafts, model, prompts, config, outcome)
    todo = [(d, flag) for d, flag in zip(drafts, flags, strict=True) if flag is not None]
    lang = prompts.language
    stops = instance_stops(config.instances_per_call, lang)
    requests = [
        _request(
            prompts.render(
                _instance_template(flag),
                instruction=draft.instruction,
                max_examples=config.instances_per_call,
                example_label=EXAMPLE_LABEL[lang],
                none_marker=NONE_INPUT[lang],
            ),
            config.instance_decoding,
            stops,
        )
        for draft, flag in todo
    ]
    results = await model.generate(requests) if requests else []
    for (draft, flag), result in zip(todo, results, strict=True):
        if not outcome.count(result):
            outcome.fail(result, draft)
            continue
        instances, dropped = parse_instances(result.text, result.finish_reason, output_first=flag)
        for reason, raw in dropped:
            outcome.reject(reason, draft, raw_output=raw)
        meta = {
            "is_classification": flag,
            "instance_template": prompts.template_name(_instance_template(flag)),
        }
        _keep_instances(outcome, draft, instances, meta, result.text, config.instances_kept, rng)
    return outcome


def _instance_template(output_first: bool) -> str:
    return "instances_output_first" if output_first else "instances_input_first"


def _keep_instances(
    outcome: GenerateOutcome,
    draft: ExampleDraft,
    instances: list[Instance],
    meta: dict[str, Any],
    raw: str,
    n_kept: int,
    rng: Random,
) -> None:
    kept, bad, ambiguous = filter_instances(instances)
    for reason, inst in bad:
        evidence = {"input": inst.input, "output": inst.output}
        outcome.reject(reason, draft, raw_output=inst.raw, evidence=evidence)
    if ambiguous:
        outcome.reject(
            "ambiguous_input", draft, raw_output=raw, evidence="one input maps to two outputs"
        )
        return
    if not kept:
        outcome.reject("no_valid_instances", draft, raw_output=raw)
        return
    meta = {
        **draft.meta,
        **meta,
        "instances": [{"input": i.input, "output": i.output} for i in kept],
    }
    for inst in rng.sample(kept, min(n_kept, len(kept))):
        outcome.drafts.append(
            dataclasses.replace(draft, input=inst.input, output=inst.output, meta=dict(meta))
        )
