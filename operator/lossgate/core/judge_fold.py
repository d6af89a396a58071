"""The judge as a running fold: the state after the intervals judged so far, continued each tick.

A live rollout's evidence grows by an interval or two per tick. Re-judging its whole history each tick
makes the cost grow with the rollout's age; the fold keeps what the next look needs instead: the
running sums over strata, each grid component's cumulative log e-value, the tail guard's likelihood
ratios, the running minima of the p-values and the running intersection of the confidence sequence,
and the numbers of the looks a verdict reports. Its size is fixed (about 200 numbers), whatever the age.

`advance(fold, intervals, config)` continues the same vectorised path judge.py computes, so folding a
history in any chunks gives bitwise the verdict and numbers of `evaluate()` over the whole history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.evidence import IntervalStats
from lossgate.core.judge import (
    JudgePath,
    PathStart,
    canary_fraction,
    interval_arrays,
    judge_path,
    latest_look,
    reported_look,
    running_bounds,
    used_intervals,
)
from lossgate.core.judge_report import LatestLook, ReportedLook, empty_result, report
from lossgate.core.judge_types import JudgeConfig, JudgeResult
from lossgate.core.verdicts import LossVerdict


@dataclass(frozen=True)
class Crossing:
    """The first look where a test's p-value reached its alpha, and the margin it was tested at."""

    look: int
    margin: float


@dataclass(frozen=True)
class JudgeFold:
    """The judge's state after `looks` intervals (a fresh history: JudgeFold())."""

    looks: int = 0
    dropped: int = 0
    last_weight: float | None = None  # the last known canary weight (drop-after-change rule)
    last_share: float | None = None  # canary share of the labelled samples in the last stratum
    path: PathStart = field(default_factory=PathStart)
    cs: tuple[float, float] = (-MAX_LOSS_NATS, MAX_LOSS_NATS)  # running intersection of the bounds
    regression_crossed: Crossing | None = None
    not_worse_crossed: Crossing | None = None
    regression_at: ReportedLook | None = None  # the first look judged REGRESSION
    not_worse_at: ReportedLook | None = None  # the first look judged NOT_WORSE
    latest_at: ReportedLook | None = None  # the latest look's reported numbers
    latest: LatestLook | None = None


def advance(fold: JudgeFold, intervals: Sequence[IntervalStats], config: JudgeConfig) -> JudgeFold:
    """The state after `intervals` more (closed, in order, on the same grid as those before)."""
    if not intervals:
        return fold
    base, can, tb, tc = interval_arrays(intervals)
    weights = [iv.canary_weight for iv in intervals]
    used = used_intervals(weights, config.drop_first_after_weight_change, fold.last_weight or 0.0)
    path = judge_path(base, can, tb, tc, used, config, fold.path)
    low, high = running_bounds(path, config, fold.path, fold.cs)
    offset, k_last = fold.looks, len(intervals) - 1

    reg_cross = fold.regression_crossed or _crossing(
        path, path.log_p_regression, config.alpha_rollback, offset
    )
    nw_cross = fold.not_worse_crossed or _crossing(path, path.log_p_not_worse, config.alpha_promote, offset)
    regression_at = fold.regression_at
    if regression_at is None and bool(path.regression.any()):
        k = int(np.argmax(path.regression))
        regression_at = _at(path, (low, high), k, offset, None if path.catastrophic[k] else reg_cross)
    not_worse_at = fold.not_worse_at
    if not_worse_at is None and regression_at is None and bool(path.not_worse.any()):
        not_worse_at = _at(path, (low, high), int(np.argmax(path.not_worse)), offset, nw_cross)

    stratum = path.estimator.stratum
    strata = np.flatnonzero(stratum)
    share = canary_fraction(intervals[int(strata[-1])]) if strata.size else fold.last_share
    known = [float(w) for w in weights if w is not None and math.isfinite(w)]
    last_weight = known[-1] if known else fold.last_weight
    dropped = fold.dropped + int(np.count_nonzero(~used))
    looks = offset + len(intervals)
    fraction = share if share is not None else (last_weight / 100.0 if last_weight is not None else 0.0)
    return replace(
        fold,
        looks=looks,
        dropped=dropped,
        last_weight=last_weight,
        last_share=share,
        path=path.end,
        cs=(float(low[-1]), float(high[-1])),
        regression_crossed=reg_cross,
        not_worse_crossed=nw_cross,
        regression_at=regression_at,
        not_worse_at=not_worse_at,
        latest_at=reported_look(path, (low, high), k_last, k_last, offset),
        latest=latest_look(path, looks, dropped, fraction),
    )


def conclude(fold: JudgeFold, config: JudgeConfig) -> JudgeResult:
    """The judge's result after the intervals folded so far (what evaluate() gives for them)."""
    if fold.latest is None or fold.latest_at is None:
        return empty_result(config, "no analysis intervals yet")
    if fold.regression_at is not None:
        return report(LossVerdict.REGRESSION, fold.regression_at, fold.latest, config)
    if fold.not_worse_at is not None:
        return report(LossVerdict.NOT_WORSE, fold.not_worse_at, fold.latest, config)
    return report(None, fold.latest_at, fold.latest, config)


def _crossing(path: JudgePath, log_p: np.ndarray, alpha: float, offset: int) -> Crossing | None:
    hit = log_p <= math.log(alpha)
    if not bool(hit.any()):
        return None
    k = int(np.argmax(hit))
    return Crossing(offset + k, float(path.margin[k]))


def _at(
    path: JudgePath,
    bounds: tuple[np.ndarray, np.ndarray],
    k: int,
    offset: int,
    crossed: Crossing | None,
) -> ReportedLook:
    """Look k of this chunk as reported; its evidence crossed at `crossed` (None: at k itself)."""
    at = reported_look(path, bounds, k, k, offset)
    if crossed is None:
        return at
    return replace(at, crossed=crossed.look, margin=crossed.margin)
