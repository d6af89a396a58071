"""Numeric building blocks of the gradient-health gate: trailing robust z-scores, spike events and
their recovery, loss-scale collapse, cross-rank divergence, non-finite counting. Pure numpy."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from scipy import special

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD of a normal sample times this estimates its sd
_STRIDE_DIVISOR = 30  # trailing statistics are refreshed every window // 30 points


@dataclass(frozen=True)
class Trailing:
    """Robust location and scale of the `window` points before each point (excluded)."""

    median: FloatArray  # NaN where there is too little history
    scale: FloatArray  # 1.4826 MAD, floored; NaN where there is too little history


def safe_log(x: FloatArray) -> FloatArray:
    """log of finite positive values; NaN (missing) for everything else."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(np.isfinite(x) & (x > 0), np.log(np.where(x > 0, x, 1.0)), np.nan)
    return out


def trailing_robust(x: FloatArray, window: int, min_history: int, scale_floor: float) -> Trailing:
    """Median and 1.4826 * MAD of the previous `window` points, ignoring NaN; the scale is floored so
    a flat series (MAD 0) cannot make a tiny wiggle look like a spike.

    The statistics are computed every `window // 30` points and held in between (a window of 300
    then ends at most 9 points before the point it judges): a robust baseline moves slowly, and this
    keeps the gate's cost linear in the series length with a small constant.
    """
    t_len = len(x)
    stride = max(1, window // _STRIDE_DIVISOR)
    anchors = np.arange(0, t_len, stride)
    if t_len == 0:
        return Trailing(np.full(0, np.nan), np.full(0, np.nan))
    padded = np.concatenate([np.full(window, np.nan), x])
    windows = sliding_window_view(padded, window)[anchors]  # row i = x[a_i - window : a_i]
    missing = np.isnan(windows)
    count = window - np.count_nonzero(missing, axis=1)
    med = np.full(len(anchors), np.nan)
    mad = np.full(len(anchors), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows at the start
        gappy = missing.any(axis=1)
        # np.median is several times faster than np.nanmedian; use it on windows with nothing missing.
        for rows, median in ((gappy, np.nanmedian), (~gappy, np.median)):
            if rows.any():
                block = windows[rows]
                m = median(block, axis=1)
                med[rows] = m
                mad[rows] = median(np.abs(block - m[:, None]), axis=1)
    enough = count >= min_history
    med_t = np.repeat(np.where(enough, med, np.nan), stride)[:t_len]
    scale_t = np.repeat(np.where(enough, np.maximum(MAD_TO_SD * mad, scale_floor), np.nan), stride)[:t_len]
    return Trailing(med_t, scale_t)


def robust_z(x: FloatArray, trailing: Trailing) -> FloatArray:
    """(x - median) / scale; NaN where x is missing or there is too little history."""
    with np.errstate(invalid="ignore"):
        out: FloatArray = (x - trailing.median) / trailing.scale
    return out


def event_starts(flags: BoolArray) -> IntArray:
    """Indices where a run of consecutive True starts: a spike lasting several points is one event."""
    if len(flags) == 0:
        return np.zeros(0, dtype=np.int64)
    prev = np.concatenate([[False], flags[:-1]])
    out: IntArray = np.flatnonzero(flags & ~prev).astype(np.int64)
    return out


def max_events_in_window(events: IntArray, span: int) -> int:
    """Largest number of events in any `span` consecutive points."""
    if len(events) == 0:
        return 0
    ends = np.searchsorted(events, events + span, side="left")
    return int(np.max(ends - np.arange(len(events))))


@dataclass(frozen=True)
class Recovery:
    unrecovered: tuple[int, ...]  # event indices after which the loss stayed up for `steps` points
    pending: tuple[int, ...]  # too few points after the event yet, and so far the loss is still up


def check_recovery(
    events: IntArray,
    log_loss: FloatArray,
    loss_trailing: Trailing,
    steps: int,
    mads: float,
    fraction: float,
) -> Recovery:
    """A spike is unrecovered if, of the `steps` points after it, at least `fraction` have log loss
    above the pre-spike median + `mads` robust sd (m-of-n hysteresis: brief dips do not count as
    recovery, one noisy point does not count as failure)."""
    unrecovered: list[int] = []
    pending: list[int] = []
    for e in events.tolist():
        level = loss_trailing.median[e] + mads * loss_trailing.scale[e]
        if not math.isfinite(level):
            continue
        after = log_loss[e + 1 : e + 1 + steps]
        seen = after[~np.isnan(after)]
        if len(seen) == 0:
            continue
        above = float(np.count_nonzero(seen > level))
        if len(after) >= steps:
            if above >= fraction * len(seen):
                unrecovered.append(e)
        elif len(seen) >= 10 and above >= fraction * len(seen):
            pending.append(e)
    return Recovery(tuple(unrecovered), tuple(pending))


def counter_increments(total: FloatArray, count_initial: bool) -> FloatArray:
    """Per-point increments of a cumulative counter, Prometheus-style: a drop is a reset, after which
    the new value is the increment. The first point's value is an increment if `count_initial`."""
    x = np.where(np.isfinite(total), total, np.nan)
    out = np.zeros(len(x))
    if len(x) == 0:
        return out
    # Carry the last seen value across missing points.
    last = np.nan
    for i, v in enumerate(x.tolist()):
        if math.isnan(v):
            continue
        if math.isnan(last):
            out[i] = max(v, 0.0) if count_initial else 0.0
        elif v >= last:
            out[i] = v - last
        else:
            out[i] = max(v, 0.0)
        last = v
    return out


def scale_halvings(scale: FloatArray) -> FloatArray:
    """Skipped steps implied by each drop of the fp16 loss scale (each overflow halves it)."""
    out = np.zeros(len(scale))
    last = math.nan
    for i, v in enumerate(scale.tolist()):
        if not (math.isfinite(v) and v > 0):
            continue
        if math.isfinite(last) and v < last:
            out[i] = max(1.0, round(math.log2(last) - math.log2(v)))  # log2 of a ratio: no overflow
        last = v
    return out


def longest_skip_run(halvings: FloatArray) -> float:
    """Most skips in a run of consecutive points at which the scale kept dropping."""
    best = run = 0.0
    for h in halvings.tolist():
        run = run + h if h > 0 else 0.0
        best = max(best, run)
    return best


def bonferroni_threshold(z: float, ranks: int) -> float:
    """The one-sided tail of a `z`-sigma flag, split over `ranks` comparisons, as a z threshold."""
    tail = float(special.ndtr(-z)) / max(ranks, 1)
    return float(-special.ndtri(tail))


@dataclass(frozen=True)
class Divergence:
    z: FloatArray  # per rank: mean over the window of the per-step cross-rank robust z
    relative: FloatArray  # per rank: exp(mean log value - mean cross-rank median) - 1


def cross_rank_divergence(values: FloatArray, scale_floor: float) -> Divergence:
    """`values` (ranks x steps, log scale, NaN missing): how far each rank sits from the others.

    Per step, the cross-rank median removes the trend all ranks share; the robust z of each rank is
    averaged over the window, so a rank that is persistently off stands out while one noisy step does
    not. Needs three ranks for a meaningful median and MAD; with two the z is 0 and only the relative
    gap is reported.
    """
    ranks = values.shape[0]
    zeros = np.zeros(ranks)
    if ranks < 2 or values.shape[1] == 0:
        return Divergence(zeros, zeros)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(values, axis=0)
        mad = np.nanmedian(np.abs(values - med), axis=0)
        scale = np.maximum(MAD_TO_SD * mad, scale_floor)
        z = (values - med) / scale
        present = ~np.isnan(z)
        enough = present.sum(axis=1) >= max(1, values.shape[1] // 2)
        mean_z = np.where(enough, np.nanmean(np.where(present, z, np.nan), axis=1), 0.0)
        gap = np.nanmean(np.where(present, values - med, np.nan), axis=1)
        rel = np.where(enough, np.expm1(np.abs(np.nan_to_num(gap))), 0.0)
    if ranks < 3:
        mean_z = zeros
    return Divergence(np.nan_to_num(mean_z), np.nan_to_num(rel))
