"""The trainer's configuration: method, hyper-parameters, training mix, evaluation gate, schedule.

Defaults follow METHODS.md section 4 (LoRA r 16, alpha 32, dropout 0.05 on
all linear layers). The graph composes `TrainerConfig` into the run config
as its `[trainer]` table; the resolved config is saved beside every version.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evoinstruct.agents.constraints.split import HeldOutConfig

Method = Literal["lora", "full", "prefix", "prompt", "ia3", "qlora"]
METHODS: tuple[str, ...] = ("lora", "full", "prefix", "prompt", "ia3", "qlora")
PROMPT_LEARNING: tuple[str, ...] = ("prefix", "prompt")

# A learning rate that works for each method when none is given: adapters with
# few parameters need larger steps than full fine-tuning.
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "lora": 2e-4,
    "qlora": 2e-4,
    "full": 2e-5,
    "ia3": 3e-3,
    "prefix": 1e-2,
    "prompt": 3e-2,
}


GateMetric = Literal["auto", "verifiable", "loss"]
SuiteMetric = Literal["prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"]
# The suite's parts: packaged tasks in training's types and phrasings, in suite-only
# phrasings of trained types, or with a held-out type; rows of IFEval-format files.
Part = Literal["in_distribution", "held_out_phrasing", "held_out_type", "ifeval"]
PART_NAMES: tuple[str, ...] = ("in_distribution", "held_out_phrasing", "held_out_type", "ifeval")
TASK_PARTS: tuple[str, ...] = PART_NAMES[:3]
IFEVAL_PART = PART_NAMES[3]
HELD_OUT_PARTS: tuple[str, ...] = PART_NAMES[1:]


def part_order(part: str) -> int:
    """Parts in reading order: in-distribution, held-out phrasing, held-out type, ifeval."""
    return PART_NAMES.index(part) if part in PART_NAMES else len(PART_NAMES)


class GateConfig(BaseModel):
    """When a newly trained student is promoted to be the generator.

    With the verifiable metric the candidate and the incumbent (the active version,
    or the untuned base student before the first promotion) answer the same held-out
    suite; the gate compares them on the suite's held-out `parts` only, and promotes
    only when the lower end of the two-sided `confidence` interval of the paired
    difference (candidate - incumbent, in accuracy points) is above `min_margin`
    (test = "bootstrap"), or when the difference is above `min_margin` and McNemar's
    exact one-sided p-value is below 1 - `confidence` (test = "mcnemar", prompt-level
    metrics only). A version that gains only in-distribution is refused. Every verdict
    states the gate's power: the smallest gain it detects 80% of the time. Held-out
    loss is then a diagnostic recorded beside the verdict.
    """

    model_config = ConfigDict(extra="forbid")

    metric: GateMetric = Field(
        "auto",
        description=(
            "verifiable: the paired test on the held-out suite decides (the suite is built on "
            "first use); loss: held-out loss on the pool decides (a diagnostic, easily won); "
            "auto: verifiable once the project has a suite (`evoinstruct eval` builds it), else loss."
        ),
    )
    suite_metric: SuiteMetric = Field(
        "prompt_strict",
        description="The suite accuracy the gate compares: prompt- or instruction-level, strict or loose.",
    )
    test: Literal["bootstrap", "mcnemar"] = Field(
        "bootstrap",
        description="bootstrap: paired bootstrap interval of the difference; mcnemar: exact test on prompt-level pass/fail pairs.",
    )
    min_margin: float = Field(
        0.0,
        ge=-100,
        le=100,
        description="Accuracy points the candidate must beat the incumbent by (the interval's lower end must be above it).",
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Confidence level of the interval (or 1 - the p-value cut)."
    )
    parts: list[Part] = Field(
        default_factory=lambda: list(HELD_OUT_PARTS),
        min_length=1,
        description=(
            "Suite parts the gate decides on, pooled: held_out_phrasing, held_out_type and "
            "ifeval (rows of IFEval-format files) by default; in_distribution is reported, "
            "not gated (a suite without these parts is gated on all its prompts)."
        ),
    )
    assumed_discordance: float = Field(
        0.15,
        gt=0,
        le=1,
        description=(
            "Share of prompts two versions answer differently (one passes, one fails), "
            "assumed for the power `eval` states before two versions are compared; the "
            "gate's verdict uses the observed share."
        ),
    )
    teacher_reference: bool = Field(
        True,
        description="Score the teacher on the suite once per suite and show it beside the verdict.",
    )
    min_loss_improvement: float = Field(
        0.0,
        ge=0,
        description="metric = loss: held-out loss must drop below the current generator's by more than this (nats/token).",
    )
    min_winning_score: float | None = Field(
        None,
        ge=0,
        le=2,
        description="If set, the pairwise judge's winning score ((wins-losses)/n + 1) must reach this.",
    )
    require_heldout: bool = Field(
        True,
        description="metric = loss: refuse promotion when there are no held-out examples to measure the loss on.",
    )

    @model_validator(mode="after")
    def _check(self) -> GateConfig:
        if self.test == "mcnemar" and not self.suite_metric.startswith("prompt_"):
            raise ValueError(
                "test = 'mcnemar' compares pass/fail pairs: use a prompt-level suite_metric"
            )
        return self


class SuiteConfig(BaseModel):
    """The held-out verifiable suite: task prompts the pool never trains on, with constraints.

    Built once per project from the packaged bilingual task list (prompts/eval_tasks.jsonl),
    minus any task sharing an n-gram with the pool. Each task is drawn into one part
    (`parts`): in_distribution (training's types and phrasings), held_out_phrasing
    (trained types, described only in suite-only phrasings) or held_out_type (at least one
    type of `held_out.types`), and given 1-3 constraints, all drawn with a generator seeded
    by the task's id. `evoinstruct eval --ifeval FILE` adds IFEval-format rows (part
    ifeval). Changing these settings later does not rebuild it (`eval --rebuild` does).
    """

    model_config = ConfigDict(extra="forbid")

    languages: list[Literal["en", "zh"]] = Field(
        default_factory=lambda: ["en", "zh"],
        min_length=1,
        description="Languages of the packaged task prompts the suite takes.",
    )
    tasks_per_language: int | None = Field(
        None,
        ge=1,
        description="Packaged tasks per language (720 English, 360 Chinese); unset takes all.",
    )
    min_constraints: int = Field(1, ge=1, le=3, description="Fewest constraints per task.")
    max_constraints: int = Field(3, ge=1, le=3, description="Most constraints per task.")
    seed: int = Field(
        0, description="Seed of the constraint draw (per task, so tasks are independent)."
    )
    ngram: int = Field(
        8,
        ge=3,
        description="Tokens per n-gram when a task prompt is checked against the pool and kept out of training.",
    )
    ifeval_ngram: int = Field(
        13,
        ge=3,
        description="Tokens per n-gram for IFEval-file prompts (longer, with boilerplate).",
    )
    max_tokens: int = Field(
        512, ge=1, description="Answer length; answers are greedy (temperature 0)."
    )
    batch_size: int = Field(32, ge=1, description="Requests handed to the model per generate call.")
    bootstrap_samples: int = Field(
        2000, ge=100, description="Bootstrap resamples for every interval."
    )
    parts: dict[str, float] = Field(
        default_factory=lambda: {
            "in_distribution": 0.2,
            "held_out_phrasing": 0.4,
            "held_out_type": 0.4,
        },
        description=(
            "Share of the packaged tasks drawn into each part (normalised; a part a "
            "language cannot fill is left out). The gate decides on the held-out parts, so "
            "they get most tasks; in_distribution is the diagnostic beside them."
        ),
    )
    held_out: HeldOutConfig = Field(
        default_factory=HeldOutConfig,
        description="What no training example carries: held-out types, suite-only phrasings.",
    )

    @field_validator("parts")
    @classmethod
    def _known_parts(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TASK_PARTS))
        if unknown:
            raise ValueError(f"unknown part(s) {unknown}; the task parts are {list(TASK_PARTS)}")
        if any(share < 0 for share in value.values()) or not any(value.values()):
            raise ValueError("part shares must be >= 0 and not all 0")
        return value

    @model_validator(mode="after")
    def _check(self) -> SuiteConfig:
        if self.min_constraints > self.max_constraints:
            raise ValueError("min_constraints must not exceed max_constraints")
        return self


class PairwiseConfig(BaseModel):
    """The optional pairwise judge comparison of the new student against the current generator."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Run the pairwise judge comparison before promoting.")
    num_prompts: int = Field(
        32, ge=1, description="Size of the fixed prompt set (held-out instructions, stable order)."
    )
    max_tokens: int = Field(512, ge=1, description="Answer length for both models.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature for the answers.")
    verdict_key: str = Field(
        "Winner", description="The key the judge writes its verdict after; the parser reads it."
    )
    tie_label: str = Field("tie", description="The verdict word for a tie.")


