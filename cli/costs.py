"""What rounds cost: tokens per stage and model, priced by `models.NAME.price_per_mtok_in/out`.

Rounds keep calls and tokens per stage (`rounds.counts.stages.<stage>`), not per model.
A stage's tokens go to the model its role names in the config the round ran with
(`STAGE_ROLES`); the generator's go to the student when the round generated with a
promoted version. Two stages call a second model inside the same books: respond
includes Evol-Instruct's equality checks (the evolver's model), critique includes
tagging and Deita scoring (tagger and scorer); with one teacher, as by default, that
changes nothing.

Prices come from evoinstruct.toml (and EVOINSTRUCT__MODELS__NAME__PRICE_PER_MTOK_IN
style variables) as they are now, so prices added later price earlier rounds too; a
model the file no longer has is priced from the config stored with the round.
generate and evolve record only total tokens, not prompt and completion apart: those
are priced at the higher of the model's two prices, an upper bound. Answers served
from the response cache are counted as if paid for.

Reading is plain sqlite3 and tomllib, so `evoinstruct status` stays fast; the report
calls `project_costs`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import ConfigError
from evoinstruct.store.export import model_label
from evoinstruct.store.stages import Stage

STAGE_ROLES = {
    Stage.GENERATE: "generator",
    Stage.EVOLVE: "evolver",
    Stage.RESPOND: "responder",
    Stage.CRITIQUE: "critic",
    Stage.REWRITE: "rewriter",
}
PRICE_KEYS = ("price_per_mtok_in", "price_per_mtok_out")
ENV_PREFIX = "EVOINSTRUCT__MODELS__"


@dataclass(frozen=True)
class Price:
    """A model's price of a million prompt (`per_mtok_in`) and completion tokens."""

    per_mtok_in: float | None = None
    per_mtok_out: float | None = None

    @property
    def known(self) -> bool:
        return self.per_mtok_in is not None or self.per_mtok_out is not None

    def cost(self, prompt: int, completion: int, unsplit: int) -> tuple[float, int]:
        """(cost of the tokens with a price, how many tokens had none)."""
        cost, unpriced = 0.0, 0
        for tokens, price in ((prompt, self.per_mtok_in), (completion, self.per_mtok_out)):
            if price is None:
                unpriced += tokens
            else:
                cost += tokens * price / 1e6
        known = [p for p in (self.per_mtok_in, self.per_mtok_out) if p is not None]
        if known:
            cost += unsplit * max(known) / 1e6
        else:
            unpriced += unsplit
        return cost, unpriced


@dataclass
class StageUsage:
    """One stage of one round: its calls and tokens, the model they are attributed to, cost."""

    stage: str
    role: str
    model: str  # the configured model's name in [models]
    label: str  # what that model is: the server's model name or the local directory's name
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    cost: float | None = None
    unpriced_tokens: int = 0


