"""The trailing median and robust scale of one log series, fed a batch of steps at a time.

The gate's definition (mirrored from the operator's vectorised reference, and compared with it by a
property test): each step is judged against the median and 1.4826 MAD of the `window` values before
it, refreshed every `window // 30` steps and held in between, the scale floored at `scale_floor`, both
NaN while fewer than `min_history` of those values are finite (NaN values are gaps, not data).

Batches are cheap: a refresh point's window is a slice of one history array, and when every window of
the batch is full and finite (the steady state) all refreshes are two row-wise partitions of one 2-D
array. The training loop pays a handful of numpy calls per batch, not Python per step.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MAD_TO_SD = 1.4826
FloatArray = np.ndarray


def safe_log(x: FloatArray) -> FloatArray:
    """log of finite positive values; NaN (a gap) for everything else."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(np.isfinite(x) & (x > 0), np.log(np.where(x > 0, x, 1.0)), np.nan)
    return out


def median_inplace(work: FloatArray) -> float:
    """np.median's value (the mean of the two middle values for an even count), by partitioning `work`
    in place: several times cheaper than np.median on a few hundred values."""
    n = len(work)
    half = n // 2
    if n % 2:
        work.partition(half)
        return float(work[half])
    work.partition((half - 1, half))
    return float((work[half - 1] + work[half]) / 2.0)


class TrailingRobust:
    """State: the last `window` values (in order), the held median/scale, and how many were pushed."""

    def __init__(self, window: int, min_history: int, scale_floor: float) -> None:
        self.window, self.min_history, self.scale_floor = window, min_history, scale_floor
        self.stride = max(1, window // 30)
        self._hist = np.empty(0, dtype=np.float64)
        self.index = 0
        self.median = math.nan
        self.scale = math.nan

    def push_many(self, values: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The (median, scale) that judge each value, then the values join the history."""
        n, w, h = len(values), self.window, len(self._hist)
        buf = np.concatenate((self._hist, values))
        ends = np.arange((-self.index) % self.stride, n, self.stride)  # refresh points, batch offsets
        meds, scales = self._refreshes(buf, h + ends)
        # each step takes the statistics of the latest refresh at or before it
        seg = np.searchsorted(ends, np.arange(n), side="right")  # 0: before the first refresh
        med = np.concatenate(([self.median], meds))[seg]
        sc = np.concatenate(([self.scale], scales))[seg]
        if len(ends):
            self.median, self.scale = float(meds[-1]), float(scales[-1])
        self._hist = buf[-w:].copy()
        self.index += n
        return med, sc

    def _refreshes(self, buf: FloatArray, stops: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Median and scale of buf[stop - window : stop] (clipped at 0) for each stop."""
        w = self.window
        if len(stops) == 0:
            return np.empty(0), np.empty(0)
        if stops[0] >= w and w >= self.min_history and not np.isnan(buf[stops[0] - w : stops[-1]]).any():
            rows = sliding_window_view(buf, w)[stops - w].copy()  # the steady state: one 2-D pass
            med = _row_medians(rows)
            dev = np.abs(rows - med[:, None])
            return med, np.maximum(MAD_TO_SD * _row_medians(dev), self.scale_floor)
        out = [self._one(buf[max(0, int(s) - w) : int(s)]) for s in stops]
        return np.array([m for m, _ in out]), np.array([s for _, s in out])

    def _one(self, arr: FloatArray) -> tuple[float, float]:
        finite = arr[~np.isnan(arr)]  # a copy: partitioned in place below
        if len(finite) < self.min_history:
            return math.nan, math.nan
        med = median_inplace(finite)
        return med, max(MAD_TO_SD * median_inplace(np.abs(finite - med)), self.scale_floor)

    def window_mean(self) -> tuple[float, int]:
        """Mean and count of the finite values among the last `window` (NaN, 0 when none)."""
        finite = self._hist[~np.isnan(self._hist)]
        return (math.fsum(finite.tolist()) / len(finite), len(finite)) if len(finite) else (math.nan, 0)


def _row_medians(rows: FloatArray) -> FloatArray:
    """np.median along axis 1, by partitioning the rows in place."""
    n = rows.shape[1]
    half = n // 2
    if n % 2:
        rows.partition(half, axis=1)
        return np.asarray(rows[:, half])
    rows.partition((half - 1, half), axis=1)
    return np.asarray((rows[:, half - 1] + rows[:, half]) / 2.0)