class LaunchConfig(BaseModel):
    """How the daemon starts the trainer: one plain process, or several under `accelerate launch`.

    With the defaults it runs `python -m evoinstruct.trainer train`. More processes, or an
    accelerate config file (FSDP, DeepSpeed, several machines: see examples/accelerate/),
    run the same entry under `accelerate launch`; the main process alone plans, writes and
    registers the version and reports progress. Every process trains on batch_size x
    grad_accumulation examples per optimizer step, so N processes take N times as many.
    """

    model_config = ConfigDict(extra="forbid")

    processes: int | None = Field(
        None,
        ge=1,
        description=(
            "Training processes in all (accelerate's --num_processes); unset: 1, or the "
            "config file's num_processes. Without a config file, more than 1 means plain "
            "data parallelism on this machine (one process per GPU; with device = 'cpu', "
            "CPU processes over gloo)."
        ),
    )
    config_file: str | None = Field(
        None,
        description=(
            "An accelerate config file (FSDP, DeepSpeed, several machines); a relative "
            "path is taken from the project directory."
        ),
    )
    port: int = Field(
        0,
        ge=0,
        le=65535,
        description=(
            "Port the processes meet on; 0 picks a free port on this machine at each launch. "
            "Runs across several machines need a fixed one."
        ),
    )

    @property
    def launched(self) -> bool:
        """Whether training goes through `accelerate launch` rather than one plain process."""
        return self.config_file is not None or (self.processes or 1) > 1


