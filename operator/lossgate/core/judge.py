"""The sequential loss judge: is the canary's mean cross-entropy worse than the baseline's by more
than a margin, shown not worse, or not yet known? (docs/judge.md.)

`evaluate(intervals, config)` is pure and deterministic. It recomputes every look (every prefix of
the intervals) in one vectorised pass, so the always-valid p-values (the minimum over looks of
1/E) are correct from the interval history alone. `judge_path` is the same computation over arrays
shaped (..., K); the detection benchmark runs thousands of simulated rollouts through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.bounded import (
    NOT_WORSE,
    REGRESSION,
    components,
    confidence_bound,
    information_to_cross,
    log_e_value,
)
from lossgate.core.catastrophic import log_tail_mixture
from lossgate.core.evidence import IntervalStats
from lossgate.core.judge_types import (
    MAX_SAMPLES_NEEDED,
    MIN_MARGIN_NATS,
    BoolArray,
    FloatArray,
    JudgeConfig,
    JudgeResult,
)
from lossgate.core.stratified import ArmArrays, StratifiedPath, stratified_path
from lossgate.core.verdicts import LossVerdict

__all__ = [
    "MAX_LOSS_NATS",
    "MAX_SAMPLES_NEEDED",
    "MIN_MARGIN_NATS",
    "JudgeConfig",
    "JudgePath",
    "JudgeResult",
    "evaluate",
    "judge_path",
    "used_intervals",
]


@dataclass(frozen=True)
class JudgePath:
    """Per-look state of the judge over arrays shaped (..., K)."""

    estimator: StratifiedPath
    margin: FloatArray  # the margin at each look (resolved against the baseline's mean so far)
    scale: FloatArray  # the predictable margin each stratum's bets are scaled by
    log_p_regression: FloatArray  # running min over looks of -log E at that look's margin, <= 0
    log_p_not_worse: FloatArray
    log_p_catastrophic: FloatArray
    regression: BoolArray  # the judge says REGRESSION at this look
    not_worse: BoolArray  # the judge says NOT_WORSE at this look (and not REGRESSION)
    catastrophic: BoolArray


def used_intervals(weights: Sequence[float | None], drop_first_after_change: bool) -> BoolArray:
    """Which intervals enter the estimator: drop the first after every weight change.

    The rollout starts from 0% canary, so the first interval with a known weight is after a change.
    Unknown weights (None) never count as a change.
    """
    used = np.ones(len(weights), dtype=np.bool_)
    if not drop_first_after_change:
        return used
    last: float = 0.0
    for k, w in enumerate(weights):
        if w is None or not math.isfinite(w):
            continue
        if w != last:
            used[k] = False
        last = w
    return used


def _running_log_p(log_e: FloatArray) -> FloatArray:
    out: FloatArray = np.minimum.accumulate(np.minimum(-log_e, 0.0), axis=-1)
    return out


def judge_path(
    baseline: ArmArrays,
    canary: ArmArrays,
    tail_baseline: ArrayLike,
    tail_canary: ArrayLike,
    used: ArrayLike,
    config: JudgeConfig,
) -> JudgePath:
    """The judge at every look, vectorised over leading axes (intervals on the last axis)."""
    est = stratified_path(baseline, canary, used)
    mean_b = np.where(est.n_baseline > 0, est.sum_baseline / np.maximum(est.n_baseline, 1.0), 0.0)
    margin = config.resolve_margin(mean_b)
    scale = config.resolve_margin(est.centre_b)  # from data before each stratum: predictable
    log_e_reg = log_e_value(components(est, scale, REGRESSION), REGRESSION, margin)
    log_e_nw = log_e_value(components(est, scale, NOT_WORSE), NOT_WORSE, margin)
    log_p_reg = _running_log_p(log_e_reg)
    log_p_nw = _running_log_p(log_e_nw)

    log_cat = log_tail_mixture(
        tail_baseline, tail_canary, baseline.n, canary.n, est.stratum, config.catastrophic_ratio
    )
    log_p_cat = _running_log_p(log_cat)

    catastrophic = log_p_cat <= math.log(config.catastrophic_alpha)
    regression = catastrophic | (
        (log_p_reg <= math.log(config.alpha_rollback)) & (est.n_canary >= config.min_samples_before_rollback)
    )
    not_worse = (
        ~regression
        & (log_p_nw <= math.log(config.alpha_promote))
        & (est.n_canary >= config.min_samples_before_promote)
    )
    return JudgePath(est, margin, scale, log_p_reg, log_p_nw, log_p_cat, regression, not_worse, catastrophic)


def _arrays(intervals: Sequence[IntervalStats]) -> tuple[ArmArrays, ArmArrays, FloatArray, FloatArray]:
    b = [iv.baseline for iv in intervals]
    c = [iv.canary for iv in intervals]
    base = ArmArrays.of([a.n for a in b], [a.sum for a in b], [a.sumsq for a in b])
    can = ArmArrays.of([a.n for a in c], [a.sum for a in c], [a.sumsq for a in c])
    tb = np.asarray([a.tail for a in b], dtype=np.float64)
    tc = np.asarray([a.tail for a in c], dtype=np.float64)
    return base, can, tb, tc


def _canary_fraction(intervals: Sequence[IntervalStats], stratum: BoolArray) -> float:
    """Current split as labelled samples see it: the last stratum's canary share, else the weight."""
    for k in range(len(intervals) - 1, -1, -1):
        if stratum[k]:
            iv = intervals[k]
            return iv.canary.n / (iv.canary.n + iv.baseline.n)
    for iv in reversed(intervals):
        if iv.canary_weight is not None:
            return iv.canary_weight / 100.0
    return 0.0


