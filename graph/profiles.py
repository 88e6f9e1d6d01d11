"""Named config profiles: settings that belong together, each with the reason it is set.

A profile is data: a list of `Setting(key, value, why)`, one definition, read by every
caller. `evoinstruct init --model smollm2` applies the weak-model profile to the project's
own evoinstruct.toml (each key it sets carries its reason as a comment there, so the file
says why it differs from the defaults); `evoinstruct demo --real` and `bench/evolution.py`
apply the same profile, with only their own sizes on top (`RealSettings`).

To extend a profile, add a `Setting` to its list: its key is a dotted config key (checked
against the config models by the tests), its value what TOML would hold, its `why` one or
two sentences for the comment above the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evoinstruct.graph.config import RunConfig


@dataclass(frozen=True)
class Setting:
    """One config key a profile sets, and why."""

    key: str  # dotted, as `--set` takes it: "responder.max_tokens"
    value: Any
    why: str

    def override(self) -> str:
        """As a `--set section.key=value` override (a JSON literal is a valid TOML one)."""
        return f"{self.key}={json.dumps(self.value, ensure_ascii=False)}"


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str  # one paragraph, for the config file's header and the README
    settings: tuple[Setting, ...]

    def overrides(self, *, replace: Mapping[str, Any] | None = None) -> list[str]:
        """Every setting as a `--set` override; `replace` gives some keys other values (the
        demo and the bench size a run differently, and say so there)."""
        replace = dict(replace or {})
        unknown = set(replace) - {s.key for s in self.settings}
        if unknown:
            raise KeyError(f"not settings of profile {self.name}: {', '.join(sorted(unknown))}")
        return [
            Setting(s.key, replace[s.key], s.why).override() if s.key in replace else s.override()
            for s in self.settings
        ]

    def notes(self) -> dict[str, str]:
        """Dotted key -> the comment the config file shows above it."""
        return {s.key: f"{self.name} profile: {s.why}" for s in self.settings}

    def apply(self, config: RunConfig) -> RunConfig:
        """`config` with the profile's settings, validated as a whole."""
        from evoinstruct.graph.config import with_overrides

        return with_overrides(config, self.overrides())


def _settings(*rows: tuple[str, Any, str]) -> tuple[Setting, ...]:
    return tuple(Setting(key, value, why) for key, value, why in rows)