Objective = Literal["sft", "sft+dpo"]
# Methods whose trained weights TRL's DPOTrainer can copy into a frozen reference: a
# second adapter beside the trained one, or (full) a second model.
DPO_METHODS: tuple[str, ...] = ("lora", "qlora", "ia3", "full")


class PreferenceConfig(BaseModel):
    """The DPO stage after SFT (objective = "sft+dpo"): TRL's DPOTrainer on verified pairs.

    The pairs are those of the version's own training examples (METHODS 4). The reference is the SFT model the stage starts from (TRL copies the SFT adapter into a
    frozen second adapter); an SFT term on the chosen answers keeps the verified answers the
    SFT stage learned likely, so the model does not drift from them (RPO).
    """

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(
        0.1, gt=0, description="DPO's beta: how far the model may move from the SFT reference."
    )
    sft_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the SFT (NLL) term on the chosen answers beside the DPO loss (TRL loss types sigmoid + sft); 0 is plain DPO.",
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate of the stage; unset: a tenth of the SFT one."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs.")
    max_steps: int = Field(-1, description="Optimizer steps; overrides epochs when > 0.")
    batch_size: int | None = Field(
        None, ge=1, description="Pairs per device step; unset: trainer.batch_size."
    )
    grad_accumulation: int | None = Field(
        None, ge=1, description="Steps accumulated per update; unset: trainer.grad_accumulation."
    )
    pairs_per_prompt: int = Field(
        2,
        ge=1,
        description="Pairs taken per training example, the kept answer as chosen first, then the rejected answers that fail fewest constraints.",
    )
    min_pairs: int = Field(
        8,
        ge=1,
        description="With fewer pairs in the version's training examples the stage is skipped: the version is the SFT model, and its metrics say why.",
    )

    def resolved_learning_rate(self, sft_rate: float) -> float:
        return self.learning_rate or sft_rate / 10