def _clip_int(x: float) -> int:
    if not x > 0:
        return 0
    return int(min(math.ceil(x), MAX_SAMPLES_NEEDED))


def _fmt_p(log_p: float) -> str:
    p = math.exp(log_p)
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _first(flags: BoolArray) -> int:
    return int(np.argmax(flags)) if bool(flags.any()) else len(flags) - 1


def _running_bounds(path: JudgePath, config: JudgeConfig) -> tuple[FloatArray, FloatArray]:
    """The confidence sequence's running intersection after each look: the highest lower bound (at
    alpha_rollback) and the lowest upper bound (at alpha_promote) so far."""
    est = path.estimator
    low = confidence_bound(list(components(est, path.scale, REGRESSION)), REGRESSION, config.alpha_rollback)
    high = confidence_bound(list(components(est, path.scale, NOT_WORSE)), NOT_WORSE, config.alpha_promote)
    return np.maximum.accumulate(low), np.minimum.accumulate(high)


@dataclass(frozen=True)
class _Decision:
    verdict: LossVerdict | None  # None while undecided
    look: int  # the first look with this verdict (gates met), else the last look
    crossed: int  # the look where the evidence crossed alpha (<= look), whose margin the test used


def _decision(path: JudgePath, config: JudgeConfig) -> _Decision:
    """The verdict at the last look, the look it was first reached, and where its evidence crossed."""
    last = len(path.margin) - 1
    if bool(path.regression[-1]):
        look = _first(path.regression)
        if bool(path.catastrophic[look]):
            return _Decision(LossVerdict.REGRESSION, look, look)
        crossed = _first(path.log_p_regression <= math.log(config.alpha_rollback))
        return _Decision(LossVerdict.REGRESSION, look, crossed)
    if bool(path.not_worse[-1]):
        crossed = _first(path.log_p_not_worse <= math.log(config.alpha_promote))
        return _Decision(LossVerdict.NOT_WORSE, _first(path.not_worse), crossed)
    return _Decision(None, last, last)


