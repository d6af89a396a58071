"""The checks beside the pooled loss, one tick at a time: guardrails and per-class losses (pure).

Like the loss judge, every check is a fold whose state lives in status (`status.checksState`), and a
tick reads only the intervals closed since it ends. All checks move in lockstep: a tick whose read of
any of them failed advances none, so they always cover the same intervals.

Classes: slots are given to classes in the order they are first seen, at most `max_classes`, and a
class keeps its slot for the whole rollout, so at most max_classes classes are ever judged (the
Bonferroni split in core/family.py counts the slots). A class below min_samples_per_class labelled
canary samples is shown as unjudged and never blocks a promotion; the pooled judge decides for it.
Classes without a slot are counted in `unslotted`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lossgate.core import calibration, guardrail, judge_codec, judge_fold, token_fold
from lossgate.core.calibration import Bins, CalibrationInterval
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.core.guardrail import CheckConfig, CheckFold, CountInterval
from lossgate.core.judge_types import JudgeConfig
from lossgate.core.timeline import weight_timeline, with_weights
from lossgate.core.token_fold import TokenConfig, TokenFold, TokenInterval
from lossgate.core.verdicts import LossVerdict
from lossgate.model import ModelRolloutStatus
from lossgate.model.calibration import BRIER_CHECK, CalibrationStatus
from lossgate.model.status import ChecksState, CheckStatus

CLASS_PREFIX = "class:"
CALIBRATION_KEY = "calibration:bins"  # the running reliability counters of both arms (core/calibration.py)


@dataclass(frozen=True)
class ClassChecks:
    """How the per-class judge runs (spec.analysis.loss.perClass)."""

    config: JudgeConfig  # alpha_rollback is the class slot's share
    max_classes: int
    min_samples: float


@dataclass(frozen=True)
class GuardrailCheck:
    kind: str  # errorRate | latency
    config: CheckConfig


@dataclass(frozen=True)
class ChecksPlan:
    """Where this tick's reads of the checks start, and the folds they continue."""

    origin: datetime
    start: datetime
    interval_s: float
    fingerprint: str
    looks: int
    folds: Mapping[str, CheckFold]
    class_folds: Mapping[str, judge_fold.JudgeFold]
    unslotted: Mapping[str, float]
    calibration: tuple[Bins, Bins] | None = None  # running (baseline, canary) totals; None: not read
    token_fold: TokenFold | None = None  # spec.analysis.tokenLoss (None: not configured, or fresh)


def plan_checks(
    status: ModelRolloutStatus,
    interval_s: float,
    guardrails: Sequence[GuardrailCheck],
    classes: ClassChecks | None,
    series: object,
    calibrated: bool = False,
    tokens: TokenConfig | None = None,
) -> ChecksPlan | None:
    """None when there is nothing to check (no checks, not started, or finished). `calibrated`: read
    the reliability counters too (spec.analysis.calibration; the Brier gate is among `guardrails`);
    `tokens`: the loss per token's check (spec.analysis.tokenLoss)."""
    nothing = not guardrails and classes is None and not calibrated and tokens is None
    if nothing or not status.step_starts or status.terminal:
        return None
    origin = status.step_starts[0].at
    interval_ms, origin_ms = round(interval_s * 1000), round(origin.timestamp() * 1000)
    key = (guardrails, classes, series, interval_ms, origin_ms) + ((True,) if calibrated else ())
    what = repr(key) + ("" if tokens is None else repr(tokens))
    fp = hashlib.sha256(what.encode()).hexdigest()[:32]
    empty = (Bins(), Bins()) if calibrated else None
    fresh = ChecksPlan(origin, origin, interval_ms / 1000, fp, 0, {}, {}, {}, empty)
    st = status.checks_state
    if st is None or st.fingerprint != fp or st.origin_ms != origin_ms or st.interval_ms != interval_ms:
        return fresh
    if st.through_ms != origin_ms + st.looks * interval_ms:
        return fresh
    try:
        folds = {g.config.name: guardrail.decode(st.numbers[g.config.name]) for g in guardrails}
        class_folds = {
            key.removeprefix(CLASS_PREFIX): judge_codec.decode(numbers)
            for key, numbers in st.numbers.items()
            if key.startswith(CLASS_PREFIX)
        }
        totals = None
        if calibrated:
            bins = st.numbers[CALIBRATION_KEY]
            totals = (Bins.from_list(bins["baseline"]), Bins.from_list(bins["canary"]))
        tfold = token_fold.decode(st.numbers[token_fold.NAME]) if tokens is not None else None
    except (KeyError, ValueError):
        return fresh  # not ours (another version, or edited): rebuild from the start
    start = datetime.fromtimestamp(st.through_ms / 1000, tz=UTC)
    unslotted = dict(st.unslotted)
    return ChecksPlan(
        origin, start, interval_ms / 1000, fp, st.looks, folds, class_folds, unslotted, totals, tfold
    )


