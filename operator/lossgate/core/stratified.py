"""Stratified-by-interval evidence of canary-minus-baseline mean loss (docs/judge.md, "Estimator").

Each interval is a stratum with its own traffic split. Within a stratum concurrent random assignment
cancels drift shared by both arms (the traffic mix over the day); pooling raw means across strata
with different splits does not. Per stratum k, from data before k only (predictable):

    centre_a = (S_a + n0 m) / (N_a + n0)       each arm's mean, shrunk towards the pooled mean m
    var_a    = (SS_a + n0 s2) / (N_a + n0)      each arm's variance, shrunk towards the pooled s2
    v_k      = var_c / n_ck + var_b / n_bk      predicted variance of the stratum's difference
    w_k      = 1 / v_k

and from the stratum itself D_k = s_ck / n_ck - s_bk / n_bk. Then I = sum w_k and
theta_hat = sum w_k D_k / I. The weights never use the stratum's own data, and shrinkage keeps a
few-sample interval that happened to see no tail event from getting an outsized weight. The
sequential test in `bounded.py` bets on the D_k with these weights and pays for the squared
deviations from the centres, which are exact sums over the stratum's requests.

All arrays are shaped (..., K) with intervals on the last axis, so the benchmark runs thousands of
simulated rollouts through exactly this code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lossgate.conventions import MAX_LOSS_NATS

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Sanity bound on one arm's count in one interval; beyond it the data is counter garbage.
MAX_INTERVAL_N = 1e12
# Variance floor (nats^2): zero variance (identical losses) must not give infinite information.
VAR_FLOOR = 1e-6
# Pseudo-samples of the pooled estimate in each arm's centre and variance, and of the prior in the
# pooled estimate itself before any data: enough to tame a 5-sample interval, negligible after 1,000.
PRIOR_SAMPLES = 10.0
# Prior for the very first stratum (no earlier data): a typical cross-entropy mean and variance.
PRIOR_MEAN_NATS = 0.5
PRIOR_VAR_NATS2 = 1.0


@dataclass(frozen=True)
class ArmArrays:
    """One arm's per-interval aggregates, shape (..., K)."""

    n: FloatArray
    sum: FloatArray
    sumsq: FloatArray

    @staticmethod
    def of(n: ArrayLike, total: ArrayLike, sumsq: ArrayLike) -> ArmArrays:
        return ArmArrays(
            np.asarray(n, dtype=np.float64),
            np.asarray(total, dtype=np.float64),
            np.asarray(sumsq, dtype=np.float64),
        )


@dataclass(frozen=True)
class StratifiedPath:
    """Per-stratum inputs of the test and the cumulative estimate after each look, shape (..., K)."""

    stratum: BoolArray  # the interval is a stratum: both arms have valid data and it is used
    n_b: FloatArray  # this interval's counts (1 where not a stratum, so divisions stay finite)
    n_c: FloatArray
    diff: FloatArray  # D_k (0 where not a stratum)
    weight: FloatArray  # w_k = 1 / v_k (0 where not a stratum)
    centre_b: FloatArray  # predictable centres in [0, MAX_LOSS_NATS]
    centre_c: FloatArray
    dev2_b: FloatArray  # sum over the stratum's requests of (loss - centre)^2 (0 where not a stratum)
    dev2_c: FloatArray
    information: FloatArray  # I = cumulative sum of w_k
    theta_hat: FloatArray  # 0 where I == 0
    n_baseline: FloatArray  # cumulative labelled samples in strata
    n_canary: FloatArray
    sum_baseline: FloatArray
    sum_canary: FloatArray
    var_baseline: FloatArray  # the predictable variance of the next stratum (after this look)
    var_canary: FloatArray
    sumsq_baseline: FloatArray  # cumulative sums of squares in strata
    sumsq_canary: FloatArray
    weighted_diff: FloatArray  # cumulative sum of w_k D_k
    tail_baseline: FloatArray  # cumulative tail events in strata (clamped to [0, n])
    tail_canary: FloatArray


