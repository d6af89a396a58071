"""The sequential loss judge: is the canary's mean cross-entropy worse than the baseline's by more
than a margin, shown not worse, or not yet known? (STATISTICS.md; docs/judge.md.)

`evaluate(intervals, config)` is pure and deterministic. It recomputes every look (every prefix of
the intervals) in one vectorised pass, so the always-valid p-values (the minimum over looks of
1/Lambda) are correct from the interval history alone: no state needs to survive an operator restart.
`judge_path` is the same computation over arrays shaped (..., K); the detection benchmark runs
thousands of simulated rollouts through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from lossgate.core.catastrophic import log_tail_mixture
from lossgate.core.evidence import IntervalStats
from lossgate.core.judge_types import (
    DEFAULT_PLAN_POWER,
    DEFAULT_RHO_SCALES,
    LOSS_BOUND_NATS,
    MAX_SAMPLES_NEEDED,
    MIN_MARGIN_NATS,
    BoolArray,
    FloatArray,
    JudgeConfig,
    JudgeResult,
)
from lossgate.core.mixture import (
    cs_half_width_mixture,
    information_to_cross,
    log_lambda_mixture,
)
from lossgate.core.stratified import ArmArrays, StratifiedPath, arm_valid, stratified_path
from lossgate.core.verdicts import LossVerdict

__all__ = [
    "DEFAULT_PLAN_POWER",
    "DEFAULT_RHO_SCALES",
    "LOSS_BOUND_NATS",
    "MAX_SAMPLES_NEEDED",
    "MIN_MARGIN_NATS",
    "JudgeConfig",
    "JudgePath",
    "JudgeResult",
    "evaluate",
    "judge_path",
    "planned_information",
    "used_intervals",
]


@dataclass(frozen=True)
class JudgePath:
    """Per-look state of the judge over arrays shaped (..., K)."""

    estimator: StratifiedPath
    margin: FloatArray
    rho: FloatArray
    log_p_regression: FloatArray  # running min over looks of -log Lambda, <= 0
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
    rho = config.resolve_rho(margin)
    info = est.information
    lam_reg = log_lambda_mixture(info * (est.theta_hat - margin), info, rho, config.rho_scales)
    lam_nw = log_lambda_mixture(info * (margin - est.theta_hat), info, rho, config.rho_scales)
    log_p_reg = np.minimum.accumulate(np.minimum(-lam_reg, 0.0), axis=-1)
    log_p_nw = np.minimum.accumulate(np.minimum(-lam_nw, 0.0), axis=-1)

    valid = arm_valid(baseline, used) & arm_valid(canary, used)
    log_cat = log_tail_mixture(
        tail_baseline, tail_canary, baseline.n, canary.n, valid, config.catastrophic_ratio
    )
    log_p_cat = np.minimum.accumulate(np.minimum(-log_cat, 0.0), axis=-1)

    catastrophic = log_p_cat <= math.log(config.catastrophic_alpha)
    regression = catastrophic | (
        (log_p_reg <= math.log(config.alpha_rollback)) & (est.n_canary >= config.min_samples_before_rollback)
    )
    not_worse = (
        ~regression
        & (log_p_nw <= math.log(config.alpha_promote))
        & (est.n_canary >= config.min_samples_before_promote)
    )
    return JudgePath(est, margin, rho, log_p_reg, log_p_nw, log_p_cat, regression, not_worse, catastrophic)


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


def evaluate(intervals: Sequence[IntervalStats], config: JudgeConfig) -> JudgeResult:
    """The judge's verdict after the last of `intervals` (the rollout's whole history, in order)."""
    k_total = len(intervals)
    if k_total == 0:
        return _empty_result(config, "no analysis intervals yet")
    base, can, tb, tc = _arrays(intervals)
    used = used_intervals([iv.canary_weight for iv in intervals], config.drop_first_after_weight_change)
    path = judge_path(base, can, tb, tc, used, config)
    est = path.estimator

    info = float(est.information[-1])
    theta = float(est.theta_hat[-1])
    margin = float(path.margin[-1])
    rho = float(path.rho[-1])
    n_b, n_c = float(est.n_baseline[-1]), float(est.n_canary[-1])
    mean_b = float(est.sum_baseline[-1]) / n_b if n_b > 0 else 0.0
    mean_c = float(est.sum_canary[-1]) / n_c if n_c > 0 else 0.0
    lp_reg, lp_nw = float(path.log_p_regression[-1]), float(path.log_p_not_worse[-1])
    lp_cat = float(path.log_p_catastrophic[-1])
    catastrophic = bool(path.catastrophic[-1])

    if info > 0:
        half = cs_half_width_mixture(info, rho, config.rho_scales, config.cs_alpha)
        cs_low, cs_high = theta - half, theta + half
    else:
        cs_low, cs_high = -LOSS_BOUND_NATS, LOSS_BOUND_NATS

    if bool(path.regression[-1]):
        verdict = LossVerdict.REGRESSION
    elif bool(path.not_worse[-1]):
        verdict = LossVerdict.NOT_WORSE
    elif info <= 0 or n_c < config.min_samples_before_rollback:
        verdict = LossVerdict.INSUFFICIENT_DATA
    else:
        verdict = LossVerdict.UNDECIDED

    samples_needed = 0
    if verdict in (LossVerdict.UNDECIDED, LossVerdict.INSUFFICIENT_DATA):
        samples_needed = _samples_needed(intervals, path, config, lp_reg, lp_nw)

    pct = 100.0 * (1.0 - config.cs_alpha)
    numbers = (
        f"canary {mean_c:.4f} vs baseline {mean_b:.4f}: {theta:+.4f} nats "
        f"({pct:.0f}% CS [{cs_low:+.4f}, {cs_high:+.4f}]), margin {margin:.4f}, "
        f"{n_c:.0f} canary samples"
    )
    if verdict is LossVerdict.REGRESSION and catastrophic:
        reason = (
            f"catastrophic: canary rate of losses > 4.6 nats above {config.catastrophic_ratio:g}x "
            f"baseline's (p={_fmt_p(lp_cat)}); {numbers}"
        )
    elif verdict is LossVerdict.REGRESSION:
        reason = f"regression: worse by more than the margin (p={_fmt_p(lp_reg)}); {numbers}"
    elif verdict is LossVerdict.NOT_WORSE:
        reason = f"not worse by more than the margin (p={_fmt_p(lp_nw)}); {numbers}"
    elif info <= 0:
        reason = f"insufficient data: no interval with both arms labelled yet ({n_c:.0f} canary samples)"
    elif verdict is LossVerdict.INSUFFICIENT_DATA:
        reason = (
            f"insufficient data: {n_c:.0f}/{config.min_samples_before_rollback:.0f} canary samples "
            f"before any decision; {numbers}"
        )
    else:
        reason = f"undecided: about {samples_needed} more canary samples needed; {numbers}"

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
        rho=rho,
        looks=k_total,
        dropped=int(np.count_nonzero(~used)),
    )


def _samples_needed(
    intervals: Sequence[IntervalStats], path: JudgePath, config: JudgeConfig, lp_reg: float, lp_nw: float
) -> int:
    """Further labelled canary samples until the current estimate would cross the boundary it is
    heading for, at the current split, and at least what the minimum-sample rules still require."""
    est = path.estimator
    info = float(est.information[-1])
    theta, margin, rho = float(est.theta_hat[-1]), float(path.margin[-1]), float(path.rho[-1])
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
    target = information_to_cross(abs(theta - margin), info, rho, alpha, config.rho_scales)
    p = _canary_fraction(intervals, est.stratum)
    if not math.isfinite(target) or not 0 < p < 1:
        return MAX_SAMPLES_NEEDED
    var_b, var_c = float(est.var_baseline[-1]), float(est.var_canary[-1])
    # Information per canary sample at split p: 1 / (max(var_c, var_b) + var_b * p / (1 - p)).
    per_sample = max(var_c, var_b) + var_b * p / (1.0 - p)
    return _clip_int(max((target - info) * per_sample, quota))


def _empty_result(config: JudgeConfig, reason: str) -> JudgeResult:
    margin = config.margin if config.margin is not None else 0.0
    rho = float(config.resolve_rho(margin))
    return JudgeResult(
        verdict=LossVerdict.INSUFFICIENT_DATA,
        theta_hat=0.0,
        cs_low=-LOSS_BOUND_NATS,
        cs_high=LOSS_BOUND_NATS,
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
        rho=rho,
    )


def planned_information(steps: Sequence[tuple[float, float]], variance: float) -> float:
    """Information a plan is expected to yield: sum over steps of n_s p_s (1 - p_s) / sigma^2.

    `steps` holds (labelled samples of both arms during the step, canary fraction p_s in [0, 1]).
    Pass the steps up to the end of the 25% step to get the I* that `planned_information` wants.
    """
    if not (math.isfinite(variance) and variance > 0):
        raise ValueError(f"variance must be finite and > 0, got {variance!r}")
    total = sum(n * p * (1.0 - p) for n, p in steps if n > 0 and 0 <= p <= 1)
    return total / variance
