"""Training examples of the generation task: the student learns to write instructions that survive.

A student that only learns to answer never gets better at writing new tasks, so promoting
it as the generator changes nothing (METHODS 5.3). Humpback's self-curation closes that
half of the loop: the model's own outputs that passed curation become its training data.
Here every Self-Instruct call the generate step made is on record with the prompt it
sent (`store.generation_calls`); the tasks of that call the loop later accepted — past
the generator's filters, ROUGE-L novelty, the critic and the selector — written as the
numbered list the parser reads, are the answer to that prompt — asking for as many tasks
as the answer lists. The call asked for eight and the loop kept two on average: trained on
the prompt as sent, the student learnt to stop after one or two tasks and wrote fewer
accepted tasks per call than the base model (measured, `bench/generator_training.py`), so
the prompt is rendered again from its template with the call's own demos and the count of
the answer. What the student learns is the prompt it will be served as the generator, and
the answer is what the filters let through, never what they dropped.

An accepted task counts only where it may train at all: not held out, not overlapping the
held-out suite, accepted now (the trainer's pool split decides). Alpaca-mode calls, whose
answers carry inputs and outputs too, are not used.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cache

from evoinstruct.agents.generator import task_list
from evoinstruct.prompts.library import LANGUAGES, PromptLibrary
from evoinstruct.store.generation_calls import GenerationCall
from evoinstruct.store.records import Example

SOURCE = "generation"  # the source of these in-memory examples; never a pool row
SELF_INSTRUCT = "generate_self_instruct"
SELF_INSTRUCT_TEMPLATE = f"{SELF_INSTRUCT}.jinja2"
_PROBE = "\x00demo\x00"  # a demo no prompt holds: where the template puts demos
LONGEST_LIST = 64  # the most tasks a call may have asked for, when its prompt is read back


@dataclass(frozen=True)
class GenerationExample:
    """One call's prompt and the list of its accepted tasks, as a training example."""

    call: str  # the call's id, "round:call"
    prompt: str
    response: str
    language: str | None
    targets: tuple[str, ...]  # the accepted examples whose instructions make the response

    @property
    def id(self) -> str:
        return f"{SOURCE}:{self.call}"

    def as_example(self) -> Example:
        """The training example: the call's prompt as the user turn, the list as the answer."""
        return Example(
            id=self.id,
            instruction=self.prompt,
            output=self.response,
            source=SOURCE,
            status="accepted",
            language=self.language,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "call": self.call,
            "prompt": self.prompt,
            "response": self.response,
            "language": self.language,
            "targets": list(self.targets),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> GenerationExample:
        targets = data.get("targets") or []
        return cls(
            call=str(data["call"]),
            prompt=str(data["prompt"]),
            response=str(data["response"]),
            language=data.get("language") if isinstance(data.get("language"), str) else None,  # type: ignore[arg-type]
            targets=tuple(str(t) for t in targets) if isinstance(targets, list) else (),
        )


def generation_examples(
    calls: Iterable[GenerationCall],
    trainable: dict[str, Example],
    untrainable: Iterable[Example] = (),
) -> list[GenerationExample]:
    """One example per Self-Instruct call with at least one task in `trainable` (id -> example).

    The answer lists those tasks in the order the call wrote them, numbered from the
    call's first task number, as the prompt asked. A call whose prompt shows an
    `untrainable` example as a demo (a held-out or suite-overlapping one, or one of the
    held-out-loss share) makes no example: the student would train on its text.
    """
    shown = [" ".join(e.instruction.split()) for e in untrainable if e.instruction.strip()]
    out = []
    for call in calls:
        if not (call.template or "").endswith(SELF_INSTRUCT_TEMPLATE):
            continue
        prompt = " ".join(call.prompt.split())
        if any(text in prompt for text in shown):
            continue
        targets = [trainable[i] for i in call.candidates if i in trainable]
        targets = [e for e in targets if e.source == "generated"]
        if not targets:
            continue
        out.append(
            GenerationExample(
                call=call.id,
                prompt=asking_for(call, len(targets)),
                response=task_list([e.instruction for e in targets], call.first_index),
                language=call.language,
                targets=tuple(e.id for e in targets),
            )
        )
    return out


def asking_for(call: GenerationCall, count: int) -> str:
    """The call's prompt as its template renders it asking for `count` tasks, with the demos
    it showed; the prompt as sent when it is not the packaged template's (a project's own
    prompts, an older template), which the template cannot read back."""
    demos = call_demos(call)
    if demos is None:
        return call.prompt
    library = _library(call.language or "en")
    first = call.first_index
    return library.render(
        SELF_INSTRUCT, demos=demos, first_index=first, last_index=first + count - 1
    )


@cache
def _library(language: str) -> PromptLibrary:
    return PromptLibrary(language)  # one per language: a pool holds thousands of calls


def call_demos(call: GenerationCall) -> list[str] | None:
    """The demos a Self-Instruct call showed, read back from its prompt with the template
    that wrote it; None unless rendering them again gives the prompt exactly."""
    if (call.language or "en") not in LANGUAGES:
        return None
    library = _library(call.language or "en")
    first = call.first_index

    def render(demos: list[str], last: int) -> str:
        return library.render(SELF_INSTRUCT, demos=demos, first_index=first, last_index=last)

    probe = render([_PROBE], first).split("\n")
    at = next(i for i, line in enumerate(probe) if _PROBE in line)
    head, (before, after) = probe[:at], probe[at].split(_PROBE)
    lines = call.prompt.split("\n")
    if lines[: len(head)] != head:
        return None
    demos = []
    for line in lines[len(head) :]:
        if not (line.startswith(before) and line.endswith(after)) or len(line) <= len(before):
            break
        demos.append(line[len(before) : len(line) - len(after)])
    for last in range(first, first + LONGEST_LIST):
        if render(demos, last) == call.prompt:
            return demos
    return None


def split_seen(
    examples: list[GenerationExample], seen: Collection[str]
) -> tuple[list[GenerationExample], list[GenerationExample]]:
    """(fresh, seen): calls the starting version's lineage has not trained on come first."""
    fresh = [g for g in examples if g.id not in seen]
    return fresh, [g for g in examples if g.id in seen]
