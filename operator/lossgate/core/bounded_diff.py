"""Always-valid test of "the canary's mean is worse than the baseline's by more than a margin" for
outcomes bounded in [0, L]: a request's error (0 or 1, L = 1), whether it was slower than a latency
threshold (0 or 1), or its latency clipped to a timeout (L seconds). docs/judge.md, "Guardrails".

Only counts reach the operator: per interval and arm the requests n and the sum s of the outcomes.
The test is the loss judge's empirical-Bernstein bet (core/bounded.py) with the sum of squares
replaced by its bound: X^2 <= L X for X in [0, L], so the squared deviations from a centre m are at
most L s - 2 m s + n m^2, exactly that for 0/1 outcomes. A larger penalty only shrinks the e-value,
so the test stays valid at any count, with no normal approximation.

The null is H0: mu_c - lam mu_b <= delta. An absolute margin is lam = 1, delta = margin; a relative
margin rho is lam = 1 + rho, delta = 0 (the canary's rate at most (1 + rho) times the baseline's),
which the bets handle exactly (each baseline request bets lam times as much), so no plug-in of the
baseline's rate enters the null. The not-worse test is the same at the other sign, and inverting
either over delta gives one-sided confidence sequences for mu_c - lam mu_b.

Every array is shaped (..., K) with intervals on the last axis (the benchmark runs thousands of
rollouts at once); the state after the last look (`DiffStart`) is a fixed number of floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lossgate.core.bounded import GRID_FACTORS, GRID_LOG_WEIGHTS, KAPPA, NOT_WORSE, REGRESSION, _h
from lossgate.core.stratified import running_sum

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Pseudo-requests of the pooled rate in each arm's centre, and of half the bound before any data.
PRIOR_REQUESTS = 10.0
_BISECTIONS = 48
_G = len(GRID_FACTORS)


@dataclass(frozen=True)
class DiffNull:
    """What is tested: H0 mu_c - lam mu_b <= delta (regression) / >= delta (not worse)."""

    bound: float  # outcomes lie in [0, bound]
    lam: float = 1.0
    delta: float = 0.0
    relative: float | None = None  # rho of a relative margin (bets scale with rho x baseline rate)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"bound must be finite and > 0, got {self.bound!r}")
        if not (math.isfinite(self.lam) and self.lam >= 1):
            raise ValueError(f"lam must be finite and >= 1, got {self.lam!r}")

    @staticmethod
    def absolute(margin: float, bound: float = 1.0) -> DiffNull:
        if not (math.isfinite(margin) and margin > 0):
            raise ValueError(f"margin must be finite and > 0, got {margin!r}")
        return DiffNull(bound, 1.0, margin)

    @staticmethod
    def relative_to_baseline(rho: float, bound: float = 1.0) -> DiffNull:
        if not (math.isfinite(rho) and rho > 0):
            raise ValueError(f"relative margin must be finite and > 0, got {rho!r}")
        return DiffNull(bound, 1.0 + rho, 0.0, rho)


def _zeros() -> FloatArray:
    return np.zeros(_G)


@dataclass(frozen=True)
class DiffStart:
    """The test's state after some looks (a fresh history: DiffStart()). Arrays broadcast over the
    leading axes of a batch; for one rollout every field is a float or a (G,) array."""

    n_b: FloatArray | float = 0.0  # requests and outcome sums over the strata so far
    s_b: FloatArray | float = 0.0
    n_c: FloatArray | float = 0.0
    s_c: FloatArray | float = 0.0
    info: FloatArray | float = 0.0  # sum of the stratum weights
    wsum: FloatArray | float = 0.0  # sum of weight x stratum difference (for the estimate)
    reg_a: FloatArray = field(default_factory=_zeros)  # per grid scale: cumulative log e at delta 0
    reg_c: FloatArray = field(default_factory=_zeros)  # and the cumulative bet (log e is linear in delta)
    nw_a: FloatArray = field(default_factory=_zeros)
    nw_c: FloatArray = field(default_factory=_zeros)
    log_p_regression: FloatArray | float = 0.0  # running minimum over looks of min(-log E, 0)
    log_p_not_worse: FloatArray | float = 0.0


@dataclass(frozen=True)
class DiffPath:
    """Per-look numbers (..., K), and the grid components (G, ..., K) for confidence bounds."""

    stratum: BoolArray
    n_b: FloatArray  # cumulative requests in strata
    n_c: FloatArray
    s_b: FloatArray
    s_c: FloatArray
    estimate: FloatArray  # weighted mean of the strata's differences mu_c - lam mu_b (0 before any)
    log_p_regression: FloatArray
    log_p_not_worse: FloatArray
    reg: tuple[FloatArray, FloatArray]  # (a, c) stacked over the grid
    nw: tuple[FloatArray, FloatArray]
    end: DiffStart


def _before(x: FloatArray, start: FloatArray | float) -> FloatArray:
    """Cumulative totals before each element (exclusive), continuing from `start`."""
    inclusive = running_sum(x, start)
    head = np.broadcast_to(np.asarray(start, dtype=np.float64)[..., None], (*x.shape[:-1], 1))
    out: FloatArray = np.concatenate([head, inclusive[..., :-1]], axis=-1)
    return out


def _running_log_p(log_e: FloatArray, start: FloatArray | float) -> FloatArray:
    x = np.minimum(-log_e, 0.0)
    head = np.broadcast_to(np.asarray(start, dtype=np.float64)[..., None], (*x.shape[:-1], 1))
    out: FloatArray = np.minimum.accumulate(np.concatenate([head, x], axis=-1), axis=-1)[..., 1:]
    return out


def _grid_log_e(a: FloatArray, c: FloatArray, direction: int, delta: float | FloatArray) -> FloatArray:
    w = np.asarray(GRID_LOG_WEIGHTS).reshape((-1,) + (1,) * (a.ndim - 1))
    terms = w + a - direction * np.asarray(delta) * c
    top = terms.max(axis=0)
    # Summed row by row (not pairwise): the same at every look whatever the number of looks.
    out: FloatArray = top + np.log(np.add.accumulate(np.exp(terms - top), axis=0)[-1])
    return out


def _grid_start(x: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """A grid state (G,) or (G, ...) broadcast to the batch's (G, ...)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape((-1,) + (1,) * (len(shape) - 1))
    out: FloatArray = np.broadcast_to(arr, shape)
    return out


