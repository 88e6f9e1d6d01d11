"""Evaluate a trained version before promoting it: the verifiable suite, held-out loss, the gate.

The gate's evidence (METHODS 5.1, 5.2) is the held-out verifiable suite
(`trainer.suite`, `trainer.verifiable`): the new version and the incumbent —
the active version, or the untuned base student before the first promotion —
answer the same suite prompts, and a paired test on their pass/fail pairs in
the suite's held-out parts (held-out phrasing, held-out type, IFEval rows;
`gate.parts`) decides (`GateConfig` defines the rule): a version that gains
only on the phrasings and types it trained on is refused. Every part's paired
difference is recorded beside the verdict, and so is the gate's power — the
smallest gain it would find 80% of the time on this many prompts at the
observed disagreement. The teacher's score on the suite is shown beside the
verdict, computed once per suite.

Held-out loss is measured on accepted examples no version trained on (the
hash-chosen held-out set recorded in the version's manifest), for the new
version and for the incumbent. It falls after fine-tuning almost by
construction, so with a suite it is a diagnostic recorded beside the verdict;
it decides only with `gate.metric = "loss"` (or "auto" in a project without a
suite). The optional pairwise comparison asks a judge to compare both models'
answers on a fixed prompt set in both orders; the winning score is
(wins - losses) / n + 1, so 1.0 is parity and 2.0 a clean sweep.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from evoinstruct.models.base import ChatModel, ChatRequest, Failure
from evoinstruct.models.cancel import CancelFlag, run_in_thread
from evoinstruct.store.errors import InputError, UnsupportedError
from evoinstruct.store.records import Example
from evoinstruct.trainer.config import GateConfig, PairwiseConfig, TrainerConfig
from evoinstruct.trainer.data import IGNORE_INDEX, resolve_template, tokenize_examples, user_content
from evoinstruct.trainer.verifiable import (
    POWER,
    Comparison,
    Progress,
    SuiteResult,
    compare,
    detectable_gain,
    part_order,
    percent,
    run_suite,
    signed_points,
)

if TYPE_CHECKING:
    from evoinstruct.prompts.library import PromptLibrary
    from evoinstruct.store import Store

Verdict = Literal["A", "B", "tie"]
JUDGE_TEMPLATE = "pairwise_judge"


# --- held-out loss --------------------------------------------------------------------
@dataclass
class LossResult:
    """Mean negative log-likelihood per response token over a set of examples."""

    loss: float | None
    tokens: int
    examples: int


def heldout_loss(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    cfg: TrainerConfig,
    cancel: CancelFlag | None = None,
) -> LossResult:
    """Token-weighted mean loss of `model` on the responses of `examples` (None if empty);
    `cancel` is checked between batches."""
    import torch

    from evoinstruct.trainer.data import Collator, pad_token_id

    template = resolve_template(tokenizer, cfg.template)
    rows, _ = tokenize_examples(examples, tokenizer, template, cfg.max_length)
    if not rows:
        return LossResult(None, 0, 0)
    collate = Collator(pad_token_id(tokenizer))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), cfg.eval_batch_size):
            if cancel is not None:
                cancel.check()
            batch = collate(rows[start : start + cfg.eval_batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            # The model's loss is the mean over predicted tokens; weight it back to a sum.
            count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if count == 0:
                continue
            out = model(**batch)
            total += float(out.loss) * count
            tokens += count
    model.train(was_training)
    return LossResult(total / tokens if tokens else None, tokens, len(rows))


def version_loss(
    base_model: str,
    version_dir: str | None,
    examples: Sequence[Example],
    cfg: TrainerConfig,
    cancel: CancelFlag | None = None,
) -> LossResult:
    """Load a version (or the bare base model when `version_dir` is None) and measure it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evoinstruct.trainer.methods import load_trained

    tokenizer = AutoTokenizer.from_pretrained(version_dir or base_model)
    if version_dir is None:
        model = AutoModelForCausalLM.from_pretrained(base_model)
    else:
        model = load_trained(base_model, version_dir)
    import torch

    if cfg.device != "cpu" and torch.cuda.is_available():
        model.to("cuda")
    try:
        if cancel is not None:
            cancel.check()
        return heldout_loss(model, tokenizer, examples, cfg, cancel)
    finally:
        del model


