"""The judge's result from the numbers of two looks: the one it reports and the latest one.

Both ways of judging a history build these numbers (the whole path at once in judge.py, the running
fold in judge_fold.py), so what status shows, the reason text and the "samples still needed"
projection are written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.bounded import information_to_cross
from lossgate.core.judge_types import MAX_SAMPLES_NEEDED, MIN_MARGIN_NATS, JudgeConfig, JudgeResult
from lossgate.core.verdicts import LossVerdict


@dataclass(frozen=True)
class ReportedLook:
    """The look the result reports: the first with the verdict, else the latest."""

    look: int  # 0-based
    crossed: int  # the look where the evidence crossed alpha (<= look), whose margin the test used
    margin: float  # the margin at `crossed`
    cs_low: float  # running intersection of the confidence sequence at `look`
    cs_high: float
    theta: float
    n_b: float
    n_c: float
    sum_b: float
    sum_c: float
    tail_b: float  # tail events in strata through `look`
    tail_c: float


@dataclass(frozen=True)
class LatestLook:
    """The latest look's numbers the verdict and the projection need."""

    looks: int
    dropped: int
    information: float
    n_c: float
    theta: float
    margin: float
    var_b: float  # predictable variances of the next stratum
    var_c: float
    log_p_regression: float
    log_p_not_worse: float
    log_p_catastrophic: float
    catastrophic: bool
    canary_fraction: float  # the split as the labelled samples see it


def report(
    decided: LossVerdict | None, at: ReportedLook, last: LatestLook, config: JudgeConfig
) -> JudgeResult:
    """The JudgeResult for a history whose verdict so far is `decided` (None: not decided)."""
    cs_low, cs_high = _shown_interval(decided, at.cs_low, at.cs_high)
    mean_b = at.sum_b / at.n_b if at.n_b > 0 else 0.0
    mean_c = at.sum_c / at.n_c if at.n_c > 0 else 0.0
    if decided is not None:
        verdict = decided
    elif last.information <= 0 or last.n_c < config.min_samples_before_rollback:
        verdict = LossVerdict.INSUFFICIENT_DATA
    else:
        verdict = LossVerdict.UNDECIDED

    samples_needed = 0
    if verdict in (LossVerdict.UNDECIDED, LossVerdict.INSUFFICIENT_DATA):
        samples_needed = _samples_needed(last, config)

    crossed = at.cs_low > at.cs_high
    drifted = "; the bounds crossed: the difference changed during the rollout" if crossed else ""
    numbers = (
        f"canary {mean_c:.4f} vs baseline {mean_b:.4f}: {at.theta:+.4f} nats "
        f"({100.0 * config.cs_level:.0f}% CS [{cs_low:+.4f}, {cs_high:+.4f}]{drifted}), "
        f"margin {at.margin:.4f}, {at.n_c:.0f} canary samples"
    )
    where = f" at look {at.look + 1}" if at.look != last.looks - 1 else ""
    if at.crossed != at.look:
        where += f" (evidence crossed at look {at.crossed + 1})"
    if verdict is LossVerdict.REGRESSION and last.catastrophic:
        detail = (
            f"{at.tail_c:.0f} of {at.n_c:.0f} vs {at.tail_b:.0f} of {at.n_b:.0f}; "
            f"p={_fmt_p(last.log_p_catastrophic)}"
        )
        reason = _reason(verdict, config, f"catastrophic{where}", detail, numbers, samples_needed)
    else:
        lp = last.log_p_regression if verdict is LossVerdict.REGRESSION else last.log_p_not_worse
        reason = _reason(
            verdict, config, where, f"p={_fmt_p(lp)}", numbers, samples_needed, last.information, at.n_c
        )

    return JudgeResult(
        verdict=verdict,
        theta_hat=at.theta,
        cs_low=cs_low,
        cs_high=cs_high,
        p_regression=math.exp(last.log_p_regression),
        p_not_worse=math.exp(last.log_p_not_worse),
        information=last.information,
        n_baseline=at.n_b,
        n_canary=at.n_c,
        mean_baseline=mean_b,
        mean_canary=mean_c,
        margin=at.margin,
        samples_needed=samples_needed,
        catastrophic=last.catastrophic,
        reason=reason,
        p_catastrophic=math.exp(last.log_p_catastrophic),
        cs_level=config.cs_level,
        looks=last.looks,
        dropped=last.dropped,
        decided_look=at.look,
    )


def _shown_interval(decided: LossVerdict | None, low: float, high: float) -> tuple[float, float]:
    """The interval to show. When the two one-sided bounds have crossed (their running intersection is
    empty: under a constant difference, a chance of at most alpha_rollback + alpha_promote; in
    practice the difference drifted), it is a point at the end the verdict reads off, so a regression
    is never shown beside an interval containing the margin nor a promotion beside one above it."""
    if low <= high:
        return low, high
    if decided is LossVerdict.REGRESSION:
        return low, low
    if decided is LossVerdict.NOT_WORSE:
        return high, high
    mid = 0.5 * (low + high)
    return mid, mid


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


def _samples_needed(last: LatestLook, config: JudgeConfig) -> int:
    """Further labelled canary samples until the current estimate would cross the boundary it is
    heading for, at the current split, and at least what the minimum-sample rules still require."""
    theta, margin, n_c, info = last.theta, last.margin, last.n_c, last.information
    if theta > margin:
        alpha, floor = config.alpha_rollback, config.min_samples_before_rollback
        already = last.log_p_regression <= math.log(alpha)
    else:
        alpha, floor = config.alpha_promote, config.min_samples_before_promote
        already = last.log_p_not_worse <= math.log(alpha)
    quota = max(floor - n_c, 0.0)
    if already:
        return clip_int(quota)
    if info <= 0:
        # No stratum yet: the estimate has no direction; the next milestone is the rollback quota.
        return clip_int(max(config.min_samples_before_rollback - n_c, 1.0))
    target = information_to_cross(abs(theta - margin), max(margin, MIN_MARGIN_NATS), info, alpha)
    p = last.canary_fraction
    if not math.isfinite(target) or not 0 < p < 1:
        return MAX_SAMPLES_NEEDED
    # Information per canary sample at split p: 1 / (var_c + var_b * p / (1 - p)).
    per_sample = last.var_c + last.var_b * p / (1.0 - p)
    return clip_int(max((target - info) * per_sample, quota))


def clip_int(x: float) -> int:
    if not x > 0:
        return 0
    return int(min(math.ceil(x), MAX_SAMPLES_NEEDED))


def _fmt_p(log_p: float) -> str:
    p = math.exp(log_p)
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def empty_result(config: JudgeConfig, reason: str) -> JudgeResult:
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
        samples_needed=clip_int(config.min_samples_before_rollback),
        catastrophic=False,
        reason=f"insufficient data: {reason}",
        cs_level=config.cs_level,
    )
