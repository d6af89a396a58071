"""Always-valid test of a language model's mean NLL per token, a ratio of sums (docs/judge.md,
"Language models: loss per token").

Per request i of one arm: S_i the summed token NLL of the reference continuation, T_i its tokens.
The arm's loss per token is r = E[S] / E[T] (what sum S / sum T estimates; perplexity is exp(r)).
Only counters reach the operator: per interval and arm n, sum S, sum T, sum S^2, sum T^2, sum S T.

The delta method linearises the ratio: with rho and tau fixed before a stratum (the arm's ratio and
mean tokens over the strata before it),

    Z_i = rho + (S_i - rho T_i) / tau,   E[Z] = r + (E[T] / tau - 1) (r - rho),

so Z is an unbiased request-level stand-in for r exactly when tau = E[T], and otherwise off by a
product of two estimation errors (the delta method's second-order remainder, O(1 / past requests)).
Each Z_i is bounded given T_i <= max_tokens and 0 <= S_i <= L T_i, so the loss judge's
empirical-Bernstein bet (core/bounded.py, Fan's inequality) applies to the Z's unchanged: centres
rho_c, rho_b, the losing-side ranges from the bounds, and the squared deviations
sum (Z_i - rho)^2 = (sum S^2 - 2 rho sum S T + rho^2 sum T^2) / tau^2 paid exactly from the counters.
What is exact: the bet's supermartingale property for the Z's at any count. What is asymptotic: that
the Z's mean is r (the remainder above). The guard: a stratum is bet on only once both arms have
`warmup` requests before it (earlier strata only seed rho and tau), so the remainder is
O(1 / warmup) of the effect's scale from the first bet on.

Every array is shaped (..., K), intervals on the last axis (the benchmark runs many rollouts at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.bounded import GRID_FACTORS, NOT_WORSE, REGRESSION, _h
from lossgate.core.bounded_diff import _before, _grid_log_e, _grid_start, _running_log_p
from lossgate.core.stratified import running_sum

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

ARM_FIELDS = ("n", "s", "t", "ss", "tt", "st")  # requests, sum S, sum T, sum S^2, sum T^2, sum S T
_BISECTIONS = 48
_G = len(GRID_FACTORS)
# The largest fraction of Fan's limit 1 / r a request's bet may use. r here is a worst case (a request
# of max_tokens tokens all at the clip), far wider than the realised spread of Z, so the bets sit at
# this cap whenever the effect is clear; as in the paired test (core/paired.py) the penalty pays for
# the realised deviations, and 0.9 instead of the loss judge's 0.5 detects about 1.8x sooner there.
KAPPA = 0.9


@dataclass(frozen=True)
class TokenNull:
    """H0: r_c - r_b <= margin (regression) / >= margin (not worse), r in nats per token."""

    margin: float
    max_tokens: float = 1024.0  # the most tokens one request's reference may have (the bound)
    warmup: float = 200.0  # requests per arm before a stratum is bet on
    token_clip: float = MAX_LOSS_NATS  # the most NLL one token may have (p(token) >= 1e-6)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError(f"margin must be finite and > 0 nats per token, got {self.margin!r}")
        if not (math.isfinite(self.max_tokens) and self.max_tokens >= 1):
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if not (math.isfinite(self.warmup) and self.warmup >= 1):
            raise ValueError(f"warmup must be >= 1 request, got {self.warmup!r}")


def _zeros() -> FloatArray:
    return np.zeros(_G)


def _arm0() -> FloatArray:
    return np.zeros(len(ARM_FIELDS))


@dataclass(frozen=True)
class TokenStart:
    """The test's state after some looks; for one rollout a fixed number of floats."""

    arm_b: FloatArray = field(default_factory=_arm0)  # running ARM_FIELDS over every valid interval
    arm_c: FloatArray = field(default_factory=_arm0)
    info: FloatArray | float = 0.0
    wsum: FloatArray | float = 0.0
    reg_a: FloatArray = field(default_factory=_zeros)
    reg_c: FloatArray = field(default_factory=_zeros)
    nw_a: FloatArray = field(default_factory=_zeros)
    nw_c: FloatArray = field(default_factory=_zeros)
    log_p_regression: FloatArray | float = 0.0
    log_p_not_worse: FloatArray | float = 0.0