# --- pairwise judge ---------------------------------------------------------------------
@dataclass
class PairwiseResult:
    """Outcome of the candidate against the incumbent, counted over both answer orders."""

    wins: int = 0
    losses: int = 0
    ties: int = 0
    invalid: int = 0
    failed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def score(self) -> float | None:
        return winning_score(self.wins, self.losses, self.n) if self.n else None

    def summary(self) -> dict[str, Any]:
        return {
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "invalid": self.invalid,
            "failed": self.failed,
            "n": self.n,
            "winning_score": self.score,
        }


def winning_score(wins: int, losses: int, n: int) -> float:
    """(wins - losses) / n + 1: 0 = always worse, 1 = parity, 2 = always better."""
    if n <= 0:
        raise ValueError("winning score needs at least one comparison")
    return (wins - losses) / n + 1


def parse_pairwise_verdict(text: str | None, verdict_key: str, tie_label: str) -> Verdict | None:
    """The last '<key>: A|B|<tie>' in a judge's answer; None when there is none."""
    if not text:
        return None
    pattern = re.compile(
        rf"{re.escape(verdict_key)}\s*[:：]\s*[\*\[\(\"'“]*\s*(A|B|{re.escape(tie_label)})\b",
        re.IGNORECASE,
    )
    found = pattern.findall(text)
    if not found:
        return None
    last = found[-1]
    if last.casefold() == tie_label.casefold():
        return "tie"
    return "A" if last.upper() == "A" else "B"


async def pairwise_compare(
    judge: ChatModel,
    candidate: ChatModel,
    incumbent: ChatModel,
    instructions: Sequence[str],
    library: PromptLibrary,
    cfg: PairwiseConfig,
) -> PairwiseResult:
    """Both models answer each instruction; the judge compares them in both orders.

    A prompt either model failed to answer is counted in `failed` and not judged;
    a judge failure, truncated or unparseable verdict is counted in `invalid` and
    left out of n — never guessed.
    """
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": text}],
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
        )
        for text in instructions
    ]
    new_answers, old_answers = await asyncio.gather(
        candidate.generate(requests), incumbent.generate(requests)
    )
    result = PairwiseResult()
    judged: list[tuple[str, bool]] = []  # (instruction, candidate is A)
    judge_requests: list[ChatRequest] = []
    for text, new, old in zip(instructions, new_answers, old_answers, strict=True):
        if isinstance(new, Failure) or isinstance(old, Failure):
            result.failed += 1
            continue
        for candidate_first in (True, False):
            a, b = (new.text, old.text) if candidate_first else (old.text, new.text)
            prompt = library.render(
                JUDGE_TEMPLATE,
                instruction=text,
                answer_a=a,
                answer_b=b,
                verdict_key=cfg.verdict_key,
                tie_label=cfg.tie_label,
            )
            judge_requests.append(
                ChatRequest(messages=[{"role": "user", "content": prompt}], temperature=0.0)
            )
            judged.append((text, candidate_first))
    verdicts = await judge.generate(judge_requests) if judge_requests else []
    for (text, candidate_first), reply in zip(judged, verdicts, strict=True):
        _count_verdict(result, text, candidate_first, reply, cfg)
    return result


def _count_verdict(
    result: PairwiseResult, instruction: str, candidate_first: bool, reply: Any, cfg: PairwiseConfig
) -> None:
    record: dict[str, Any] = {"instruction": instruction, "candidate_first": candidate_first}
    if isinstance(reply, Failure):
        result.invalid += 1
        result.records.append({**record, "outcome": f"judge_failure:{reply.kind}"})
        return
    verdict = (
        None
        if reply.truncated
        else parse_pairwise_verdict(reply.text, cfg.verdict_key, cfg.tie_label)
    )
    record["raw_output"] = reply.text
    if verdict is None:
        result.invalid += 1
        record["outcome"] = "invalid"
    elif verdict == "tie":
        result.ties += 1
        record["outcome"] = "tie"
    elif (verdict == "A") == candidate_first:
        result.wins += 1
        record["outcome"] = "win"
    else:
        result.losses += 1
        record["outcome"] = "loss"
    result.records.append(record)