@dataclass(frozen=True)
class ChecksJudged:
    checks: list[CheckStatus]
    state: ChecksState | None
    problem: Problem | None
    calibration: CalibrationStatus | None = None


def judge_checks(
    status: ModelRolloutStatus,
    plan: ChecksPlan,
    guardrails: Sequence[GuardrailCheck],
    classes: ClassChecks | None,
    read: Mapping[str, list[CountInterval] | Problem],
    class_read: dict[str, list[IntervalStats]] | Problem | None,
    closed: int,
    calibration_read: list[CalibrationInterval] | Problem | None = None,
    tokens: TokenConfig | None = None,
    token_read: list[TokenInterval] | Problem | None = None,
) -> ChecksJudged:
    """Continue every check's fold with the `closed` intervals read this tick (all or none) and report
    each. A read of another length than `closed` is not this window's: nothing advances. The Brier
    gate (a guardrail named BRIER_CHECK) reads its counts off `calibration_read`, and a failed read holds
    the checks like any guardrail's; without the gate a failed calibration read holds nothing."""
    read = _with_brier(read, guardrails, calibration_read)
    # Without the gate, calibration is only reported: a failed read of it holds nothing (its
    # intervals are left out of status.calibration); with the gate, it is that check's read.
    totals = plan.calibration
    problems, lengths = _window(
        read,
        class_read,
        token_read if tokens is not None else None,
        calibration_read if totals is not None else None,
    )
    tfold = plan.token_fold or TokenFold()
    folds, class_folds, unslotted = dict(plan.folds), dict(plan.class_folds), dict(plan.unslotted)
    looks = plan.looks
    if not problems and lengths <= {closed} and closed > 0:
        timeline = weight_timeline(status)
        for g in guardrails:
            got = read.get(g.config.name)
            if isinstance(got, list) and got:
                fold = folds.get(g.config.name, CheckFold())
                folds[g.config.name] = guardrail.advance(fold, with_weights(got, timeline), g.config)
        if classes is not None and isinstance(class_read, dict):
            _advance_classes(classes, class_read, class_folds, unslotted, timeline)
        if totals is not None and isinstance(calibration_read, list):
            totals = calibration.accumulate(totals, calibration_read)
        if tokens is not None and isinstance(token_read, list) and token_read:
            tfold = token_fold.advance(tfold, with_weights(token_read, timeline), tokens)
        looks += closed
    out = [_guardrail_status(g, folds.get(g.config.name, CheckFold())) for g in guardrails]
    if tokens is not None:
        out.append(_token_status(tfold, tokens))
    if classes is not None:
        out += [_class_status(name, fold, classes) for name, fold in sorted(class_folds.items())]
        out += [
            CheckStatus(
                name=name, kind="classLoss", verdict=LossVerdict.INSUFFICIENT_DATA.value, judged=False,
                n_canary=n, reason=f"class {name}: no slot (maxClasses {classes.max_classes}); not judged",
            )
            for name, n in sorted(unslotted.items())
        ]  # fmt: skip
    interval_ms, origin_ms = round(plan.interval_s * 1000), round(plan.origin.timestamp() * 1000)
    numbers = {name: guardrail.encode(f) for name, f in folds.items()}
    numbers |= {CLASS_PREFIX + name: judge_codec.encode(f) for name, f in class_folds.items()}
    if totals is not None:
        numbers[CALIBRATION_KEY] = {"baseline": totals[0].to_list(), "canary": totals[1].to_list()}
    if tokens is not None:
        numbers[token_fold.NAME] = token_fold.encode(tfold)
    state = ChecksState(
        origin_ms=origin_ms,
        through_ms=origin_ms + looks * interval_ms,
        interval_ms=interval_ms,
        fingerprint=plan.fingerprint,
        looks=looks,
        numbers=numbers,
        unslotted=unslotted,
    )
    shown = None
    if totals is not None:
        through = datetime.fromtimestamp((origin_ms + looks * interval_ms) / 1000, tz=UTC)
        shown = calibration.status(totals, through)
    return ChecksJudged(out, state, problems[0] if problems else None, shown)


def _with_brier(
    read: Mapping[str, list[CountInterval] | Problem],
    guardrails: Sequence[GuardrailCheck],
    calibration_read: list[CalibrationInterval] | Problem | None,
) -> Mapping[str, list[CountInterval] | Problem]:
    """The guardrails' reads with the Brier gate's (counts off the reliability counters), if gated."""
    if calibration_read is None or not any(g.config.name == BRIER_CHECK for g in guardrails):
        return read
    got = (
        calibration_read
        if isinstance(calibration_read, Problem)
        else calibration.brier_intervals(calibration_read)
    )
    return {**read, BRIER_CHECK: got}