def diff_path(
    n_b: ArrayLike,
    s_b: ArrayLike,
    n_c: ArrayLike,
    s_c: ArrayLike,
    used: ArrayLike,
    null: DiffNull,
    start: DiffStart | None = None,
) -> DiffPath:
    """The two e-processes at every look, continuing from `start`."""
    s0 = start or DiffStart()
    L, lam = null.bound, null.lam
    nb, sb = np.asarray(n_b, dtype=np.float64), np.asarray(s_b, dtype=np.float64)
    nc, sc = np.asarray(n_c, dtype=np.float64), np.asarray(s_c, dtype=np.float64)
    # A stratum needs both arms with finite, non-negative sums. A sum above L n (latencies past the
    # timeout, or a bad counter read ahead of its total) is clipped to L n, never dropped: dropping
    # would hide exactly the canary that got slowest.
    finite = np.isfinite(nb) & np.isfinite(nc) & np.isfinite(sb) & np.isfinite(sc)
    ok = finite & (nb >= 1) & (nc >= 1) & (sb >= 0) & (sc >= 0)
    stratum = np.asarray(used, dtype=np.bool_) & ok
    nb, nc = np.where(stratum, nb, 0.0), np.where(stratum, nc, 0.0)
    sb, sc = np.where(stratum, np.minimum(sb, L * nb), 0.0), np.where(stratum, np.minimum(sc, L * nc), 0.0)

    # Predictable centres: each arm's rate before the stratum, shrunk towards the pooled rate.
    pn_b, ps_b = _before(nb, s0.n_b), _before(sb, s0.s_b)
    pn_c, ps_c = _before(nc, s0.n_c), _before(sc, s0.s_c)
    pooled = (ps_b + ps_c + PRIOR_REQUESTS * L / 2) / (pn_b + pn_c + PRIOR_REQUESTS)
    m_b = (ps_b + PRIOR_REQUESTS * pooled) / (pn_b + PRIOR_REQUESTS)
    m_c = (ps_c + PRIOR_REQUESTS * pooled) / (pn_c + PRIOR_REQUESTS)
    floor = 1e-6 * L * L
    v_b, v_c = np.maximum(m_b * (L - m_b), floor), np.maximum(m_c * (L - m_c), floor)
    safe_b, safe_c = np.maximum(nb, 1.0), np.maximum(nc, 1.0)
    weight = np.where(stratum, 1.0 / (v_c / safe_c + lam * lam * v_b / safe_b), 0.0)
    diff = np.where(stratum, sc / safe_c - lam * sb / safe_b, 0.0)
    # Bet scale: the margin, or for a relative one rho x the baseline's predictable rate.
    if null.relative is None:
        scale: FloatArray | float = null.delta
    else:
        scale = np.maximum(null.relative * m_b, 1e-4 * L)
    # Squared deviations from the centres, bounded through X^2 <= L X (exact for 0/1 outcomes).
    dev2_b = np.maximum(L * sb - 2 * m_b * sb + nb * m_b * m_b, 0.0)
    dev2_c = np.maximum(L * sc - 2 * m_c * sc + nc * m_c * m_c, 0.0)
    factors = np.asarray(GRID_FACTORS).reshape((-1,) + (1,) * nb.ndim)

    def grid(direction: int, a0: FloatArray, c0: FloatArray) -> tuple[FloatArray, FloatArray]:
        # How far one request can fall on the losing side of its centre.
        r_c, r_b = (m_c, L - m_b) if direction == REGRESSION else (L - m_c, m_b)
        cap = KAPPA * np.minimum(safe_c / np.maximum(r_c, 1e-300), safe_b / np.maximum(lam * r_b, 1e-300))
        beta = np.where(stratum, np.minimum(factors * (scale * weight), cap), 0.0)
        b_c, b_b = beta / safe_c, lam * beta / safe_b
        penalty = _h(r_c * b_c) * b_c * b_c * dev2_c + _h(r_b * b_b) * b_b * b_b * dev2_b
        a = running_sum(direction * beta * diff - penalty, _grid_start(a0, beta.shape[:-1]))
        c = running_sum(beta, _grid_start(c0, beta.shape[:-1]))
        return a, c

    reg = grid(REGRESSION, s0.reg_a, s0.reg_c)
    nw = grid(NOT_WORSE, s0.nw_a, s0.nw_c)
    log_p_reg = _running_log_p(_grid_log_e(*reg, REGRESSION, null.delta), s0.log_p_regression)
    log_p_nw = _running_log_p(_grid_log_e(*nw, NOT_WORSE, null.delta), s0.log_p_not_worse)

    info, wsum = running_sum(weight, s0.info), running_sum(weight * diff, s0.wsum)
    estimate = np.where(info > 0, wsum / np.where(info > 0, info, 1.0), 0.0)
    cn_b, cs_b = running_sum(nb, s0.n_b), running_sum(sb, s0.s_b)
    cn_c, cs_c = running_sum(nc, s0.n_c), running_sum(sc, s0.s_c)
    end = DiffStart(
        n_b=cn_b[..., -1], s_b=cs_b[..., -1], n_c=cn_c[..., -1], s_c=cs_c[..., -1],
        info=info[..., -1], wsum=wsum[..., -1],
        reg_a=reg[0][..., -1], reg_c=reg[1][..., -1], nw_a=nw[0][..., -1], nw_c=nw[1][..., -1],
        log_p_regression=log_p_reg[..., -1], log_p_not_worse=log_p_nw[..., -1],
    )  # fmt: skip
    return DiffPath(stratum, cn_b, cn_c, cs_b, cs_c, estimate, log_p_reg, log_p_nw, reg, nw, end)


def confidence_bound(
    parts: tuple[FloatArray, FloatArray], direction: int, alpha: float, null: DiffNull
) -> FloatArray:
    """One-sided confidence sequence for mu_c - lam mu_b after each look: the lower bound (REGRESSION,
    every value below it rejected at alpha) or the upper bound (NOT_WORSE). The range's end where
    nothing inside it is rejected."""
    a, c = parts
    target = math.log(1.0 / alpha)
    top_range, bottom_range = null.bound, -null.lam * null.bound
    lo = np.full(a.shape[1:], bottom_range if direction == REGRESSION else top_range)
    hi = np.full(a.shape[1:], top_range if direction == REGRESSION else bottom_range)
    none = _grid_log_e(a, c, direction, lo) < target
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        rejected = _grid_log_e(a, c, direction, mid) >= target
        lo = np.where(rejected, mid, lo)
        hi = np.where(rejected, hi, mid)
    edge = bottom_range if direction == REGRESSION else top_range
    out: FloatArray = np.where(none, edge, lo)
    return out
