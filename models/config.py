"""Model endpoints and roles: which model each agent talks to."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evoinstruct.models.ct2_engine import ComputeType

ROLES = ("generator", "evolver", "responder", "critic", "rewriter", "tagger", "scorer", "embedder")


# Eight attempts: a server failing half of all requests still passes the probe
# with probability 1 - 0.5**8 > 99.6%; with pauses of at most 1 s a dead one is
# reported within about 6 s.
PROBE_RETRIES = 7
PROBE_TIMEOUT_S = 30.0


class ModelConfig(BaseModel):
    """One model: an OpenAI-compatible server, an in-process transformers model, or vLLM."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Literal["openai", "transformers", "vllm"] = "openai"
    model: str | None = Field(None, description="Model name sent to the server (openai, vllm).")
    base_url: str | None = Field(None, description="One OpenAI-compatible endpoint.")
    base_urls: list[str] = Field(
        default_factory=list, description="Several endpoints serving the same model."
    )
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key."
    )
    path: str | None = Field(
        None, description="Local model directory or hub id (transformers, vllm)."
    )
    adapter: str | None = Field(None, description="A peft adapter directory to load on start.")
    max_concurrency: int = Field(16, ge=1, description="Requests in flight per endpoint.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(4, ge=0, description="Retries of a failed call (tenacity).")
    backoff_initial_s: float = Field(
        0.5, gt=0, description="First pause before a retry; it doubles (with jitter) each time."
    )
    backoff_max_s: float = Field(30.0, gt=0, description="Longest pause between two retries.")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    device: str = Field("auto", description="auto | cpu | cuda | mps (transformers).")
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16 (transformers).")
    batch_size: int = Field(8, ge=1, description="Generation batch size (transformers).")
    engine: Literal["torch", "ctranslate2"] = Field(
        "torch",
        description="What generates for a transformers model: torch (transformers' generate) or "
        "ctranslate2 (a CPU engine, the `real` extra; the folder and each adapter version are "
        "converted once and cached; loss, embeddings and option probabilities stay on torch).",
    )
    engine_compute_type: ComputeType = Field(
        "float32",
        description="ctranslate2's compute type: float32 gives transformers' float32 greedy "
        "answers; int8 is faster and its answers differ.",
    )
    max_lora_rank: int = Field(64, ge=1, description="vLLM --max-lora-rank.")
    cache: bool = Field(True, description="Keep answers in the store's response cache.")
    seed: int = 0
    price_per_mtok_in: float | None = Field(
        None, ge=0, description="Price of a million prompt tokens, for cost estimates."
    )
    price_per_mtok_out: float | None = Field(
        None, ge=0, description="Price of a million completion tokens, for cost estimates."
    )

    @model_validator(mode="after")
    def _check_backend_fields(self) -> ModelConfig:
        if self.backend == "openai":
            if not (self.base_url or self.base_urls):
                raise ValueError("an openai backend needs base_url or base_urls")
            if not self.model:
                raise ValueError("an openai backend needs model")
        elif not (self.path or self.model):
            raise ValueError(f"a {self.backend} backend needs path")
        return self

    @property
    def endpoints(self) -> list[str]:
        return list(self.base_urls) or ([self.base_url] if self.base_url else [])

    def for_probe(self) -> ModelConfig:
        """The settings of a reachability probe (`models check`, the check before a round).

        A short timeout, so a hung server is reported in seconds; a few retries of transient
        errors (429, 5xx, dropped connections), so a flaky server does not end a daemon that
        is meant to run for weeks, while a dead one still fails after a bounded wait.
        """
        return self.model_copy(
            update={
                "max_retries": PROBE_RETRIES,
                "backoff_initial_s": min(self.backoff_initial_s, 0.25),
                "backoff_max_s": min(self.backoff_max_s, 1.0),
                "timeout_s": min(self.timeout_s, PROBE_TIMEOUT_S),
                "cache": False,
            }
        )


class RolesConfig(BaseModel):
    """Which configured model serves each role. The generator follows the promoted student."""

    model_config = ConfigDict(extra="forbid")

    generator: str = "teacher"
    evolver: str = "teacher"
    responder: str = "teacher"
    critic: str = "teacher"
    rewriter: str = "teacher"
    tagger: str = "teacher"
    scorer: str | None = Field(
        None, description="Deita scorer model; unset falls back to the judge."
    )
    embedder: str | None = Field(
        None, description="Embedding model; unset uses the student's hidden states or n-grams."
    )
    follow_student: bool = Field(
        True, description="The roles in student_serves switch to the promoted student."
    )
    student_serves: list[Literal["generator", "evolver", "responder"]] = Field(
        ["generator"],
        description="Roles the promoted student takes over; add responder for iterated "
        "rejection sampling (the student answers, verification keeps what passes).",
    )
    student: str = Field(
        "student",
        description="The configured model that serves promoted student versions (gets their adapters).",
    )
    weak: str | None = Field(
        None,
        description="The configured model that supervises the student in the weak-to-strong experiment ([weak_to_strong]): its answers, unchecked, train the strong student.",
    )
