"""The paired judge: the same always-valid test as bounded.py, on the mean of per-request differences
d = loss(canary) - loss(baseline) of requests both versions served (mirrored traffic, docs/judge.md,
"Paired evidence").

Each d lies in [-L, L] (both losses in [0, L], L = MAX_LOSS_NATS). Fan's inequality as in bounded.py,
with a predictable centre m and the range r on the losing side of it (r = L + m for "d is large",
L - m for "d is small"), gives for every bet 0 <= b < 1/r

    E exp(b (d - mu) - h(r b) b^2 (d - m)^2) <= 1,

so in interval k, with its n_k pairs each betting b_k = beta_k / n_k,

    log E_k = dir * beta_k (dbar_k - delta) - h(r b_k) b_k^2 dev2_k,   dev2_k = sum (d - m)^2

is the log of an e-value given the past under H0 (dir = +1: mu <= delta, the canary is not worse by
more than delta; dir = -1: mu >= delta). beta_k = s * n_k / var_k for effect scales s on the same
grid and prior as the unpaired test (GRID_FACTORS times the margin), capped at r b <= PAIRED_KAPPA; var_k
and m are from the intervals before k (shrunk towards a prior), so every bet is predictable. The
grid's prior-weighted average is a test supermartingale: Ville gives P(ever >= 1/alpha) <= alpha.

One sample instead of two: the variance the bets pay for is var(d), which is small when the two
models' losses on a request are correlated, where the unpaired test pays var(X_c) + var(X_b) on two
independent samples. The margin is resolved as the unpaired judge resolves it, against the
baseline's mean loss (here on the paired requests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.bounded import (
    GRID_FACTORS,
    GRID_LOG_WEIGHTS,
    NOT_WORSE,
    REGRESSION,
    Component,
    _h,
    confidence_bound,
)
from lossgate.core.judge_types import BoolArray, JudgeConfig
from lossgate.core.stratified import (
    MAX_INTERVAL_N,
    PRIOR_MEAN_NATS,
    PRIOR_SAMPLES,
    PRIOR_VAR_NATS2,
    VAR_FLOOR,
    FloatArray,
    running_sum,
)
from lossgate.core.verdicts import LossVerdict

_G = len(GRID_FACTORS)
_W = np.asarray(GRID_LOG_WEIGHTS, dtype=np.float64)
# Largest fraction of the per-pair bet limit 1 / r a bet uses (bounded.py's KAPPA is 0.5). Here r >= L/2
# is far wider than the spread of d when the two models' losses are correlated, so the largest bets
# are capped for any effect; the penalty pays for the realised (d - m)^2, which is small for such d,
# so a cap nearer 1 costs little (h(0.9) = 1.7) and detects in ~1.6x fewer pairs (tests, bench).
PAIRED_KAPPA = 0.9
# The centre is kept inside [-L/2, L/2] so that r, the range on the losing side, stays >= L/2.
_CENTRE_LIMIT = MAX_LOSS_NATS / 2


@dataclass(frozen=True)
class PairedStats:
    """One interval's paired counters: pairs, sum of d, sum of d^2, sum of the baseline's loss."""

    n: float
    sum: float
    sumsq: float
    sum_baseline: float


@dataclass(frozen=True)
class PairedArrays:
    """Per-interval paired counters, shape (..., K) with intervals on the last axis."""

    n: FloatArray
    sum: FloatArray
    sumsq: FloatArray
    sum_baseline: FloatArray

    @staticmethod
    def of(stats: Sequence[PairedStats]) -> PairedArrays:
        def col(name: str) -> FloatArray:
            return np.asarray([getattr(s, name) for s in stats], dtype=np.float64)

        return PairedArrays(col("n"), col("sum"), col("sumsq"), col("sum_baseline"))


@dataclass(frozen=True)
class PairedStart:
    """The state after earlier intervals (fixed size: 4 sums, 4 x len(GRID_FACTORS) components, 2 p)."""

    n: float = 0.0
    sum: float = 0.0
    sumsq: float = 0.0
    sum_baseline: float = 0.0
    reg_a: FloatArray = field(default_factory=lambda: np.zeros(_G))
    reg_c: FloatArray = field(default_factory=lambda: np.zeros(_G))
    nw_a: FloatArray = field(default_factory=lambda: np.zeros(_G))
    nw_c: FloatArray = field(default_factory=lambda: np.zeros(_G))
    log_p_regression: float = 0.0
    log_p_not_worse: float = 0.0


@dataclass(frozen=True)
class PairedPath:
    """Per-look state of the paired test, shape (..., K); grid components shape (G, ..., K)."""

    valid: BoolArray
    n: FloatArray  # cumulative pairs after each look
    theta_hat: FloatArray  # cumulative mean of d (0 before any pair)
    margin: FloatArray
    log_p_regression: FloatArray
    log_p_not_worse: FloatArray
    regression: BoolArray  # the paired test says REGRESSION at this look
    not_worse: BoolArray  # NOT_WORSE (and not REGRESSION)
    parts: tuple[tuple[Component, ...], tuple[Component, ...]]


def valid_intervals(x: PairedArrays) -> BoolArray:
    """Intervals whose counters d in [-L, L] and baseline losses in [0, L] can produce."""
    with np.errstate(all="ignore"):
        ok = np.isfinite(x.n) & np.isfinite(x.sum) & np.isfinite(x.sumsq) & np.isfinite(x.sum_baseline)
        ok &= (x.n >= 1.0) & (x.n <= MAX_INTERVAL_N)
        n = np.where(ok, x.n, 1.0)
        top = MAX_LOSS_NATS * (1 + 1e-9)
        ok &= (np.abs(x.sum / n) <= top) & (x.sumsq >= 0.0) & (x.sumsq / n <= top * top)
        ok &= (x.sum_baseline >= 0.0) & (x.sum_baseline / n <= top)
    out: BoolArray = ok
    return out


def _before(x: FloatArray, start: float) -> FloatArray:
    """The running total before each interval (exclusive), continuing from `start`."""
    out: FloatArray = running_sum(x, start) - x
    return out


def _components(
    direction: int,
    scale: FloatArray,
    weight: FloatArray,
    centre: FloatArray,
    n: FloatArray,
    s: FloatArray,
    ss: FloatArray,
    a0: FloatArray,
    c0: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    r = MAX_LOSS_NATS + direction * centre
    safe_n = np.maximum(n, 1.0)
    cap = PAIRED_KAPPA * n / r
    factors = np.asarray(GRID_FACTORS, dtype=np.float64).reshape((-1,) + (1,) * n.ndim)
    beta = np.minimum(factors * scale * weight, cap)
    b = beta / safe_n
    dev2 = np.maximum(ss - 2.0 * centre * s + n * centre * centre, 0.0)
    penalty = _h(r * b) * b * b * dev2
    start_a = np.broadcast_to(a0.reshape((-1,) + (1,) * (n.ndim - 1)), (_G, *n.shape[:-1]))
    start_c = np.broadcast_to(c0.reshape((-1,) + (1,) * (n.ndim - 1)), (_G, *n.shape[:-1]))
    a = running_sum(direction * b * s - penalty, start_a)
    c = running_sum(beta, start_c)
    return a, c


def _log_e(a: FloatArray, c: FloatArray, direction: int, delta: FloatArray) -> FloatArray:
    w = _W.reshape((-1,) + (1,) * delta.ndim)
    terms = w + a - direction * delta * c
    top = terms.max(axis=0)
    # Summed row by row (not pairwise): the same at every look whatever the array's length.
    out: FloatArray = top + np.log(np.add.accumulate(np.exp(terms - top), axis=0)[-1])
    return out


def _running_log_p(log_e: FloatArray, start: float) -> FloatArray:
    x = np.minimum(-log_e, 0.0)
    out: FloatArray = np.minimum.accumulate(np.minimum(x, start), axis=-1)
    return out


def paired_path(
    x: PairedArrays, config: JudgeConfig, alpha_rollback: float, start: PairedStart | None = None
) -> PairedPath:
    """The paired test at every look (vectorised over leading axes), continuing from `start`.
    `alpha_rollback`: this test's share of the rollout's alphaRollback (family.split_alpha)."""
    s0 = start or PairedStart()
    valid = valid_intervals(x)
    n = np.where(valid, x.n, 0.0)
    s = np.where(valid, x.sum, 0.0)
    ss = np.where(valid, x.sumsq, 0.0)
    sb = np.where(valid, x.sum_baseline, 0.0)
    # Predictable per-interval inputs: from the intervals before, shrunk towards the prior.
    n_before = _before(n, s0.n) + PRIOR_SAMPLES
    centre = np.clip(_before(s, s0.sum) / n_before, -_CENTRE_LIMIT, _CENTRE_LIMIT)
    second = (_before(ss, s0.sumsq) + PRIOR_SAMPLES * PRIOR_VAR_NATS2) / n_before
    var = np.maximum(second - centre * centre, VAR_FLOOR)
    scale = config.resolve_margin((_before(sb, s0.sum_baseline) + PRIOR_SAMPLES * PRIOR_MEAN_NATS) / n_before)
    weight = n / var
    reg_a, reg_c = _components(REGRESSION, scale, weight, centre, n, s, ss, s0.reg_a, s0.reg_c)
    nw_a, nw_c = _components(NOT_WORSE, scale, weight, centre, n, s, ss, s0.nw_a, s0.nw_c)
    # The margin at each look: against the baseline's mean loss on the pairs so far, as the unpaired judge.
    n_cum = running_sum(n, s0.n)
    mean_b = np.where(n_cum > 0, running_sum(sb, s0.sum_baseline) / np.maximum(n_cum, 1.0), 0.0)
    margin = config.resolve_margin(mean_b)
    log_p_reg = _running_log_p(_log_e(reg_a, reg_c, REGRESSION, margin), s0.log_p_regression)
    log_p_nw = _running_log_p(_log_e(nw_a, nw_c, NOT_WORSE, margin), s0.log_p_not_worse)
    regression = (log_p_reg <= math.log(alpha_rollback)) & (n_cum >= config.min_samples_before_rollback)
    not_worse = (
        ~regression
        & (log_p_nw <= math.log(config.alpha_promote))
        & (n_cum >= config.min_samples_before_promote)
    )
    theta = np.where(n_cum > 0, running_sum(s, s0.sum) / np.maximum(n_cum, 1.0), 0.0)
    parts = (
        tuple(Component(float(_W[g]), reg_a[g], reg_c[g]) for g in range(_G)),
        tuple(Component(float(_W[g]), nw_a[g], nw_c[g]) for g in range(_G)),
    )
    return PairedPath(valid, n_cum, theta, margin, log_p_reg, log_p_nw, regression, not_worse, parts)


def path_end(x: PairedArrays, path: PairedPath, start: PairedStart | None = None) -> PairedStart:
    """The state after the last look of a 1-D path (what the next chunk continues from)."""
    s0 = start or PairedStart()
    v = path.valid

    def total(col: FloatArray, s: float) -> float:
        return float(running_sum(np.where(v, col, 0.0), s)[-1])

    reg, nw = path.parts
    return PairedStart(
        n=total(x.n, s0.n),
        sum=total(x.sum, s0.sum),
        sumsq=total(x.sumsq, s0.sumsq),
        sum_baseline=total(x.sum_baseline, s0.sum_baseline),
        reg_a=np.asarray([p.a[-1] for p in reg]),
        reg_c=np.asarray([p.c[-1] for p in reg]),
        nw_a=np.asarray([p.a[-1] for p in nw]),
        nw_c=np.asarray([p.c[-1] for p in nw]),
        log_p_regression=float(path.log_p_regression[-1]),
        log_p_not_worse=float(path.log_p_not_worse[-1]),
    )


@dataclass(frozen=True)
class PairedFold:
    """The paired judge's running fold (fixed size, whatever the number of intervals)."""

    looks: int = 0
    start: PairedStart = field(default_factory=PairedStart)
    verdict: LossVerdict = LossVerdict.UNDECIDED
    decided_at: int | None = None  # the first look with the verdict
    theta: float = 0.0
    cs: tuple[float, float] = (-MAX_LOSS_NATS, MAX_LOSS_NATS)  # running intersection of the bounds

    @property
    def n(self) -> float:
        return self.start.n

    @property
    def p_regression(self) -> float:
        return math.exp(self.start.log_p_regression)

    @property
    def p_not_worse(self) -> float:
        return math.exp(self.start.log_p_not_worse)