def _window(
    read: Mapping[str, list[CountInterval] | Problem],
    class_read: dict[str, list[IntervalStats]] | Problem | None,
    token_read: list[TokenInterval] | Problem | None,
    calibration_read: list[CalibrationInterval] | Problem | None,
) -> tuple[list[Problem], set[int]]:
    """The problems of this tick's reads, and the lengths of those that succeeded. A failed read of
    the reliability counters is no problem here: ungated it is only reported, gated it is the Brier
    check's read (already in `read`)."""
    problems = [p for p in read.values() if isinstance(p, Problem)]
    lengths = {len(v) for v in read.values() if isinstance(v, list)}
    if isinstance(class_read, Problem):
        problems.append(class_read)
    elif isinstance(class_read, dict):
        lengths |= {len(v) for v in class_read.values()}
    if isinstance(token_read, Problem):
        problems.append(token_read)
    elif isinstance(token_read, list):
        lengths.add(len(token_read))
    if isinstance(calibration_read, list):
        lengths.add(len(calibration_read))
    return problems, lengths


def _advance_classes(
    classes: ClassChecks,
    read: Mapping[str, list[IntervalStats]],
    folds: dict[str, judge_fold.JudgeFold],
    unslotted: dict[str, float],
    timeline: list[tuple[float, int]],
) -> None:
    """Fold each slotted class's intervals; give free slots to new classes, largest first (a class
    first seen late starts its own fold then: its look numbers count from its first interval)."""
    new = sorted((c for c in read if c not in folds), key=lambda c: -sum(iv.canary.n for iv in read[c]))
    for name in new:
        if len(folds) < classes.max_classes:
            folds[name] = judge_fold.JudgeFold()
        else:
            unslotted[name] = unslotted.get(name, 0.0) + sum(iv.canary.n for iv in read[name])
    for name, fold in folds.items():
        got = read.get(name)
        if got:
            folds[name] = judge_fold.advance(fold, with_weights(got, timeline), classes.config)


def _guardrail_status(g: GuardrailCheck, fold: CheckFold) -> CheckStatus:
    r = guardrail.conclude(fold, g.config)
    return CheckStatus(
        name=r.name, kind=g.kind, verdict=r.verdict.value, n_baseline=r.n_baseline, n_canary=r.n_canary,
        mean_baseline=r.mean_baseline, mean_canary=r.mean_canary, delta=r.delta, cs_low=r.cs_low,
        cs_high=r.cs_high, margin=r.margin, p_regression=r.p_regression, p_not_worse=r.p_not_worse,
        alpha=r.alpha_rollback, reason=r.reason,
    )  # fmt: skip


def _class_status(name: str, fold: judge_fold.JudgeFold, classes: ClassChecks) -> CheckStatus:
    r = judge_fold.conclude(fold, classes.config)
    judged = r.n_canary >= classes.min_samples
    reason = (
        f"class {name}: {r.reason}"
        if judged
        else (
            f"class {name}: {r.n_canary:.0f}/{classes.min_samples:.0f} canary samples; not judged, "
            "the pooled judge decides"
        )
    )
    return CheckStatus(
        name=name, kind="classLoss", verdict=r.verdict.value, judged=judged, n_baseline=r.n_baseline,
        n_canary=r.n_canary, mean_baseline=r.mean_baseline, mean_canary=r.mean_canary, delta=r.theta_hat,
        cs_low=r.cs_low, cs_high=r.cs_high, margin=r.margin, p_regression=r.p_regression,
        p_not_worse=r.p_not_worse, alpha=classes.config.alpha_rollback, reason=reason,
    )  # fmt: skip


def _token_status(fold: TokenFold, config: TokenConfig) -> CheckStatus:
    """The loss per token (spec.analysis.tokenLoss); means are nats per token, perplexity exp(mean)."""
    r = token_fold.conclude(fold, config)
    return CheckStatus(
        name=token_fold.NAME, kind=token_fold.NAME, verdict=r.verdict.value, n_baseline=r.n_baseline,
        n_canary=r.n_canary, mean_baseline=r.per_token_baseline, mean_canary=r.per_token_canary,
        delta=r.delta, cs_low=r.cs_low, cs_high=r.cs_high, margin=r.margin, p_regression=r.p_regression,
        p_not_worse=r.p_not_worse, alpha=r.alpha_rollback, reason=r.reason,
    )  # fmt: skip
