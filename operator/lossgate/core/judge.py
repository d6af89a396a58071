"""The sequential loss judge: is the canary's mean cross-entropy worse than the baseline's by more
than a margin, shown not worse, or not yet known? (docs/judge.md.)

`evaluate(intervals, config)` is pure and deterministic. It recomputes every look (every prefix of
the intervals) in one vectorised pass, so the always-valid p-values (the minimum over looks of
1/E) are correct from the interval history alone. `judge_path` is the same computation over arrays
shaped (..., K); the detection benchmark runs thousands of simulated rollouts through it. The
operator judges a live rollout with the running fold in judge_fold.py, which continues the same
path chunk by chunk (`start=`); evaluate() is its oracle in tests and what `lossgate replay` uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.bounded import (
    NOT_WORSE,
    REGRESSION,
    Component,
    components,
    confidence_bound,
    last_look,
    log_e_value,
)
from lossgate.core.catastrophic import log_tail_mixture
from lossgate.core.evidence import IntervalStats
from lossgate.core.judge_report import LatestLook, ReportedLook, empty_result, report
from lossgate.core.judge_types import (
    MAX_SAMPLES_NEEDED,
    MIN_MARGIN_NATS,
    BoolArray,
    FloatArray,
    JudgeConfig,
    JudgeResult,
)
from lossgate.core.stratified import ArmArrays, StratifiedPath, Totals, stratified_path, totals_at
from lossgate.core.verdicts import LossVerdict

__all__ = [
    "MAX_LOSS_NATS",
    "MAX_SAMPLES_NEEDED",
    "MIN_MARGIN_NATS",
    "JudgeConfig",
    "JudgePath",
    "JudgeResult",
    "PathStart",
    "evaluate",
    "judge_path",
    "used_intervals",
]


@dataclass(frozen=True)
class PathStart:
    """Where a chunk of further intervals continues a judged history: the state after its last look."""

    totals: Totals = field(default_factory=Totals)
    regression: tuple[Component, ...] | None = None  # the grid's components (None: no look yet)
    not_worse: tuple[Component, ...] | None = None
    tail_llr: FloatArray | None = None  # the catastrophic guard's per-alternative log LR
    log_p_regression: FloatArray | float = 0.0
    log_p_not_worse: FloatArray | float = 0.0
    log_p_catastrophic: FloatArray | float = 0.0


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
    end: PathStart  # the state after the last look, for continuing with further intervals
    parts: tuple[tuple[Component, ...], tuple[Component, ...]] | None = None  # kept for 1-D paths


def used_intervals(
    weights: Sequence[float | None], drop_first_after_change: bool, last: float = 0.0
) -> BoolArray:
    """Which intervals enter the estimator: drop the first after every weight change.

    The rollout starts from 0% canary, so the first interval with a known weight is after a change.
    Unknown weights (None) never count as a change. `last`: the known weight before these intervals.
    """
    used = np.ones(len(weights), dtype=np.bool_)
    if not drop_first_after_change:
        return used
    for k, w in enumerate(weights):
        if w is None or not math.isfinite(w):
            continue
        if w != last:
            used[k] = False
        last = w
    return used


def _running_log_p(log_e: FloatArray, start: FloatArray | float) -> FloatArray:
    """Running minimum over looks of min(-log E, 0), continuing from `start`."""
    x = np.minimum(-log_e, 0.0)
    head = np.broadcast_to(np.asarray(start, dtype=np.float64)[..., None], (*x.shape[:-1], 1))
    out: FloatArray = np.minimum.accumulate(np.concatenate([head, x], axis=-1), axis=-1)[..., 1:]
    return out


class _Recorded:
    """Streams components through while keeping each one's last look (the state to continue from),
    and every look too when `keep` (short paths: the confidence bounds reuse them)."""

    def __init__(self, parts: Iterable[Component], keep: bool) -> None:
        self.parts, self.last, self.keep = parts, list[Component](), keep
        self.all: list[Component] = []

    def __iter__(self) -> Iterator[Component]:
        for p in self.parts:
            self.last.extend(last_look([p]))
            if self.keep:
                self.all.append(p)
            yield p


def judge_path(
    baseline: ArmArrays,
    canary: ArmArrays,
    tail_baseline: ArrayLike,
    tail_canary: ArrayLike,
    used: ArrayLike,
    config: JudgeConfig,
    start: PathStart | None = None,
) -> JudgePath:
    """The judge at every look, vectorised over leading axes (intervals on the last axis), continuing
    from `start` (the state after earlier intervals; a fresh history without it)."""
    s0 = start or PathStart()
    est = stratified_path(baseline, canary, used, s0.totals, (tail_baseline, tail_canary))
    mean_b = np.where(est.n_baseline > 0, est.sum_baseline / np.maximum(est.n_baseline, 1.0), 0.0)
    margin = config.resolve_margin(mean_b)
    scale = config.resolve_margin(est.centre_b)  # from data before each stratum: predictable
    keep = est.stratum.ndim == 1  # one history (not the benchmark's thousands): keep for the bounds
    reg = _Recorded(components(est, scale, REGRESSION, s0.regression), keep)
    nw = _Recorded(components(est, scale, NOT_WORSE, s0.not_worse), keep)
    log_p_reg = _running_log_p(log_e_value(reg, REGRESSION, margin), s0.log_p_regression)
    log_p_nw = _running_log_p(log_e_value(nw, NOT_WORSE, margin), s0.log_p_not_worse)

    log_cat, tail_llr = log_tail_mixture(
        tail_baseline, tail_canary, baseline.n, canary.n, est.stratum, config.catastrophic_ratio, s0.tail_llr
    )
    log_p_cat = _running_log_p(log_cat, s0.log_p_catastrophic)

    catastrophic = log_p_cat <= math.log(config.catastrophic_alpha)
    regression = catastrophic | (
        (log_p_reg <= math.log(config.alpha_rollback)) & (est.n_canary >= config.min_samples_before_rollback)
    )
    not_worse = (
        ~regression
        & (log_p_nw <= math.log(config.alpha_promote))
        & (est.n_canary >= config.min_samples_before_promote)
    )
    end = PathStart(
        totals=totals_at(est),
        regression=tuple(reg.last),
        not_worse=tuple(nw.last),
        tail_llr=tail_llr,
        log_p_regression=log_p_reg[..., -1],
        log_p_not_worse=log_p_nw[..., -1],
        log_p_catastrophic=log_p_cat[..., -1],
    )
    return JudgePath(
        est, margin, scale, log_p_reg, log_p_nw, log_p_cat, regression, not_worse, catastrophic, end,
        (tuple(reg.all), tuple(nw.all)) if keep else None,
    )  # fmt: skip


def interval_arrays(
    intervals: Sequence[IntervalStats],
) -> tuple[ArmArrays, ArmArrays, FloatArray, FloatArray]:
    b = [iv.baseline for iv in intervals]
    c = [iv.canary for iv in intervals]
    base = ArmArrays.of([a.n for a in b], [a.sum for a in b], [a.sumsq for a in b])
    can = ArmArrays.of([a.n for a in c], [a.sum for a in c], [a.sumsq for a in c])
    tb = np.asarray([a.tail for a in b], dtype=np.float64)
    tc = np.asarray([a.tail for a in c], dtype=np.float64)
    return base, can, tb, tc


def canary_fraction(iv: IntervalStats) -> float:
    """The split as one stratum's labelled samples see it."""
    return iv.canary.n / (iv.canary.n + iv.baseline.n)


