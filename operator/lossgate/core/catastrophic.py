"""Catastrophic-rate guard: an always-valid test on the rate of very large losses.

A "tail" event is a labelled prediction with loss above 4.6 nats (p(true) < 0.01), read from a
histogram bucket. Per stratum k, conditional on the t_k tail events of both arms, the canary's
count x_k is Binomial(t_k, pi_k(r)) with pi_k(r) = r n_ck / (r n_ck + n_bk), where r is the ratio of
the canary's tail rate to the baseline's. Conditioning removes the unknown baseline rate exactly.

H0: r <= r0 (default r0 = 2: "at most twice the baseline's rate of confident mistakes"). For any
r1 > r0 the likelihood ratio prod_k (pi_k(r1)/pi_k(r0))^x_k ((1-pi_k(r1))/(1-pi_k(r0)))^(t_k-x_k)
is a supermartingale under H0 (monotone likelihood ratio in pi), and so is any mixture of them; we
mix over a fixed grid of r1 with equal weights. Ville's inequality then bounds the probability of
ever crossing 1/alpha by alpha, at any number of looks.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

# Alternatives r1 / r0 the mixture spreads its weight over: from a modest excess to a broken model.
RATIO_GRID: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)


def log_tail_mixture(
    tail_baseline: ArrayLike,
    tail_canary: ArrayLike,
    n_baseline: ArrayLike,
    n_canary: ArrayLike,
    valid: ArrayLike,
    ratio0: float,
    start: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Cumulative log mixture likelihood ratio after each look, shape (..., K).

    Intervals that are not `valid` (either arm empty or dropped) contribute nothing. Tail counts are
    clamped to [0, n] so a glitching bucket cannot exceed its arm's count. `start`: each alternative's
    log likelihood ratio after earlier intervals, shape (..., G), which these continue; the second
    value returned is the same after the last of these intervals.
    """
    if not ratio0 > 0:
        raise ValueError(f"ratio0 must be > 0, got {ratio0!r}")
    ok = np.asarray(valid, dtype=np.bool_)
    nb = np.where(ok, np.asarray(n_baseline, dtype=np.float64), 1.0)
    nc = np.where(ok, np.asarray(n_canary, dtype=np.float64), 1.0)
    with np.errstate(invalid="ignore"):
        xb = np.where(ok, np.clip(np.nan_to_num(np.asarray(tail_baseline, dtype=np.float64)), 0.0, nb), 0.0)
        xc = np.where(ok, np.clip(np.nan_to_num(np.asarray(tail_canary, dtype=np.float64)), 0.0, nc), 0.0)
    grid = np.asarray(RATIO_GRID, dtype=np.float64) * ratio0
    # log pi(r) and log(1 - pi(r)) per interval and grid point; shape (..., K, G).
    log_nc, log_nb = np.log(nc)[..., None], np.log(nb)[..., None]
    log_den0 = np.logaddexp(math.log(ratio0) + log_nc, log_nb)
    log_den1 = np.logaddexp(np.log(grid) + log_nc, log_nb)
    log_pi_ratio = np.log(grid / ratio0) - log_den1 + log_den0  # log pi1 - log pi0
    log_q_ratio = -log_den1 + log_den0  # log(1 - pi1) - log(1 - pi0): both are n_b / den
    per_look = xc[..., None] * log_pi_ratio + xb[..., None] * log_q_ratio
    lead, g = per_look.shape[:-2], len(RATIO_GRID)
    first = np.zeros((*lead, g)) if start is None else np.asarray(start, dtype=np.float64)
    head = np.broadcast_to(first[..., None, :], (*lead, 1, g))
    # Sequential sums continuing from `start`: a history judged in chunks gives the same numbers.
    cum = np.cumsum(np.concatenate([head, per_look], axis=-2), axis=-2)
    last = cum[..., -1, :]
    cum = cum[..., 1:, :]
    log_w = -math.log(len(RATIO_GRID))
    m = cum.max(axis=-1)
    out: FloatArray = m + np.log(np.exp(cum - m[..., None]).sum(axis=-1)) + log_w
    return out, last
