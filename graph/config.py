"""The run config: every package's config model composed into one, loaded from TOML.

Layers, lowest first: defaults < `evoinstruct.toml` < environment
(`EVOINSTRUCT__SECTION__KEY=value`) < CLI `--set section.key=value`. Values in
the environment and `--set` are TOML literals (`3`, `true`, `"text"`); a bare
word is taken as a string. The resolved config is stored with every round.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evoinstruct.agents.critic import CriticConfig, unknown_dimension
from evoinstruct.agents.evolver import EvolverConfig
from evoinstruct.agents.generator import GeneratorConfig
from evoinstruct.agents.responder import ResponderConfig
from evoinstruct.agents.rewriter import RewriterConfig
from evoinstruct.agents.selector import SelectorConfig
from evoinstruct.graph.report_config import ReportConfig
from evoinstruct.models.config import ModelConfig, RolesConfig
from evoinstruct.prompts.library import LANGUAGES
from evoinstruct.store.errors import ConfigError
from evoinstruct.trainer.config import TrainerConfig
from evoinstruct.trainer.weak_to_strong_config import WeakToStrongConfig

ENV_PREFIX = "EVOINSTRUCT__"


class ProjectConfig(BaseModel):
    """The project as a whole."""

    model_config = ConfigDict(extra="forbid")

    language: str = Field(
        "en",
        description=(
            "Prompt language, en or zh: the generator writes in it, and only seeds and "
            "examples in it are demos and parents (see bilingual)."
        ),
    )
    bilingual: bool = Field(
        False,
        description=(
            "Grow the pool in English and Chinese: generation calls alternate between the "
            "languages (each call's demos and prompt in one), and every parent is evolved "
            "with its own language's prompts. Off: project.language alone."
        ),
    )
    seed: int = Field(0, description="Seed of every random choice the loop makes.")
    license: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.+-]*$",
        description=(
            "License of exported data, a Hub license id (apache-2.0, cc-by-4.0, other); "
            "unset: `unknown` in the dataset card. Mind the teacher model's terms."
        ),
    )

    def languages(self) -> tuple[str, ...]:
        """The languages the loop writes in, the project's first."""
        if not self.bilingual:
            return (self.language,)
        return (self.language, *(lang for lang in LANGUAGES if lang != self.language))


class LoopConfig(BaseModel):
    """What one round does and how much of it."""

    model_config = ConfigDict(extra="forbid")

    generate_calls: int = Field(
        2, ge=0, description="Generator calls per round (each asks for several tasks)."
    )
    evolve_per_round: int = Field(8, ge=0, description="Accepted examples evolved per round.")
    max_depth: int = Field(
        4, ge=0, description="Deepest evolution an example may reach (WizardLM ran 4)."
    )
    batch_size: int = Field(
        64, ge=1, description="Examples per agent call in respond, critique and rewrite."
    )
    rewrite: bool = Field(True, description="Run the ReAlign rewriter on candidates each round.")
    diversity_reference: int = Field(
        2000,
        ge=0,
        description="Accepted examples sampled each round as the diversity filter's reference (0: this round only).",
    )
    keep_checkpoints: int = Field(
        5, ge=1, description="Finished rounds whose LangGraph checkpoints are kept."
    )
    max_step_failures: int = Field(
        3,
        ge=1,
        description=(
            "Starts in a row that one step of a round may fail on before the next start closes "
            "the round as failed (reason kept, accepted examples kept) and runs a new round."
        ),
    )


def require_tags_for_instag(
    method: str, *, tagging: bool, diversity: bool, tagging_setting: str
) -> None:
    """InsTag sampling picks examples by their tags; with tagging off no example has any, so
    every machine example would be rejected as `not_diverse`. `run` and `filter` both ask."""
    if diversity and method == "instag" and not tagging:
        raise ConfigError(
            f"selector.diversity.method 'instag' samples by InsTag tags, but {tagging_setting} "
            "is off, so every example would be rejected as not diverse; turn tagging on or "
            "choose diversity.method 'repr' or 'none'",
            field="selector.diversity.method",
        )


def _default_models() -> dict[str, ModelConfig]:
    return {
        "teacher": ModelConfig(
            backend="openai",
            base_url="http://127.0.0.1:8000/v1",
            model="Qwen/Qwen2.5-7B-Instruct",
        ),
        "student": ModelConfig(backend="transformers", path="Qwen/Qwen2.5-0.5B-Instruct"),
    }