def _canary_fraction(intervals: Sequence[IntervalStats], stratum: BoolArray) -> float:
    """Current split as labelled samples see it: the last stratum's canary share, else the weight."""
    for k in range(len(intervals) - 1, -1, -1):
        if stratum[k]:
            return canary_fraction(intervals[k])
    for iv in reversed(intervals):
        if iv.canary_weight is not None:
            return iv.canary_weight / 100.0
    return 0.0


def _first(flags: BoolArray) -> int:
    return int(np.argmax(flags)) if bool(flags.any()) else len(flags) - 1


def running_bounds(
    path: JudgePath,
    config: JudgeConfig,
    start: PathStart | None = None,
    cs: tuple[float, float] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """The confidence sequence's running intersection after each look: the highest lower bound (at
    alpha_rollback) and the lowest upper bound (at alpha_promote) so far, continuing from `cs`."""
    est, s0 = path.estimator, start or PathStart()
    if path.parts is not None:
        reg, nw = path.parts
    else:
        reg = tuple(components(est, path.scale, REGRESSION, s0.regression))
        nw = tuple(components(est, path.scale, NOT_WORSE, s0.not_worse))
    low = confidence_bound(reg, REGRESSION, config.alpha_rollback)
    high = confidence_bound(nw, NOT_WORSE, config.alpha_promote)
    if cs is not None:
        low, high = np.maximum(low, cs[0]), np.minimum(high, cs[1])
    return np.maximum.accumulate(low, axis=-1), np.minimum.accumulate(high, axis=-1)


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


def reported_look(
    path: JudgePath, bounds: tuple[FloatArray, FloatArray], k: int, crossed: int, offset: int = 0
) -> ReportedLook:
    """The numbers of look k of `path` (1-D), numbered from `offset` (the looks before the path)."""
    est = path.estimator
    return ReportedLook(
        look=offset + k,
        crossed=offset + crossed,
        margin=float(path.margin[crossed]),
        cs_low=float(bounds[0][k]),
        cs_high=float(bounds[1][k]),
        theta=float(est.theta_hat[k]),
        n_b=float(est.n_baseline[k]),
        n_c=float(est.n_canary[k]),
        sum_b=float(est.sum_baseline[k]),
        sum_c=float(est.sum_canary[k]),
        tail_b=float(est.tail_baseline[k]),
        tail_c=float(est.tail_canary[k]),
    )


def latest_look(path: JudgePath, looks: int, dropped: int, canary_share: float) -> LatestLook:
    est = path.estimator
    return LatestLook(
        looks=looks,
        dropped=dropped,
        information=float(est.information[-1]),
        n_c=float(est.n_canary[-1]),
        theta=float(est.theta_hat[-1]),
        margin=float(path.margin[-1]),
        var_b=float(est.var_baseline[-1]),
        var_c=float(est.var_canary[-1]),
        log_p_regression=float(path.log_p_regression[-1]),
        log_p_not_worse=float(path.log_p_not_worse[-1]),
        log_p_catastrophic=float(path.log_p_catastrophic[-1]),
        catastrophic=bool(path.catastrophic[-1]),
        canary_fraction=canary_share,
    )


def evaluate(intervals: Sequence[IntervalStats], config: JudgeConfig) -> JudgeResult:
    """The judge's verdict after the last of `intervals` (the rollout's whole history, in order)."""
    if not intervals:
        return empty_result(config, "no analysis intervals yet")
    base, can, tb, tc = interval_arrays(intervals)
    used = used_intervals([iv.canary_weight for iv in intervals], config.drop_first_after_weight_change)
    path = judge_path(base, can, tb, tc, used, config)
    decision = _decision(path, config)
    at = reported_look(path, running_bounds(path, config), decision.look, decision.crossed)
    dropped = int(np.count_nonzero(~used))
    last = latest_look(path, len(intervals), dropped, _canary_fraction(intervals, path.estimator.stratum))
    return report(decision.verdict, at, last, config)
