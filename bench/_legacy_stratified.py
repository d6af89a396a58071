"""The stratified estimator as it was before the bounded test (frozen for bench/_legacy_judge.py).

Each interval is a stratum with its own traffic split. Within a stratum concurrent random assignment
cancels drift shared by both arms (the traffic mix over the day); pooling raw means across strata
with different splits does not. Per stratum k:

    var_a  = (Q_a - S_a^2 / N_a) / (N_a - 1)        cumulative over used intervals through k-1
    D_k    = s_ck / n_ck - s_bk / n_bk
    v_k    = max(var_c, var_b) / n_ck + var_b / n_bk
    I      = sum_k 1 / v_k,   theta_hat = sum_k D_k / v_k / I

The variances are predictable (from data before the stratum) so the weights do not depend on the
stratum's own noise, and max(var_c, var_b) keeps both tails of z at or under nominal under the heavy
right tail of per-request cross-entropy.

All arrays are shaped (..., K) with intervals on the last axis, so the benchmark runs thousands of
simulated rollouts through exactly this code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lossgate.core.stratified import ArmArrays

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Sanity bounds on one arm's aggregates in one interval. Anything outside is counter garbage (a
# reset mis-handled upstream, a mislabelled series) and is treated as missing: cross-entropy clipped
# at p >= 1e-6 is below 14 nats, and these bounds also keep every intermediate finite.
MAX_INTERVAL_N = 1e12
MAX_ABS_MEAN = 1e6
MAX_MEAN_SQUARE = 1e12
# Variance floor (nats^2): zero variance (identical losses) must not give infinite information.
VAR_FLOOR = 1e-12


@dataclass(frozen=True)
class StratifiedPath:
    """Cumulative estimator state after each look (each interval), shape (..., K)."""

    information: FloatArray  # I
    theta_hat: FloatArray  # 0 where I == 0
    n_baseline: FloatArray  # labelled samples in used intervals
    n_canary: FloatArray
    sum_baseline: FloatArray
    sum_canary: FloatArray
    var_baseline: FloatArray  # cumulative variance through this look (VAR_FLOOR where unknown)
    var_canary: FloatArray
    stratum: BoolArray  # the interval contributed information


def arm_valid(arm: ArmArrays, used: ArrayLike) -> BoolArray:
    """Intervals where the arm has at least one labelled sample and sane, finite aggregates."""
    with np.errstate(all="ignore"):
        ok = np.isfinite(arm.n) & np.isfinite(arm.sum) & np.isfinite(arm.sumsq)
        ok &= (arm.n >= 1.0) & (arm.n <= MAX_INTERVAL_N)
        safe_n = np.where(ok, arm.n, 1.0)
        ok &= np.abs(arm.sum / safe_n) <= MAX_ABS_MEAN
        ok &= np.abs(arm.sumsq / safe_n) <= MAX_MEAN_SQUARE
    out: BoolArray = ok & np.asarray(used, dtype=np.bool_)
    return out


def _cumulative_variance(n: FloatArray, s: FloatArray, q: FloatArray) -> FloatArray:
    """Sample variance from running sums; VAR_FLOOR where fewer than two samples."""
    with np.errstate(all="ignore"):
        var = (q - s * s / np.where(n > 0, n, 1.0)) / np.where(n > 1, n - 1.0, 1.0)
    out: FloatArray = np.where(n >= 2.0, np.maximum(var, VAR_FLOOR), VAR_FLOOR)
    return out


def _shift(x: FloatArray, fill: float) -> FloatArray:
    """Values through k-1 at position k (`fill` at k = 0)."""
    out = np.full_like(x, fill)
    out[..., 1:] = x[..., :-1]
    return out


def stratified_path(baseline: ArmArrays, canary: ArmArrays, used: ArrayLike) -> StratifiedPath:
    """Run the stratified estimator over every prefix of the intervals at once."""
    ok_b = arm_valid(baseline, used)
    ok_c = arm_valid(canary, used)
    nb = np.where(ok_b, baseline.n, 0.0)
    sb = np.where(ok_b, baseline.sum, 0.0)
    qb = np.where(ok_b, baseline.sumsq, 0.0)
    nc = np.where(ok_c, canary.n, 0.0)
    sc = np.where(ok_c, canary.sum, 0.0)
    qc = np.where(ok_c, canary.sumsq, 0.0)

    cnb, csb, cqb = np.cumsum(nb, -1), np.cumsum(sb, -1), np.cumsum(qb, -1)
    cnc, csc, cqc = np.cumsum(nc, -1), np.cumsum(sc, -1), np.cumsum(qc, -1)
    var_b = _cumulative_variance(cnb, csb, cqb)
    var_c = _cumulative_variance(cnc, csc, cqc)
    prev_nb, prev_nc = _shift(cnb, 0.0), _shift(cnc, 0.0)
    prev_var_b, prev_var_c = _shift(var_b, VAR_FLOOR), _shift(var_c, VAR_FLOOR)

    # A stratum needs both arms now and a variance for both from earlier data.
    stratum = ok_b & ok_c & (prev_nb >= 2.0) & (prev_nc >= 2.0)
    safe_nb = np.where(stratum, nb, 1.0)
    safe_nc = np.where(stratum, nc, 1.0)
    v = np.maximum(prev_var_c, prev_var_b) / safe_nc + prev_var_b / safe_nb
    w = np.where(stratum, 1.0 / v, 0.0)
    d = np.where(stratum, sc / safe_nc - sb / safe_nb, 0.0)
    info = np.cumsum(w, -1)
    wd = np.cumsum(w * d, -1)
    theta = np.where(info > 0, wd / np.where(info > 0, info, 1.0), 0.0)
    return StratifiedPath(
        information=info,
        theta_hat=theta,
        n_baseline=cnb,
        n_canary=cnc,
        sum_baseline=csb,
        sum_canary=csc,
        var_baseline=var_b,
        var_canary=var_c,
        stratum=stratum,
    )