class RunConfig(BaseModel):
    """Everything a run needs, one validated object."""

    model_config = ConfigDict(extra="forbid")

    project: ProjectConfig = Field(default_factory=ProjectConfig)
    models: dict[str, ModelConfig] = Field(default_factory=_default_models)
    roles: RolesConfig = Field(default_factory=RolesConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    evolver: EvolverConfig = Field(default_factory=EvolverConfig)
    responder: ResponderConfig = Field(default_factory=ResponderConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    rewriter: RewriterConfig = Field(default_factory=RewriterConfig)
    selector: SelectorConfig = Field(default_factory=SelectorConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    weak_to_strong: WeakToStrongConfig = Field(default_factory=WeakToStrongConfig)

    def check_consistency(self) -> None:
        """Settings that are valid alone but not together."""
        self.check_roles()
        self.check_score_dimensions()
        if self.weak_to_strong.enabled and self.roles.weak is None:
            raise ConfigError(
                "weak_to_strong.enabled needs a weak model: name a [models] entry in roles.weak",
                field="roles.weak",
            )
        require_tags_for_instag(
            self.selector.diversity.method,
            tagging=self.critic.instag.enabled,
            diversity="diversity" in self.selector.steps,
            tagging_setting="critic.instag.enabled",
        )

    def check_score_dimensions(self) -> None:
        """Every threshold and rank key names a dimension some critic part scores: with
        `missing_score = "pass"` a misspelt one would filter nothing, without a word."""

        keys = [("min_scores", d) for d in self.selector.min_scores]
        keys += [("max_scores", d) for d in self.selector.max_scores]
        keys += [("rank_by", d) for d in self.selector.rank_by]
        for setting, name in keys:
            problem = unknown_dimension(name, self.critic)
            if problem is not None:
                key = (
                    f"selector.{setting}" if setting == "rank_by" else f"selector.{setting}.{name}"
                )
                raise ConfigError(problem, field=key)

    def check_roles(self) -> None:
        for role, name in self.roles.model_dump().items():
            # The student is needed only once a version is promoted; ModelSet names it then.
            if (
                isinstance(name, str)
                and role not in ("follow_student", "student")
                and name not in self.models
            ):
                raise ConfigError(
                    f"role {role} names model {name!r}, which is not under [models] "
                    f"(configured: {', '.join(self.models) or 'none'})",
                    field=f"roles.{role}",
                )


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key} is not a table", field=dotted)
    node[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected section.key=value, got {item!r}", field="--set")
        out.append((key.strip(), _parse_value(value.strip())))
    return out


def _line_of(path: Path, loc: Sequence[Any]) -> int | None:
    """Best-effort line of a key in the TOML file, for error messages."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    keys = [str(k) for k in loc if not isinstance(k, int)]
    if not keys:
        return None
    section = ".".join(keys[:-1])
    in_section = not section
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = stripped.strip("[]").strip() == section
            if in_section and len(keys) == 1:
                return number
        elif in_section and stripped.split("=", 1)[0].strip() == keys[-1]:
            return number
    return None


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Defaults < TOML file < environment < overrides, validated; errors name file, line and key."""
    data: dict[str, Any] = {}
    file = Path(path) if path else None
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                "no config file (run `evoinstruct init` first)", file=str(file)
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(exc), file=str(file)) from exc
    # Overrides refine the default models rather than replace the whole table.
    data.setdefault(
        "models", {n: m.model_dump(exclude_none=True) for n, m in _default_models().items()}
    )
    env = os.environ if environ is None else environ
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX):
            _set_path(data, name[len(ENV_PREFIX) :].lower().replace("__", "."), _parse_value(value))
    for key, value in parse_overrides(overrides):
        _set_path(data, key, value)
    return _validated(data, file)


def with_overrides(config: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """`config` with `--set`-style overrides applied, validated as a whole."""
    data = config.model_dump(mode="json")
    for key, value in parse_overrides(overrides):
        _set_path(data, key, value)
    return _validated(data, None)


def _validated(data: dict[str, Any], file: Path | None) -> RunConfig:
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [p for p in error["loc"] if p not in ("function-after",)]
        key = ".".join(str(p) for p in loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(
            message + more,
            file=str(file) if file else None,
            line=_line_of(file, loc) if file else None,
            field=key,
        ) from None
    try:
        config.check_consistency()
    except ConfigError as exc:
        if file is None or exc.file is not None:
            raise
        loc = exc.field.split(".") if exc.field else []
        # A key inside an inline table (`min_scores = { qualty = 4 }`): its table's line.
        line = _line_of(file, loc) or _line_of(file, loc[:-1])
        raise ConfigError(exc.detail, file=str(file), line=line, field=exc.field) from None
    return config