@dataclass(frozen=True)
class TokenPath:
    bet: BoolArray  # strata bet on (past the warm-up)
    arm_b: FloatArray  # cumulative ARM_FIELDS (..., 6, K)
    arm_c: FloatArray
    estimate: FloatArray  # stratified r_c - r_b (0 before any bet)
    log_p_regression: FloatArray
    log_p_not_worse: FloatArray
    reg: tuple[FloatArray, FloatArray]
    nw: tuple[FloatArray, FloatArray]
    end: TokenStart


def _valid(a: FloatArray, null: TokenNull) -> BoolArray:
    """Counters that requests within the bounds can produce (1 <= T_i <= max_tokens, S_i <= L T_i)."""
    n, s, t, ss, tt, st = (a[..., i, :] for i in range(6))
    finite = np.all(np.isfinite(a), axis=-2)
    slack = 1e-9 * np.maximum(tt, 1.0)
    with np.errstate(invalid="ignore"):
        out: BoolArray = (
            finite & (n >= 1) & (t >= n) & (t <= null.max_tokens * n) & (s >= 0)
            & (s <= null.token_clip * t * (1 + 1e-12)) & (ss >= 0) & (st >= 0)
            & (tt + slack >= t) & (tt <= null.max_tokens * t + slack)
        )  # fmt: skip
    return out