# A model of about a hundred million parameters (SmolLM2-135M-Instruct) on a CPU. What it can
# do: answer short English instructions, mostly; what it cannot: judge, rewrite, follow a
# format by chance, or write good Chinese. So the checks are code, not a model.
WEAK_MODEL = Profile(
    name="weak-model",
    summary=(
        "A small model (about 100M parameters) as teacher and student on a CPU: verifiable "
        "constraints checked in code instead of an LLM judge, rejection sampling with repair, "
        "short answers, few model calls a round, a LoRA version every round that the held-out "
        "suite gate must promote."
    ),
    settings=_settings(
        (
            "loop.generate_calls",
            8,
            "eight Self-Instruct calls a round: each asks for new tasks on 4 demos and keeps "
            "about 1.5 on the base model (measured), so the pool also grows by model-written "
            "tasks, which the student learns to write (trainer.generation_share)",
        ),
        ("generator.demos_human", 3, "few demos: a weak model copies them into its list"),
        ("generator.demos_machine", 1, "one machine-written demo beside three human ones"),
        (
            "generator.self_instruct_decoding.temperature",
            0.7,
            "with nucleus 0.9: at 1.0 a 135M model rambles, at 0.5 it repeats",
        ),
        ("generator.self_instruct_decoding.top_p", 0.9, "nucleus sampling for new tasks"),
        (
            "generator.generate_instances",
            False,
            "a 135M model cannot write inputs and outputs (2 of 18 novel tasks kept); the "
            "responder answers its tasks as it answers the others",
        ),
        (
            "loop.evolve_per_round",
            16,
            "the round's data comes from evolving accepted examples with verifiable constraints",
        ),
        (
            "loop.rewrite",
            False,
            "a 135M model copies the rewrite template's words into its rewrites; none survive",
        ),
        (
            "evolver.operations",
            ["add_verifiable", "add_constraints"],
            "half the children get constraints attached in code (no model call); in-depth "
            "rewrites by a weak model mostly fail Evol-Instruct's elimination rules",
        ),
        (
            "evolver.equality_check",
            False,
            "the equality check asks the model to judge; a weak model's verdicts are noise",
        ),
        ("evolver.max_tokens", 320, "an evolved instruction is short; longer output is rambling"),
        ("evolver.verifiable.max_count", 3, "at most three registry constraints per child"),
        (
            "generator.self_instruct_decoding.max_tokens",
            300,
            "enough for a few numbered tasks; a weak model loops past that",
        ),
        ("generator.instance_decoding.max_tokens", 200, "inputs and outputs of short tasks"),
        (
            "responder.verifiable_samples",
            4,
            "rejection sampling: four answers per constrained task, keep one that passes",
        ),
        (
            "responder.verifiable_temperature",
            0.8,
            "samples must differ for rejection sampling to find a passing one",
        ),
        (
            "responder.on_truncated",
            "reject",
            "an answer cut at the token limit teaches the student to ramble",
        ),
        (
            "responder.repair",
            True,
            "a 135M model never writes all-lowercase or quotes an answer by chance; repaired, "
            "re-verified answers are what teach it those formats",
        ),
        (
            "responder.max_tokens",
            320,
            "answers that end well inside the suite's limit are what the student should learn",
        ),
        (
            "responder.pick",
            "shortest",
            "keep the shortest passing answer, against the truncation that fails most suite "
            "answers (the measured run promoted v1 at +10.2 points with it)",
        ),
        (
            "critic.judge.enabled",
            False,
            "a 135M judge parses as a score about one time in ten; verification needs no judge",
        ),
        ("critic.ifd.enabled", False, "IFD needs a student worth asking; minutes of CPU a round"),
        (
            "selector.steps",
            ["exact_dedup", "near_dedup", "novelty", "thresholds"],
            "no embedding diversity step: the weak model's hidden states are a poor embedder",
        ),
        ("trainer.train_every", 1, "a LoRA version every round"),
        (
            "trainer.train_min_new",
            10,
            "a version waits for ten new verified examples (fewer is many epochs of the same)",
        ),
        ("trainer.max_steps", 30, "thirty LoRA steps: a few minutes on a CPU"),
        (
            "trainer.batch_size",
            2,
            "micro-batches of two: a stop waits for the one in flight, seconds on a CPU",
        ),
        ("trainer.grad_accumulation", 4, "an effective batch of 8"),
        ("trainer.learning_rate", 0.0005, "LoRA on a small model learns at a higher rate"),
        ("trainer.max_length", 384, "instruction and a short answer; longer examples are cut"),
        ("trainer.logging_steps", 1, "the live view shows the loss of every step"),
        (
            "trainer.save_steps",
            10,
            "a checkpoint every ten steps, besides the one a stop request writes",
        ),
        (
            "trainer.gate.metric",
            "verifiable",
            "promotion on the held-out verifiable suite, not on held-out loss",
        ),
        ("trainer.suite.languages", ["en"], "the weak model writes poor Chinese"),
        (
            "trainer.suite.tasks_per_language",
            720,
            "all 720 packaged English tasks: the gate decides on the held-out parts (587 "
            "prompts), enough to see a 5-point gain 80% of the time; fewer make a gate that "
            "refuses real gains",
        ),
        (
            "trainer.suite.max_tokens",
            160,
            "short answers; most of a weak model's failures are answers cut at this limit",
        ),
        ("trainer.suite.batch_size", 16, "prompts per generate call, as the models' batch"),
    ),
)

PROFILES: dict[str, Profile] = {WEAK_MODEL.name: WEAK_MODEL}
