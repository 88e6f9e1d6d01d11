"""Training examples of the generation task: the student learns to write instructions that survive.

A student that only learns to answer never gets better at writing new tasks, so promoting
it as the generator changes nothing (METHODS 5.3). Humpback's self-curation closes that
half of the loop: the model's own outputs that passed curation become its training data.
Here every Self-Instruct call the generate step made is on record with the prompt it
sent (`store.generation_calls`); the tasks of that call the loop later accepted — past
the generator's filters, ROUGE-L novelty, the critic and the selector — written as the
numbered list the parser reads, are the answer to that very prompt. What the student
learns is the prompt it will be served as the generator, and the answer is what the
filters let through, never what they dropped.

An accepted task counts only where it may train at all: not held out, not overlapping the
held-out suite, accepted now (the trainer's pool split decides). Alpaca-mode calls, whose
answers carry inputs and outputs too, are not used.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from evoinstruct.agents.generator import task_list
from evoinstruct.store.generation_calls import GenerationCall
from evoinstruct.store.records import Example

SOURCE = "generation"  # the source of these in-memory examples; never a pool row
SELF_INSTRUCT_TEMPLATE = "generate_self_instruct.jinja2"


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
                prompt=call.prompt,
                response=task_list([e.instruction for e in targets], call.first_index),
                language=call.language,
                targets=tuple(e.id for e in targets),
            )
        )
    return out


def split_seen(
    examples: list[GenerationExample], seen: Collection[str]
) -> tuple[list[GenerationExample], list[GenerationExample]]:
    """(fresh, seen): calls the starting version's lineage has not trained on come first."""
    fresh = [g for g in examples if g.id not in seen]
    return fresh, [g for g in examples if g.id in seen]