def arm_valid(arm: ArmArrays, used: ArrayLike) -> BoolArray:
    """Intervals where the arm has at least one labelled sample and aggregates that per-request losses
    in [0, MAX_LOSS_NATS] can produce (anything else is a mis-handled reset or a wrong series)."""
    with np.errstate(all="ignore"):
        ok = np.isfinite(arm.n) & np.isfinite(arm.sum) & np.isfinite(arm.sumsq)
        ok &= (arm.n >= 1.0) & (arm.n <= MAX_INTERVAL_N)
        safe_n = np.where(ok, arm.n, 1.0)
        mean = arm.sum / safe_n
        ok &= (mean >= 0.0) & (mean <= MAX_LOSS_NATS * (1 + 1e-9))
        ok &= (arm.sumsq >= 0.0) & (arm.sumsq / safe_n <= MAX_LOSS_NATS**2 * (1 + 1e-9))
    out: BoolArray = ok & np.asarray(used, dtype=np.bool_)
    return out


def running_sum(x: ArrayLike, start: ArrayLike = 0.0) -> FloatArray:
    """Cumulative sum along the last axis continuing from `start` (the total before the first element).

    Sequential, like np.cumsum: a history judged in chunks, each continuing from the previous chunk's
    last total, gives bitwise the same sums as the whole history at once.
    """
    xs = np.asarray(x, dtype=np.float64)
    s0 = np.asarray(start, dtype=np.float64)
    if xs.ndim == 1 and s0.ndim == 0:  # the operator's case (one rollout): the same sums, less overhead
        flat: FloatArray = np.cumsum(np.concatenate((s0[None], xs)))[1:]
        return flat
    head = np.broadcast_to(s0[..., None], (*xs.shape[:-1], 1))
    out: FloatArray = np.cumsum(np.concatenate([head, xs], axis=-1), axis=-1)[..., 1:]
    return out


def _before(x: FloatArray, start: ArrayLike) -> FloatArray:
    """Cumulative sum through k-1 at position k (`start` at the first position)."""
    c = running_sum(x, start)
    out = np.empty_like(c)
    out[..., :1] = np.asarray(start, dtype=np.float64)[..., None]
    out[..., 1:] = c[..., :-1]
    return out