def evaluate(intervals: Sequence[IntervalStats], config: JudgeConfig) -> JudgeResult:
    """The judge's verdict after the last of `intervals` (the rollout's whole history, in order)."""
    k_total = len(intervals)
    if k_total == 0:
        return _empty_result(config, "no analysis intervals yet")
    base, can, tb, tc = _arrays(intervals)
    used = used_intervals([iv.canary_weight for iv in intervals], config.drop_first_after_weight_change)
    path = judge_path(base, can, tb, tc, used, config)
    est = path.estimator
    low_running, high_running = _running_bounds(path, config)
    decision = _decision(path, config)
    decided, k, last = decision.verdict, decision.look, k_total - 1

    info = float(est.information[last])
    n_c_now = float(est.n_canary[last])
    # The running intersection of the bounds at the decision look (the last while undecided): valid,
    # never wider than any one look's, and, once decided, past the margin the crossing look tested.
    cs_low, cs_high = float(low_running[k]), float(high_running[k])
    if cs_low > cs_high:  # the two one-sided bounds crossed (chance <= alpha_r + alpha_p): a point
        cs_low = cs_high = 0.5 * (cs_low + cs_high)
    theta, margin = float(est.theta_hat[k]), float(path.margin[decision.crossed])
    n_b, n_c = float(est.n_baseline[k]), float(est.n_canary[k])
    mean_b = float(est.sum_baseline[k]) / n_b if n_b > 0 else 0.0
    mean_c = float(est.sum_canary[k]) / n_c if n_c > 0 else 0.0
    lp_reg, lp_nw = float(path.log_p_regression[last]), float(path.log_p_not_worse[last])
    lp_cat = float(path.log_p_catastrophic[last])
    catastrophic = bool(path.catastrophic[last])

    if decided is not None:
        verdict = decided
    elif info <= 0 or n_c_now < config.min_samples_before_rollback:
        verdict = LossVerdict.INSUFFICIENT_DATA
    else:
        verdict = LossVerdict.UNDECIDED

    samples_needed = 0
    if verdict in (LossVerdict.UNDECIDED, LossVerdict.INSUFFICIENT_DATA):
        samples_needed = _samples_needed(intervals, path, config, lp_reg, lp_nw)

    numbers = (
        f"canary {mean_c:.4f} vs baseline {mean_b:.4f}: {theta:+.4f} nats "
        f"({100.0 * config.cs_level:.0f}% CS [{cs_low:+.4f}, {cs_high:+.4f}]), margin {margin:.4f}, "
        f"{n_c:.0f} canary samples"
    )
    at = f" at look {k + 1}" if k != last else ""
    if decision.crossed != k:
        at += f" (evidence crossed at look {decision.crossed + 1})"
    if verdict is LossVerdict.REGRESSION and catastrophic:
        tail_b = float(np.sum(np.where(est.stratum[: k + 1], tb[: k + 1], 0.0)))
        tail_c = float(np.sum(np.where(est.stratum[: k + 1], tc[: k + 1], 0.0)))
        detail = f"{tail_c:.0f} of {n_c:.0f} vs {tail_b:.0f} of {n_b:.0f}; p={_fmt_p(lp_cat)}"
        reason = _reason(verdict, config, f"catastrophic{at}", detail, numbers, samples_needed)
    else:
        p = lp_reg if verdict is LossVerdict.REGRESSION else lp_nw
        reason = _reason(verdict, config, at, f"p={_fmt_p(p)}", numbers, samples_needed, info, n_c)

    return JudgeResult(
        verdict=verdict,
        theta_hat=theta,
        cs_low=cs_low,
        cs_high=cs_high,
        p_regression=math.exp(lp_reg),
        p_not_worse=math.exp(lp_nw),
        information=info,
        n_baseline=n_b,
        n_canary=n_c,
        mean_baseline=mean_b,
        mean_canary=mean_c,
        margin=margin,
        samples_needed=samples_needed,
        catastrophic=catastrophic,
        reason=reason,
        p_catastrophic=math.exp(lp_cat),
        cs_level=config.cs_level,
        looks=k_total,
        dropped=int(np.count_nonzero(~used)),
        decided_look=k,
    )