# --- the gate ---------------------------------------------------------------------------
@dataclass
class GateDecision:
    promote: bool
    reason: str


@dataclass
class SuiteEvidence:
    """The candidate and the incumbent on the same suite: the paired comparison the gate
    decides on (its parts), one per part for the record, the teacher."""

    candidate: SuiteResult
    baseline: SuiteResult
    comparison: Comparison
    teacher: SuiteResult | None = None
    by_part: dict[str, Comparison] = field(default_factory=dict)
    power: dict[str, Any] | None = None  # gate_power() of the comparison

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.candidate.suite,
            "comparison": self.comparison.to_dict(),
            "by_part": {k: c.to_dict() for k, c in self.by_part.items()},
            "power": self.power,
            "candidate": self.candidate.summary(),
            "baseline": self.baseline.summary(),
            "teacher": self.teacher.summary() if self.teacher else None,
        }


def _points(value: float) -> str:
    return f"{value:g}"


def gate_power(gate: GateConfig, n: int, discordance: float | None = None) -> dict[str, Any]:
    """The smallest gain (accuracy points) the gate finds 80% of the time on n prompts of
    which a share `discordance` two versions answer differently (None or 0: the
    config's `assumed_discordance`).

    The bootstrap rule (the interval's lower end above the margin) is a one-sided test
    at (1 - confidence) / 2, McNemar's at 1 - confidence; either must also clear the margin.
    The figure is for prompt-level pass/fail; with an instruction-level `suite_metric` it
    is the prompt-level one, a guide only.
    """
    observed = bool(discordance)
    share = discordance if observed else gate.assumed_discordance
    alpha = (1 - gate.confidence) / (1 if gate.test == "mcnemar" else 2)
    gain = detectable_gain(n, share, alpha, POWER)
    return {
        "n": n,
        "discordance": share,
        "observed": observed,
        "power": POWER,
        "alpha": alpha,
        "detectable_points": None if gain is None else gate.min_margin + 100 * gain,
    }


def suite_power(
    cfg: TrainerConfig, result: SuiteResult, reference: SuiteResult | None = None
) -> dict[str, Any]:
    """The gate's power on this suite, for `eval`: on the prompts of its gated parts, at the
    discordance observed between `result` and `reference` (another model on the same
    suite), else at `gate.assumed_discordance`."""
    gated = set(cfg.gate.parts)
    n = sum(1 for o in result.outcomes if o.part in gated) or len(result.outcomes)
    discordance = None
    if reference is not None and reference.suite == result.suite:
        try:
            found = compare(result, reference, "prompt_strict", parts=gated, samples=100)
        except ValueError:
            found = None
        discordance = found.discordance if found is not None else None
    power = gate_power(cfg.gate, n, discordance)
    power["parts"] = [p for p in cfg.gate.parts if any(o.part == p for o in result.outcomes)]
    power["reference"] = reference.label if discordance else None
    return power


def power_text(power: dict[str, Any]) -> str:
    """'power: finds +4.9 points 80% of the time (n=480, 15% discordant, observed)'."""
    how = "observed" if power.get("observed", True) else "assumed"
    if power.get("reference"):
        how += f" against {power['reference']}"
    share = f"{power['discordance']:.0%} discordant, {how}"
    points = power["detectable_points"]
    if points is None:
        return (
            f"power: too few prompts to find any gain {power['power']:.0%} of the time "
            f"(n={power['n']}, {share})"
        )
    return (
        f"power: finds +{points:.1f} points {power['power']:.0%} of the time "
        f"(n={power['n']}, {share})"
    )


PART_LABELS = {
    "in_distribution": "in-distribution",
    "held_out_phrasing": "held-out phrasing",
    "held_out_type": "held-out type",
    "ifeval": "IFEval rows",
}