def _shrunk(
    n: FloatArray, s: FloatArray, q: FloatArray, mean0: FloatArray, var0: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Mean and variance from running sums, with PRIOR_SAMPLES pseudo-samples at (mean0, var0)."""
    ss = np.maximum(q - s * s / np.maximum(n, 1.0), 0.0)
    mean = np.clip((s + PRIOR_SAMPLES * mean0) / (n + PRIOR_SAMPLES), 0.0, MAX_LOSS_NATS)
    var = np.maximum((ss + PRIOR_SAMPLES * var0) / (n + PRIOR_SAMPLES), VAR_FLOOR)
    return mean, var


def _predictable(
    nb: FloatArray, sb: FloatArray, qb: FloatArray, nc: FloatArray, sc: FloatArray, qc: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Centres and variances of both arms from the sums given (data before the stratum)."""
    n_p, s_p, q_p = nb + nc, sb + sc, qb + qc
    prior_m = np.full_like(n_p, PRIOR_MEAN_NATS)
    prior_v = np.full_like(n_p, PRIOR_VAR_NATS2)
    pooled_m, pooled_v = _shrunk(n_p, s_p, q_p, prior_m, prior_v)
    centre_b, var_b = _shrunk(nb, sb, qb, pooled_m, pooled_v)
    centre_c, var_c = _shrunk(nc, sc, qc, pooled_m, pooled_v)
    return centre_b, var_b, centre_c, var_c


@dataclass(frozen=True)
class Totals:
    """Running sums over the strata judged so far: where a chunk of further intervals continues from.

    Each field is a scalar (or an array of the leading shape) at one look."""

    n_b: FloatArray | float = 0.0
    sum_b: FloatArray | float = 0.0
    sumsq_b: FloatArray | float = 0.0
    n_c: FloatArray | float = 0.0
    sum_c: FloatArray | float = 0.0
    sumsq_c: FloatArray | float = 0.0
    information: FloatArray | float = 0.0
    weighted_diff: FloatArray | float = 0.0  # sum of w_k D_k
    tail_b: FloatArray | float = 0.0  # tail events in strata
    tail_c: FloatArray | float = 0.0


def stratified_path(
    baseline: ArmArrays,
    canary: ArmArrays,
    used: ArrayLike,
    start: Totals | None = None,
    tails: tuple[ArrayLike, ArrayLike] | None = None,
) -> StratifiedPath:
    """The strata and the running estimate over every prefix of the intervals at once, continuing
    from `start` (the totals after earlier intervals; none before the first)."""
    t0 = start or Totals()
    stratum = arm_valid(baseline, used) & arm_valid(canary, used)
    nb = np.where(stratum, baseline.n, 0.0)
    sb = np.where(stratum, baseline.sum, 0.0)
    qb = np.where(stratum, baseline.sumsq, 0.0)
    nc = np.where(stratum, canary.n, 0.0)
    sc = np.where(stratum, canary.sum, 0.0)
    qc = np.where(stratum, canary.sumsq, 0.0)

    centre_b, var_b, centre_c, var_c = _predictable(
        _before(nb, t0.n_b),
        _before(sb, t0.sum_b),
        _before(qb, t0.sumsq_b),
        _before(nc, t0.n_c),
        _before(sc, t0.sum_c),
        _before(qc, t0.sumsq_c),
    )
    safe_nb = np.where(stratum, nb, 1.0)
    safe_nc = np.where(stratum, nc, 1.0)
    weight = np.where(stratum, 1.0 / (var_c / safe_nc + var_b / safe_nb), 0.0)
    diff = np.where(stratum, sc / safe_nc - sb / safe_nb, 0.0)
    dev2_b = np.where(stratum, np.maximum(qb - 2 * centre_b * sb + nb * centre_b**2, 0.0), 0.0)
    dev2_c = np.where(stratum, np.maximum(qc - 2 * centre_c * sc + nc * centre_c**2, 0.0), 0.0)

    info = running_sum(weight, t0.information)
    wd = running_sum(weight * diff, t0.weighted_diff)
    theta = np.where(info > 0, wd / np.where(info > 0, info, 1.0), 0.0)
    cnb, csb, cqb = running_sum(nb, t0.n_b), running_sum(sb, t0.sum_b), running_sum(qb, t0.sumsq_b)
    cnc, csc, cqc = running_sum(nc, t0.n_c), running_sum(sc, t0.sum_c), running_sum(qc, t0.sumsq_c)
    _, next_var_b, _, next_var_c = _predictable(cnb, csb, cqb, cnc, csc, cqc)
    tail_b, tail_c = (np.zeros_like(nb), np.zeros_like(nc)) if tails is None else tails
    ctb = running_sum(np.where(stratum, _tail_count(tail_b, nb), 0.0), t0.tail_b)
    ctc = running_sum(np.where(stratum, _tail_count(tail_c, nc), 0.0), t0.tail_c)
    return StratifiedPath(
        stratum=stratum,
        n_b=safe_nb,
        n_c=safe_nc,
        diff=diff,
        weight=weight,
        centre_b=centre_b,
        centre_c=centre_c,
        dev2_b=dev2_b,
        dev2_c=dev2_c,
        information=info,
        theta_hat=theta,
        n_baseline=cnb,
        n_canary=cnc,
        sum_baseline=csb,
        sum_canary=csc,
        sumsq_baseline=cqb,
        sumsq_canary=cqc,
        weighted_diff=wd,
        var_baseline=next_var_b,
        var_canary=next_var_c,
        tail_baseline=ctb,
        tail_canary=ctc,
    )


def totals_at(path: StratifiedPath, k: int = -1) -> Totals:
    """The running sums after look k, for continuing with further intervals."""
    at = (Ellipsis, k)
    return Totals(
        n_b=path.n_baseline[at],
        sum_b=path.sum_baseline[at],
        sumsq_b=path.sumsq_baseline[at],
        n_c=path.n_canary[at],
        sum_c=path.sum_canary[at],
        sumsq_c=path.sumsq_canary[at],
        information=path.information[at],
        weighted_diff=path.weighted_diff[at],
        tail_b=path.tail_baseline[at],
        tail_c=path.tail_canary[at],
    )


def _tail_count(tail: ArrayLike, n: FloatArray) -> FloatArray:
    """Tail events clamped to [0, n]: a glitching bucket cannot exceed its arm's count."""
    with np.errstate(invalid="ignore"):
        out: FloatArray = np.clip(np.nan_to_num(np.asarray(tail, dtype=np.float64)), 0.0, n)
    return out
