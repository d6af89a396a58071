"""Normal-mixture boundary math of the judge before the bounded test (frozen for bench/_legacy_judge.py).

The judge tracks the score S(theta0) = I * (theta_hat - theta0) and the information I. Mixing the
likelihood ratio exp(eta*S - eta^2*I/2) over eta ~ N(0, 1/rho) restricted to eta > 0 gives

    Lambda_plus(S, I) = 2 sqrt(rho / (rho + I)) exp(S^2 / (2 (rho + I))) Phi(S / sqrt(rho + I)),

a nonnegative (super)martingale under H0: theta <= theta0, so by Ville's inequality
P(sup_k Lambda_k >= 1/alpha) <= alpha however often it is looked at.

Everything here is pure and vectorised over numpy arrays; it works in log space so that no input in
range produces inf or NaN (exp(S^2/...) alone overflows long before the decision is in doubt).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

FloatArray = NDArray[np.float64]

_SQRT2 = math.sqrt(2.0)
_LOG2 = math.log(2.0)
# Largest information the crossing search will consider; past it "not reachable" is the honest answer.
_MAX_INFORMATION = 1e300


def rho_from_planned_information(planned_information: float, alpha: float) -> float:
    """Mixture precision rho that makes the boundary tightest near `planned_information`.

    rho = I* / (2 ln(1/(2 alpha)) + ln(1 + 2 ln(1/(2 alpha)))): about I*/10 at alpha = 0.01.
    """
    if not planned_information > 0 or not math.isfinite(planned_information):
        raise ValueError(f"planned_information must be finite and > 0, got {planned_information!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    ell = 2.0 * math.log(1.0 / (2.0 * alpha))
    return planned_information / (ell + math.log1p(ell))


def log_lambda_plus(score: ArrayLike, information: ArrayLike, rho: ArrayLike) -> FloatArray:
    """log Lambda_plus(S, I) for the one-sided normal mixture, elementwise.

    log[exp(x^2/2) Phi(x)] with x = S / sqrt(rho + I) is taken as log(erfcx(-x/sqrt2)/2) for x < 0
    (no underflow of Phi) and x^2/2 + log Phi(x) for x >= 0 (no overflow of exp).
    """
    s = np.asarray(score, dtype=np.float64)
    info = np.asarray(information, dtype=np.float64)
    r = np.asarray(rho, dtype=np.float64)
    s, info, r = np.broadcast_arrays(s, info, r)
    total = r + info
    x = s / np.sqrt(total)
    core = np.empty_like(x)
    neg = x < 0
    core[neg] = np.log(0.5 * special.erfcx(-x[neg] / _SQRT2))
    pos = ~neg
    core[pos] = 0.5 * x[pos] ** 2 + special.log_ndtr(x[pos])
    out: FloatArray = _LOG2 + 0.5 * (np.log(r) - np.log(total)) + core
    return out


def log_lambda_mixture(
    score: ArrayLike, information: ArrayLike, rho: ArrayLike, scales: Sequence[float]
) -> FloatArray:
    """log of the equal-weight average of Lambda_plus over the precisions rho * scales.

    A convex combination of test supermartingales is one, so the average is just as valid as each
    component; spreading rho over decades makes the test near-optimal for effects over a wider range
    (one rho is tight only for effects detectable near its planned information).
    """
    r = np.asarray(rho, dtype=np.float64)
    if len(scales) == 1:
        return log_lambda_plus(score, information, r * scales[0])
    parts = np.stack([log_lambda_plus(score, information, r * c) for c in scales])
    top = parts.max(axis=0)
    out: FloatArray = top + np.log(np.exp(parts - top).sum(axis=0)) - math.log(len(scales))
    return out


def cs_half_width(information: ArrayLike, rho: ArrayLike, alpha: float) -> FloatArray:
    """Half-width of the two-sided normal-mixture confidence sequence (inf where I == 0).

    theta_hat +- sqrt((I + rho) (log(1 + I/rho) + 2 log(1/alpha))) / I covers theta at all looks
    simultaneously with probability >= 1 - alpha.
    """
    info = np.asarray(information, dtype=np.float64)
    r = np.asarray(rho, dtype=np.float64)
    info, r = np.broadcast_arrays(info, r)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt((info + r) * (np.log1p(info / r) + 2.0 * math.log(1.0 / alpha))) / info
    out: FloatArray = np.where(info > 0, half, np.inf)
    return out


def cs_half_width_mixture(information: float, rho: float, scales: Sequence[float], alpha: float) -> float:
    """Half-width of the two-sided confidence sequence of the equal-weight mixture over rho * scales:
    the h at which the average over components of sqrt(rho_j/(rho_j + I)) exp((I h)^2 / (2 (rho_j + I)))
    reaches 1/alpha. Equals `cs_half_width` for a single scale. inf where I == 0."""
    if not information > 0:
        return math.inf
    rhos = [rho * c for c in scales]
    if len(rhos) == 1:
        return float(cs_half_width(information, rhos[0], alpha))
    target = math.log(1.0 / alpha)
    log_w = -math.log(len(rhos))

    def gap(h: float) -> float:
        s = information * h
        terms = [0.5 * math.log(r / (r + information)) + s * s / (2 * (r + information)) for r in rhos]
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms)) + log_w - target

    # Each component alone at level alpha / J bounds the crossing from above (the average is at least
    # 1/J of any component), so the root lies in [0, min_j half-width_j(alpha / J)].
    hi = min(float(cs_half_width(information, r, alpha / len(rhos))) for r in rhos)
    if gap(hi) <= 0:  # rounding at the edge; the bound itself is a valid (slightly wider) answer
        return hi
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-15, rtol=1e-12))


def _log_lambda_scalar(score: float, information: float, rho: float) -> float:
    """log_lambda_plus for Python floats (the crossing search calls it many times)."""
    total = rho + information
    x = score / math.sqrt(total)
    if x < 0:
        core = math.log(0.5 * float(special.erfcx(-x / _SQRT2)))
    else:
        core = 0.5 * x * x + float(special.log_ndtr(x))
    return _LOG2 + 0.5 * (math.log(rho) - math.log(total)) + core


def information_to_cross(
    excess: float, information: float, rho: float, alpha: float, scales: Sequence[float] = (1.0,)
) -> float:
    """Smallest information I' >= `information` at which an estimate `excess` beyond the null value
    would make the (mixture) Lambda_plus(I' * excess, I') reach 1/alpha; inf if it never would
    (excess <= 0).

    Used for "samples still needed": it assumes the current estimate stays where it is.
    """
    target = math.log(1.0 / alpha)
    if not excess > 0 or not math.isfinite(excess):
        return math.inf
    lo = max(information, 0.0)
    rhos = [rho * c for c in scales]
    log_w = -math.log(len(rhos))

    def gap(i: float) -> float:
        terms = [_log_lambda_scalar(i * excess, i, r) for r in rhos]
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms)) + log_w - target

    if gap(lo) >= 0:
        return lo
    # Doubling bracket: log Lambda grows like I * excess^2 / 2 for large I, so this terminates.
    hi = max(lo, max(rhos), 1.0 / excess**2)
    while gap(hi) < 0:
        lo, hi = hi, hi * 2.0
        if hi > _MAX_INFORMATION:
            return math.inf
    # Root on a log scale (the bracket can span many orders of magnitude); gap(lo) < 0 <= gap(hi).
    lo = max(lo, hi * 1e-15)
    if gap(lo) >= 0:
        return lo
    root = optimize.brentq(lambda li: gap(math.exp(li)), math.log(lo), math.log(hi), xtol=1e-13, rtol=1e-12)
    # brentq may land a hair below the crossing; return a point on the crossing side.
    at = math.exp(root)
    return at if gap(at) >= 0 else at * (1 + 1e-11)