@dataclass
class RoundCost:
    """One round: usage per stage, its accepted examples, and what each cost."""

    round: int
    model_version: str | None
    accepted: int
    stages: list[StageUsage] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.stages)

    @property
    def cost(self) -> float | None:
        priced = [s.cost for s in self.stages if s.cost is not None]
        return sum(priced) if priced else None

    @property
    def unpriced_tokens(self) -> int:
        return sum(s.unpriced_tokens for s in self.stages)

    @property
    def cost_per_accepted(self) -> float | None:
        cost = self.cost
        return cost / self.accepted if cost is not None and self.accepted else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "model_version": self.model_version,
            "accepted": self.accepted,
            "tokens": self.tokens,
            "cost": self.cost,
            "unpriced_tokens": self.unpriced_tokens,
            "cost_per_accepted": self.cost_per_accepted,
            "stages": [asdict(s) for s in self.stages],
        }


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def read_rounds(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per round what costing needs, extracted in SQL: a round's stored config is large.

    Rounds that ran with one config share one parsed roles/models pair (the text is
    parsed once), which also lets `round_costs` look each model up once.
    """
    rows = conn.execute(
        "SELECT number, model_version, json_extract(counts, '$.stages'), "
        "json_extract(counts, '$.by_status.accepted'), "
        "json_extract(config, '$.roles', '$.models') FROM rounds ORDER BY number"
    ).fetchall()
    parsed: dict[str | None, tuple[dict[str, Any], dict[str, Any]]] = {}
    out = []
    for number, version, stages, accepted, setup in rows:
        if setup not in parsed:
            roles, models = _json(setup) or [None, None]
            parsed[setup] = (roles or {}, models or {})
        roles, models = parsed[setup]
        out.append(
            {
                "number": number,
                "model_version": version,
                "stages": _json(stages) or {},
                "accepted": accepted or 0,
                "roles": roles,
                "models": models,
            }
        )
    return out


def from_store_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A `store.rounds()` row in the shape `read_rounds` returns."""
    counts, config = row.get("counts") or {}, row.get("config") or {}
    return {
        "number": row["number"],
        "model_version": row.get("model_version"),
        "stages": counts.get("stages") or {},
        "accepted": (counts.get("by_status") or {}).get("accepted", 0),
        "roles": config.get("roles") or {},
        "models": config.get("models") or {},
    }


def _price_value(value: Any, name: str, key: str, file: str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(
            f"expected a number of at least 0, got {value!r}",
            file=file,
            field=f"models.{name}.{key}",
        )
    return float(value)


def load_prices(
    config_path: str | Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, Price]:
    """Configured model name → Price, from the TOML file and the environment (no pydantic:
    `status` must stay fast)."""
    tables: dict[str, dict[str, Any]] = {}
    file = str(config_path) if config_path else None
    if config_path is not None and Path(config_path).is_file():
        try:
            data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(exc), file=file) from None
        models = data.get("models")
        if isinstance(models, dict):
            tables = {n: dict(t) for n, t in models.items() if isinstance(t, dict)}
    env = os.environ if environ is None else environ
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        name, _, key = var[len(ENV_PREFIX) :].lower().partition("__")
        if key in PRICE_KEYS:
            try:
                tables.setdefault(name, {})[key] = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                tables.setdefault(name, {})[key] = text
    prices = {}
    for name, table in tables.items():
        values = [_price_value(table.get(k), name, k, file) for k in PRICE_KEYS]
        prices[name] = Price(*values)
    return prices


def _stored_price(config: Any) -> Price:
    if not isinstance(config, Mapping):
        return Price()
    values = []
    for key in PRICE_KEYS:
        value = config.get(key)
        values.append(float(value) if isinstance(value, (int, float)) else None)
    return Price(*values)


def _stage_model(row: Mapping[str, Any], stage: str) -> tuple[str, str]:
    role = STAGE_ROLES[stage]
    roles = row["roles"]
    if role == "generator" and row.get("model_version") and roles.get("follow_student", True):
        return role, str(roles.get("student") or "student")
    return role, str(roles.get(role) or "teacher")


def round_costs(
    rounds: Iterable[Mapping[str, Any]], prices: Mapping[str, Price]
) -> list[RoundCost]:
    """Usage and cost per round and stage, from rows as `read_rounds` returns them."""
    out = []
    # (models table, name) → (label, price): thousands of rounds share a handful of configs.
    known: dict[tuple[int, str], tuple[str, Price]] = {}
    for row in rounds:
        result = RoundCost(row["number"], row.get("model_version"), int(row.get("accepted") or 0))
        models = row.get("models") or {}
        for stage, counters in (row.get("stages") or {}).items():
            if stage not in STAGE_ROLES or not isinstance(counters, Mapping):
                continue
            role, name = _stage_model(row, stage)
            if (id(models), name) not in known:
                stored = models.get(name)
                label = model_label(stored) if isinstance(stored, Mapping) else name
                known[(id(models), name)] = (label, prices.get(name) or _stored_price(stored))
            label, price = known[(id(models), name)]
            prompt = int(counters.get("prompt_tokens", 0))
            completion = int(counters.get("completion_tokens", 0))
            tokens = int(counters.get("tokens", prompt + completion))
            usage = StageUsage(
                stage=stage,
                role=role,
                model=name,
                label=label,
                calls=int(counters.get("calls", 0)),
                prompt_tokens=prompt,
                completion_tokens=completion,
                tokens=tokens,
            )
            if price.known:
                unsplit = max(tokens - prompt - completion, 0)
                usage.cost, usage.unpriced_tokens = price.cost(prompt, completion, unsplit)
            else:
                usage.unpriced_tokens = tokens
            result.stages.append(usage)
        out.append(result)
    return out


def cost_summary(rounds: Iterable[RoundCost]) -> dict[str, Any]:
    """Totals over rounds: tokens and cost by model, accepted examples, cost per accepted."""
    rounds = list(rounds)
    by_model: dict[str, dict[str, Any]] = {}
    for r in rounds:
        for s in r.stages:
            entry = by_model.setdefault(
                s.model,
                {"label": s.label, "calls": 0, "tokens": 0, "cost": None, "unpriced_tokens": 0},
            )
            entry["calls"] += s.calls
            entry["tokens"] += s.tokens
            entry["unpriced_tokens"] += s.unpriced_tokens
            if s.cost is not None:
                entry["cost"] = (entry["cost"] or 0.0) + s.cost
    costs = [e["cost"] for e in by_model.values() if e["cost"] is not None]
    cost = sum(costs) if costs else None
    accepted = sum(r.accepted for r in rounds)
    return {
        "rounds": len(rounds),
        "tokens": sum(e["tokens"] for e in by_model.values()),
        "cost": cost,
        "unpriced_tokens": sum(e["unpriced_tokens"] for e in by_model.values()),
        "accepted": accepted,
        "cost_per_accepted": cost / accepted if cost is not None and accepted else None,
        "by_model": by_model,
    }


def project_costs(project: Any) -> dict[str, Any]:
    """Everything costed for one project: {"rounds": [...], "summary": {...}} (plain data).

    `project` is a `graph.project.Project`; the pool is opened read-only.
    """
    from evoinstruct.store.stats import connect_readonly

    prices = load_prices(project.config_path)
    conn = connect_readonly(project.pool_path)
    try:
        rows = read_rounds(conn)
    finally:
        conn.close()
    rounds = round_costs(rows, prices)
    return {"rounds": [r.to_dict() for r in rounds], "summary": cost_summary(rounds)}


def human_tokens(n: int) -> str:
    """12, 3.4k, 1.2M: token counts that fit a narrow column."""
    for bound, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= bound:
            return f"{n / bound:.1f}{suffix}"
    return str(n)


def human_cost(value: float | None) -> str:
    """Two decimals, or three significant digits below 1 (a cost per example is small)."""
    if value is None:
        return "-"
    if value == 0 or value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"