class TrainerConfig(BaseModel):
    """Everything one training run of the student needs; saved with every version."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    base_model: str | None = Field(
        None, description="Local directory or hub id of the student's base model."
    )
    method: Method = Field("lora", description="lora | full | prefix | prompt | ia3 | qlora.")
    # LoRA / QLoRA
    lora_r: int = Field(16, ge=1, description="LoRA rank (must be <= vLLM's --max-lora-rank).")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Modules LoRA/IA3 adapt; 'all-linear' is every linear layer but the output head.",
    )
    # prefix / prompt tuning
    num_virtual_tokens: int = Field(
        20, ge=1, description="Virtual tokens of prefix and prompt tuning."
    )
    init_from: Literal["active", "base"] = Field(
        "active",
        description=(
            "active: continue from the promoted version's weights (same adapter shape) and "
            "replay part of what it saw; base: start every version afresh on all accepted data."
        ),
    )
    # optimisation
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; unset picks the method's usual one."
    )
    epochs: float = Field(3.0, gt=0, description="Passes over the training mix.")
    max_steps: int = Field(-1, description="Optimizer steps; overrides epochs when > 0.")
    objective: Objective = Field(
        "sft",
        description="sft: supervised fine-tuning; sft+dpo: then a DPO stage on the verified preference pairs of the same examples ([trainer.dpo]).",
    )
    dpo: PreferenceConfig = Field(default_factory=PreferenceConfig)
    batch_size: int = Field(4, ge=1, description="Examples (or packed blocks) per device step.")
    grad_accumulation: int = Field(4, ge=1, description="Steps accumulated per optimizer update.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Linear warm-up share of the steps.")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where the GPU supports it, else fp32."
    )
    device: Literal["auto", "cpu"] = Field("auto", description="cpu forces training on the CPU.")
    # data
    max_length: int = Field(1024, ge=8, description="Tokens per example; longer ones are cut.")
    packing: bool = Field(
        False, description="Pack whole examples into max_length blocks (not for prefix/prompt)."
    )
    template: Literal["auto", "chat", "alpaca"] = Field(
        "auto",
        description=(
            "auto: the tokenizer's chat template, or the Alpaca-style layout the in-process "
            "backend serves base models with when it has none; alpaca forces that layout."
        ),
    )
    max_new_examples: int | None = Field(
        None,
        ge=1,
        description="Cap on new accepted examples per run (the selector's budget); unset takes all.",
    )
    seed_share: float = Field(
        0.1, ge=0, lt=1, description="Share of the mix drawn from the human seeds (all if fewer)."
    )
    replay_share: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of the mix replayed from examples earlier versions trained on.",
    )
    generation_share: float = Field(
        0.1,
        ge=0,
        lt=1,
        description=(
            "Share of the mix that teaches the generation task: a Self-Instruct call's prompt "
            "answered with its tasks the loop accepted, so a student promoted as the generator "
            "writes tasks that survive the filters (0: the student learns to answer only)."
        ),
    )
    heldout_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of accepted examples held out by id hash; no version ever trains on them.",
    )
    # bookkeeping
    seed: int = Field(0, description="Seed of the data mix, adapter init and data order.")
    save_steps: int = Field(50, ge=1, description="Trainer checkpoint every this many steps.")
    save_total_limit: int = Field(2, ge=1, description="Trainer checkpoints kept while training.")
    logging_steps: int = Field(10, ge=1, description="Loss logged every this many steps.")
    eval_batch_size: int = Field(8, ge=1, description="Batch size of the held-out loss.")
    # evaluation and schedule
    gate: GateConfig = Field(default_factory=GateConfig)
    suite: SuiteConfig = Field(default_factory=SuiteConfig)
    pairwise: PairwiseConfig = Field(default_factory=PairwiseConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    train_every: int = Field(
        1, ge=1, description="The graph considers training every this many rounds."
    )
    train_min_new: int = Field(
        100, ge=1, description="Train only when at least this many new accepted examples wait."
    )

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if self.packing and self.method in PROMPT_LEARNING:
            raise ValueError(
                f"packing does not work with {self.method} tuning: virtual tokens would be "
                "shared across packed examples; set packing = false"
            )
        if self.objective == "sft+dpo" and self.method not in DPO_METHODS:
            raise ValueError(
                f"objective = 'sft+dpo' needs a method whose weights can serve as the DPO "
                f"reference ({', '.join(DPO_METHODS)}), not {self.method}"
            )
        if self.seed_share + self.replay_share + self.generation_share >= 1:
            raise ValueError(
                "seed_share + replay_share + generation_share must leave room for new "
                "examples (< 1)"
            )
        return self

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATES[self.method]

    def identity(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        return self.model_dump(
            exclude={
                "gate",
                "suite",
                "pairwise",
                # How many processes train is not what they train: a killed run may resume
                # on fewer or more (the Trainer's checkpoint restores the step and schedule).
                "launch",
                "train_every",
                "train_min_new",
                "save_steps",
                "save_total_limit",
                "logging_steps",
                "eval_batch_size",
            }
        )