def part_label(parts: tuple[str, ...]) -> str:
    """'held-out phrasing + held-out type' for the parts a comparison covers."""
    if not parts:
        return "all prompts"
    return " + ".join(PART_LABELS.get(p, p) for p in parts)


def verifiable_verdict(
    gate: GateConfig, evidence: SuiteEvidence, baseline_name: str
) -> GateDecision:
    """The rule of `GateConfig`: a paired win on the suite's held-out parts by more than
    the margin; the other parts and the power are stated beside it."""
    c = evidence.comparison
    margin = gate.min_margin / 100
    name = "verifiable" if c.metric == "prompt_strict" else f"verifiable {c.metric}"
    ci = f"{c.confidence:.0%} CI {signed_points(c.low)}..{signed_points(c.high)}"
    p = f"McNemar p={c.mcnemar['p_two_sided']:.3g}, " if c.mcnemar else ""
    head = (
        f"{name} ({part_label(c.parts)}) {percent(c.candidate)} vs {percent(c.baseline)} "
        f"of {baseline_name} ({signed_points(c.diff)} points, {ci}, {p}n={c.n})"
    )
    if gate.test == "mcnemar":
        assert c.mcnemar is not None  # the config allows mcnemar with prompt-level metrics only
        one_sided = c.mcnemar["p_one_sided"]
        promote = c.diff > margin and one_sided < 1 - c.confidence
        rule = (
            f"> margin {_points(gate.min_margin)}, one-sided p={one_sided:.3g} "
            f"{'<' if one_sided < 1 - c.confidence else 'not below'} {1 - c.confidence:.3g}"
        )
    else:
        promote = c.low > margin
        rule = (
            f"> margin {_points(gate.min_margin)}"
            if promote
            else f"the lower end is not above margin {_points(gate.min_margin)}"
        )
    reason = f"{head} {rule}" if promote else f"{head}: {rule}"
    if evidence.power is not None:
        reason += f"; {power_text(evidence.power)}"
    others = [
        f"{part_label((part,))} {signed_points(o.diff)} "
        f"(CI {signed_points(o.low)}..{signed_points(o.high)}, n={o.n})"
        for part, o in evidence.by_part.items()
        if c.parts and part not in c.parts
    ]
    if others:
        reason += "; not gated: " + ", ".join(others)
    if evidence.teacher is not None:
        reason += f"; teacher {percent(evidence.teacher.accuracy(c.metric))}"
    return GateDecision(promote, reason)


def _loss_note(new_loss: float | None, baseline_loss: float | None) -> str:
    if new_loss is None or baseline_loss is None:
        return "no held-out loss"
    sign = "<" if new_loss < baseline_loss else ">=" if new_loss > baseline_loss else "="
    return f"held-out loss {new_loss:.4f} {sign} {baseline_loss:.4f} (diagnostic)"


def decide(
    gate: GateConfig,
    *,
    new_loss: float | None,
    baseline_loss: float | None,
    baseline_name: str = "the current generator",
    pairwise: PairwiseResult | None = None,
    verifiable: SuiteEvidence | None = None,
    note: str | None = None,
) -> GateDecision:
    """Promote only if the new version is better; the reason says why either way.

    With suite evidence the paired suite test decides and the loss is recorded
    beside it; without it, `gate.metric = "verifiable"` refuses and otherwise
    the held-out loss decides. `note` says why a suite was not run.
    """
    reasons = []
    if verifiable is not None:
        verdict = verifiable_verdict(gate, verifiable, baseline_name)
        reasons += [verdict.reason, _loss_note(new_loss, baseline_loss)]
        if not verdict.promote:
            return GateDecision(False, "; ".join(reasons))
    elif gate.metric == "verifiable":
        why = note or "the verifiable gate needs the student model to answer the suite"
        return GateDecision(False, f"no suite result: {why}")
    else:
        if note:
            reasons.append(note)
        loss = _loss_decision(gate, new_loss, baseline_loss, baseline_name)
        if not loss.promote:
            return GateDecision(False, "; ".join([*reasons, loss.reason]))
        reasons.append(loss.reason)
    if gate.min_winning_score is not None:
        score = pairwise.score if pairwise is not None else None
        if score is None:
            return GateDecision(
                False, "the gate needs a pairwise winning score but no valid judge verdicts exist"
            )
        if score < gate.min_winning_score:
            return GateDecision(
                False, f"winning score {score:.3f} below the required {gate.min_winning_score:.3f}"
            )
        reasons.append(f"winning score {score:.3f} >= {gate.min_winning_score:.3f}")
    return GateDecision(True, "; ".join(reasons))