def advance(
    fold: PairedFold, intervals: Sequence[PairedStats], config: JudgeConfig, alpha_rollback: float
) -> PairedFold:
    """The fold after `intervals` more; a verdict once reached is kept (the test is always valid)."""
    if not intervals:
        return fold
    x = PairedArrays.of(intervals)
    path = paired_path(x, config, alpha_rollback, fold.start)
    verdict, decided_at = fold.verdict, fold.decided_at
    if verdict is LossVerdict.UNDECIDED:
        for flags, v in ((path.regression, LossVerdict.REGRESSION), (path.not_worse, LossVerdict.NOT_WORSE)):
            if bool(np.any(flags)):
                verdict, decided_at = v, fold.looks + int(np.argmax(flags))
                break
    reg, nw = path.parts
    # The intersection over every look of the chunk, not only its last: the same in any chunking.
    low = float(np.max(confidence_bound(reg, REGRESSION, alpha_rollback)))
    high = float(np.min(confidence_bound(nw, NOT_WORSE, config.alpha_promote)))
    return PairedFold(
        looks=fold.looks + len(intervals),
        start=path_end(x, path, fold.start),
        verdict=verdict,
        decided_at=decided_at,
        theta=float(path.theta_hat[-1]),
        cs=(max(fold.cs[0], low), min(fold.cs[1], high)),
    )