def token_path(
    baseline: ArrayLike, canary: ArrayLike, used: ArrayLike, null: TokenNull, start: TokenStart | None = None
) -> TokenPath:
    """The two e-processes at every look. `baseline`, `canary`: (..., 6, K) per-interval counters in
    ARM_FIELDS order; `used`: intervals that may be strata (False: the first after a weight change)."""
    s0 = start or TokenStart()
    xb, xc = np.asarray(baseline, dtype=np.float64), np.asarray(canary, dtype=np.float64)
    ok = np.asarray(used, dtype=np.bool_) & _valid(xb, null) & _valid(xc, null)
    xb, xc = np.where(ok[..., None, :], xb, 0.0), np.where(ok[..., None, :], xc, 0.0)
    L, tmax = null.token_clip, null.max_tokens

    def before(x: FloatArray, s: FloatArray) -> FloatArray:
        return np.stack([_before(x[..., i, :], np.asarray(s)[..., i]) for i in range(6)], axis=-2)

    pb, pc = before(xb, s0.arm_b), before(xc, s0.arm_c)
    bet = ok & (pb[..., 0, :] >= null.warmup) & (pc[..., 0, :] >= null.warmup)

    def plug_ins(p: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """rho, tau and the variance of Z per request from the arm's data before each stratum."""
        n, s, t, ss, tt, st = (np.maximum(p[..., i, :], 0.0) for i in range(6))
        rho = np.where(t > 0, s / np.maximum(t, 1.0), 0.0)
        tau = np.where(n > 0, t / np.maximum(n, 1.0), 1.0)
        resid2 = np.maximum(ss - 2 * rho * st + rho * rho * tt, 0.0)
        var = resid2 / np.maximum(n, 1.0) / (tau * tau)
        return rho, np.maximum(tau, 1.0), np.maximum(var, 1e-6 + 1e-4 * rho * rho)

    rho_b, tau_b, v_b = plug_ins(pb)
    rho_c, tau_c, v_c = plug_ins(pc)
    n_b, n_c = np.maximum(xb[..., 0, :], 1.0), np.maximum(xc[..., 0, :], 1.0)

    def zbar(x: FloatArray, rho: FloatArray, tau: FloatArray, n: FloatArray) -> FloatArray:
        return rho + (x[..., 1, :] - rho * x[..., 2, :]) / (tau * n)

    def dev2(x: FloatArray, rho: FloatArray, tau: FloatArray) -> FloatArray:
        out: FloatArray = np.maximum(x[..., 3, :] - 2 * rho * x[..., 5, :] + rho * rho * x[..., 4, :], 0.0)
        return out / (tau * tau)

    diff = np.where(bet, zbar(xc, rho_c, tau_c, n_c) - zbar(xb, rho_b, tau_b, n_b), 0.0)
    d2_b, d2_c = np.where(bet, dev2(xb, rho_b, tau_b), 0.0), np.where(bet, dev2(xc, rho_c, tau_c), 0.0)
    weight = np.where(bet, 1.0 / (v_c / n_c + v_b / n_b), 0.0)
    factors = np.asarray(GRID_FACTORS).reshape((-1,) + (1,) * weight.ndim)
    # How far Z - rho can fall: (S - rho T) / tau lies in [-rho T_max, (L - rho) T_max] / tau.
    low_b, high_b = rho_b * tmax / tau_b, (L - rho_b) * tmax / tau_b
    low_c, high_c = rho_c * tmax / tau_c, (L - rho_c) * tmax / tau_c

    def grid(direction: int, a0: FloatArray, c0: FloatArray) -> tuple[FloatArray, FloatArray]:
        r_c, r_b = (low_c, high_b) if direction == REGRESSION else (high_c, low_b)
        r_c, r_b = np.maximum(r_c, 1e-12), np.maximum(r_b, 1e-12)
        cap = KAPPA * np.minimum(n_c / r_c, n_b / r_b)
        beta = np.where(bet, np.minimum(factors * (null.margin * weight), cap), 0.0)
        b_c, b_b = beta / n_c, beta / n_b
        penalty = _h(r_c * b_c) * b_c * b_c * d2_c + _h(r_b * b_b) * b_b * b_b * d2_b
        a = running_sum(direction * beta * diff - penalty, _grid_start(a0, beta.shape[:-1]))
        c = running_sum(beta, _grid_start(c0, beta.shape[:-1]))
        return a, c

    reg, nw = grid(REGRESSION, s0.reg_a, s0.reg_c), grid(NOT_WORSE, s0.nw_a, s0.nw_c)
    log_p_reg = _running_log_p(_grid_log_e(*reg, REGRESSION, null.margin), s0.log_p_regression)
    log_p_nw = _running_log_p(_grid_log_e(*nw, NOT_WORSE, null.margin), s0.log_p_not_worse)
    info, wsum = running_sum(weight, s0.info), running_sum(weight * diff, s0.wsum)
    estimate = np.where(info > 0, wsum / np.where(info > 0, info, 1.0), 0.0)

    def cumulative(x: FloatArray, s: FloatArray) -> FloatArray:
        return np.stack([running_sum(x[..., i, :], np.asarray(s)[..., i]) for i in range(6)], axis=-2)

    cb, cc = cumulative(xb, s0.arm_b), cumulative(xc, s0.arm_c)
    end = TokenStart(
        arm_b=cb[..., -1], arm_c=cc[..., -1], info=info[..., -1], wsum=wsum[..., -1],
        reg_a=reg[0][..., -1], reg_c=reg[1][..., -1], nw_a=nw[0][..., -1], nw_c=nw[1][..., -1],
        log_p_regression=log_p_reg[..., -1], log_p_not_worse=log_p_nw[..., -1],
    )  # fmt: skip
    return TokenPath(bet, cb, cc, estimate, log_p_reg, log_p_nw, reg, nw, end)


def confidence_bound(parts: tuple[FloatArray, FloatArray], direction: int, alpha: float) -> FloatArray:
    """One-sided confidence sequence for r_c - r_b after each look (lower for REGRESSION, upper for
    NOT_WORSE); the range's end where nothing inside it is rejected."""
    a, c = parts
    target = math.log(1.0 / alpha)
    edge = -MAX_LOSS_NATS if direction == REGRESSION else MAX_LOSS_NATS
    lo, hi = np.full(a.shape[1:], edge), np.full(a.shape[1:], -edge)
    none = _grid_log_e(a, c, direction, lo) < target
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        rejected = _grid_log_e(a, c, direction, mid) >= target
        lo, hi = np.where(rejected, mid, lo), np.where(rejected, hi, mid)
    out: FloatArray = np.where(none, edge, lo)
    return out