def _loss_decision(
    gate: GateConfig, new_loss: float | None, baseline_loss: float | None, baseline_name: str
) -> GateDecision:
    if new_loss is None or baseline_loss is None:
        if gate.require_heldout:
            return GateDecision(False, "no held-out examples to measure the loss on")
        return GateDecision(True, "no held-out loss (not required)")
    improvement = baseline_loss - new_loss
    if improvement <= gate.min_loss_improvement:
        return GateDecision(
            False,
            f"held-out loss {new_loss:.4f} vs {baseline_loss:.4f} of {baseline_name}: "
            f"improvement {improvement:.4f} is not above {gate.min_loss_improvement:.4f}",
        )
    return GateDecision(
        True, f"held-out loss {new_loss:.4f} < {baseline_loss:.4f} of {baseline_name}"
    )


# --- one version, end to end --------------------------------------------------------------
@dataclass
class Evaluation:
    version: str
    baseline_version: str | None
    heldout: LossResult
    baseline: LossResult
    pairwise: PairwiseResult | None
    decision: GateDecision
    verifiable: SuiteEvidence | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "heldout_loss": self.heldout.loss,
            "heldout_tokens": self.heldout.tokens,
            "heldout_examples": self.heldout.examples,
            "baseline_version": self.baseline_version,
            "baseline_loss": self.baseline.loss,
            "pairwise": self.pairwise.summary() if self.pairwise else None,
            "verifiable": self.verifiable.to_dict() if self.verifiable else None,
            "gate_metric": "verifiable" if self.verifiable else "loss",
            "gate": asdict(self.decision),
        }


def fixed_prompts(examples: Sequence[Example], n: int) -> list[str]:
    """The pairwise prompt set: held-out instructions in id order, the same every round."""
    ordered = sorted(examples, key=lambda e: e.id)
    return [user_content(e.instruction, e.input) for e in ordered[:n]]


def uses_suite(store: Store, cfg: TrainerConfig) -> bool:
    """Whether the gate wants the suite: always for "verifiable", for "auto" once one is stored
    (a suite of an IFEval file alone, `eval --ifeval FILE --only`, is not the gate's)."""
    if cfg.gate.metric == "loss":
        return False
    return cfg.gate.metric == "verifiable" or any(r["selected"] > 0 for r in store.eval_suites())


async def suite_evidence(
    store: Store,
    row: dict[str, Any],
    incumbent: dict[str, Any] | None,
    cfg: TrainerConfig,
    *,
    student: ChatModel,
    teacher: ChatModel | None = None,
    progress: Progress | None = None,
) -> SuiteEvidence:
    """Both versions answer the current suite on one student model, switching adapters.

    The incumbent goes first (`incumbent` None: the bare base student); the
    student is left serving the candidate. Stored results for the same model
    and suite are reused, so the incumbent and the teacher answer once per suite.
    """
    from evoinstruct.trainer.promote import hand_off
    from evoinstruct.trainer.suite import ensure_suite

    suite = ensure_suite(store, cfg.suite).suite
    confidence = cfg.gate.confidence

    async def run(model: ChatModel, label: str, version_row: dict[str, Any] | None) -> SuiteResult:
        return await run_suite(
            store,
            suite,
            model,
            cfg.suite,
            label=label,
            version=version_row["version"] if version_row else None,
            adapter_path=version_row["path"] if version_row else None,
            confidence=confidence,
            progress=progress,
        )

    await hand_off(student, incumbent)
    baseline = await run(student, incumbent["version"] if incumbent else "base", incumbent)
    await hand_off(student, row)
    candidate = await run(student, row["version"], row)
    reference = None
    if teacher is not None and cfg.gate.teacher_reference:
        reference = await run(teacher, "teacher", None)
    return gate_evidence(cfg, candidate, baseline, reference)