def _reason(
    verdict: LossVerdict,
    config: JudgeConfig,
    at: str,
    detail: str,
    numbers: str,
    samples_needed: int,
    info: float = 1.0,
    n_c: float = 0.0,
) -> str:
    """The one-line explanation that goes into status, Events and the CLI."""
    if at.startswith("catastrophic"):
        return (
            f"{at}: canary rate of very large losses above {config.catastrophic_ratio:g}x the "
            f"baseline's ({detail}); {numbers}"
        )
    if verdict is LossVerdict.REGRESSION:
        return f"regression{at}: the whole interval is above the margin ({detail}); {numbers}"
    if verdict is LossVerdict.NOT_WORSE:
        return f"not worse{at}: the whole interval is below the margin ({detail}); {numbers}"
    if info <= 0:
        return f"insufficient data: no interval with both arms labelled yet ({n_c:.0f} canary samples)"
    if verdict is LossVerdict.INSUFFICIENT_DATA:
        return (
            f"insufficient data: {n_c:.0f}/{config.min_samples_before_rollback:.0f} canary samples "
            f"before any decision; {numbers}"
        )
    return f"undecided: about {samples_needed} more canary samples needed; {numbers}"


def _samples_needed(
    intervals: Sequence[IntervalStats], path: JudgePath, config: JudgeConfig, lp_reg: float, lp_nw: float
) -> int:
    """Further labelled canary samples until the current estimate would cross the boundary it is
    heading for, at the current split, and at least what the minimum-sample rules still require."""
    est = path.estimator
    info = float(est.information[-1])
    theta, margin = float(est.theta_hat[-1]), float(path.margin[-1])
    n_c = float(est.n_canary[-1])
    if theta > margin:
        alpha, floor = config.alpha_rollback, config.min_samples_before_rollback
        already = lp_reg <= math.log(alpha)
    else:
        alpha, floor = config.alpha_promote, config.min_samples_before_promote
        already = lp_nw <= math.log(alpha)
    quota = max(floor - n_c, 0.0)
    if already:
        return _clip_int(quota)
    if info <= 0:
        # No stratum yet: the estimate has no direction; the next milestone is the rollback quota.
        return _clip_int(max(config.min_samples_before_rollback - n_c, 1.0))
    target = information_to_cross(abs(theta - margin), max(margin, MIN_MARGIN_NATS), info, alpha)
    p = _canary_fraction(intervals, est.stratum)
    if not math.isfinite(target) or not 0 < p < 1:
        return MAX_SAMPLES_NEEDED
    var_b, var_c = float(est.var_baseline[-1]), float(est.var_canary[-1])
    # Information per canary sample at split p: 1 / (var_c + var_b * p / (1 - p)).
    per_sample = var_c + var_b * p / (1.0 - p)
    return _clip_int(max((target - info) * per_sample, quota))


def _empty_result(config: JudgeConfig, reason: str) -> JudgeResult:
    margin = config.margin if config.margin is not None else 0.0
    return JudgeResult(
        verdict=LossVerdict.INSUFFICIENT_DATA,
        theta_hat=0.0,
        cs_low=-MAX_LOSS_NATS,
        cs_high=MAX_LOSS_NATS,
        p_regression=1.0,
        p_not_worse=1.0,
        information=0.0,
        n_baseline=0.0,
        n_canary=0.0,
        mean_baseline=0.0,
        mean_canary=0.0,
        margin=margin,
        samples_needed=_clip_int(config.min_samples_before_rollback),
        catastrophic=False,
        reason=f"insufficient data: {reason}",
        cs_level=config.cs_level,
    )