def gate_evidence(
    cfg: TrainerConfig,
    candidate: SuiteResult,
    baseline: SuiteResult,
    teacher: SuiteResult | None = None,
) -> SuiteEvidence:
    """The comparison the gate decides on — the suite's `gate.parts`, or every prompt of a
    suite that has none of them — one comparison per part, and the gate's power."""
    options = {
        "samples": cfg.suite.bootstrap_samples,
        "seed": cfg.suite.seed,
        "confidence": cfg.gate.confidence,
    }
    metric = cfg.gate.suite_metric
    present = sorted({o.part for o in candidate.outcomes if o.part}, key=part_order)
    gated = [p for p in cfg.gate.parts if p in present]
    by_part = {}
    for part in present:
        try:
            by_part[part] = compare(candidate, baseline, metric, parts=[part], **options)
        except ValueError:  # no prompt of this part answered by both
            continue
    try:
        comparison = compare(candidate, baseline, metric, parts=gated or None, **options)
    except ValueError:
        comparison = compare(candidate, baseline, metric, **options)
    power = gate_power(cfg.gate, comparison.n, comparison.discordance)
    return SuiteEvidence(candidate, baseline, comparison, teacher, by_part, power)


async def evaluate_version(
    store: Store,
    version: str,
    cfg: TrainerConfig,
    *,
    judge: ChatModel | None = None,
    candidate: ChatModel | None = None,
    incumbent: ChatModel | None = None,
    library: PromptLibrary | None = None,
    prompts: Sequence[str] | None = None,
    student: ChatModel | None = None,
    teacher: ChatModel | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Measure `version` against the active one, decide, and record the metrics in the store.

    The suite runs when the gate wants it (`uses_suite`) and `student` — a
    student model this call may hand adapters to, left serving `version` — is
    given; `teacher` adds the reference score. The pairwise comparison runs when
    cfg.pairwise.enabled and a judge, both chat models and a prompt library are given.
    """
    row = store.model_version(version)
    if row is None:
        raise InputError(f"no model version {version!r}", field="version")
    active = store.active_model()
    baseline_version = active["version"] if active and active["version"] != version else None
    examples = store.get_many(store.training_manifest(version, role="heldout"))
    new = await run_in_thread(version_loss, row["base"], row["path"], examples, cfg)
    baseline_dir = active["path"] if baseline_version else None
    old = await run_in_thread(version_loss, row["base"], baseline_dir, examples, cfg)
    evidence, note = None, None
    if uses_suite(store, cfg):
        if student is None:
            note = "suite not run: no student model to answer it"
        else:
            try:
                evidence = await suite_evidence(
                    store,
                    row,
                    active if baseline_version else None,
                    cfg,
                    student=student,
                    teacher=teacher,
                    progress=progress,
                )
            except UnsupportedError as exc:
                # A full fine-tune or prompt tuning cannot be handed to the serving student.
                note = f"suite not run: {exc}"
    pairwise = None
    wanted = cfg.pairwise.enabled and judge and (candidate or student) and incumbent and library
    if wanted:
        instructions = (
            list(prompts) if prompts else fixed_prompts(examples, cfg.pairwise.num_prompts)
        )
        pairwise = await pairwise_compare(
            judge, candidate or student, incumbent, instructions, library, cfg.pairwise
        )
    decision = decide(
        cfg.gate,
        new_loss=new.loss,
        baseline_loss=old.loss,
        baseline_name=baseline_version or "the base model",
        pairwise=pairwise,
        verifiable=evidence,
        note=note,
    )
    evaluation = Evaluation(version, baseline_version, new, old, pairwise, decision, evidence)
    store.update_model_metrics(version, {"evaluation": evaluation.metrics()})
    return evaluation
