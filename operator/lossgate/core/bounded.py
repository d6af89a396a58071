"""The judge's sequential test: an empirical-Bernstein e-process for a difference of bounded means
(docs/judge.md, "The test").

Every per-request loss X lies in [0, L] (L = MAX_LOSS_NATS). Take a centre m fixed before the data
and r with X - m >= -r (r = m for "X is large", since X >= 0; r = L - m for "X is small"). Fan's
inequality, exp(x z - (-log(1 - x) - x) z^2) <= 1 + x z for z >= -1 and 0 <= x < 1, applied to
z = (X - m) / r and x = r b, gives for every bet 0 <= b < 1/r

    E exp(b (X - mu) - h(r b) b^2 (X - m)^2) <= exp(-y) (1 + y) <= 1,   y = b (mu - m),
    h(x) = (-log(1 - x) - x) / x^2  (h(0) = 1/2),

whatever the distribution of X. In stratum k the canary's n_c requests bet b_c = beta_k / n_c on
"X above its mean" and the baseline's n_b requests bet b_b = beta_k / n_b on "Y below its mean";
the two means enter as beta_k (mu_c - mu_b), so under H0: mu_c - mu_b <= delta

    log E_k = beta_k (D_k - delta) - h(r_c b_c) b_c^2 dev2_c - h(r_b b_b) b_b^2 dev2_b

is the log of an e-value given the past, and the product over strata is a test supermartingale.
The squared deviations are exact sums over the requests, computed from (n, sum, sum of squares), so
heavy tails are paid for as they are seen and no normal approximation is made at any count.
beta_k = s * w_k (the stratified weights) for effect scales s on a grid, capped so that r b <= KAPPA;
the prior-weighted average over the grid is the e-process, and by Ville's inequality
P(sup_t E_t >= 1/alpha) <= alpha.

The same test at the other sign (mu_c below mu_b + delta) gives the non-inferiority e-process, and
inverting either over delta gives a one-sided confidence sequence (log E is linear in delta for
each grid point, so the inversion is monotone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.stratified import StratifiedPath, running_sum

FloatArray = NDArray[np.float64]

# The prior on the effect scale s (how far beyond the null the bets are placed), in multiples of the
# margin: an equal mixture of half-normals with these scales, so the test is tightest for an excess of
# about one margin (a regression of twice the margin, the planning point) and still quick for 3-10x
# larger ones. Discretised on a log grid from 1/8 to 64 margins at steps of 2^(1/4); any weights
# that sum to 1 keep the average a test supermartingale.
PRIOR_SD_MARGINS: tuple[float, ...] = (0.9, 2.8, 9.0)
GRID_FACTORS: tuple[float, ...] = tuple(2.0 ** (j / 4) for j in range(-12, 25))


def _grid_log_weights() -> tuple[float, ...]:
    dens = [f * sum(math.exp(-0.5 * (f / t) ** 2) / t for t in PRIOR_SD_MARGINS) for f in GRID_FACTORS]
    total = sum(dens)
    return tuple(math.log(d / total) for d in dens)


GRID_LOG_WEIGHTS = _grid_log_weights()
# Largest fraction of the per-request bet limit 1 / r any stratum uses: past it h() grows fast.
KAPPA = 0.5
# Directions of the test.
REGRESSION = 1  # H0: theta <= delta, evidence that the canary is worse
NOT_WORSE = -1  # H0: theta >= delta, evidence that the canary is not worse

_BISECTIONS = 40  # 27.6 nats / 2^40 = 2.5e-11 nats: far below anything displayed
_SERIES_BELOW = 1e-3


def _h(x: FloatArray) -> FloatArray:
    """(-log(1 - x) - x) / x^2 for x in [0, 1), by its series near 0 (no cancellation)."""
    small = x < _SERIES_BELOW
    xs = np.where(small, 0.5, x)
    exact = (-np.log1p(-xs) - xs) / (xs * xs)
    series = 0.5 + x / 3.0 + x * x / 4.0 + x**3 / 5.0
    out: FloatArray = np.where(small, series, exact)
    return out


def _ranges(path: StratifiedPath, direction: int) -> tuple[FloatArray, FloatArray]:
    """How far one request can fall on the losing side of its centre: canary, baseline."""
    if direction == REGRESSION:
        return path.centre_c, MAX_LOSS_NATS - path.centre_b
    return MAX_LOSS_NATS - path.centre_c, path.centre_b


@dataclass(frozen=True)
class Component:
    """One grid point's cumulative log e-value, as `a - direction * delta * c` (shape (..., K))."""

    log_weight: float
    a: FloatArray
    c: FloatArray


def components(
    path: StratifiedPath, scale: ArrayLike, direction: int, start: Sequence[Component] | None = None
) -> Iterator[Component]:
    """The grid's components for the strata in `path`, one at a time (the benchmark streams them);
    `scale` is the predictable margin per interval (effect scales are GRID_FACTORS times it).
    `start`: the components after earlier intervals (their last look), which these continue."""
    r_c, r_b = _ranges(path, direction)
    cap = KAPPA * np.minimum(path.n_c / np.maximum(r_c, 1e-300), path.n_b / np.maximum(r_b, 1e-300))
    base = np.asarray(scale, dtype=np.float64) * path.weight
    if path.stratum.ndim == 1:  # one history: the whole grid at once (the same numbers, 37x fewer calls)
        yield from _stacked(path, direction, start, r_c, r_b, cap, base)
        return
    for g, (factor, log_w) in enumerate(zip(GRID_FACTORS, GRID_LOG_WEIGHTS, strict=True)):
        beta = np.where(path.stratum, np.minimum(factor * base, cap), 0.0)
        b_c, b_b = beta / path.n_c, beta / path.n_b
        penalty = _h(r_c * b_c) * b_c * b_c * path.dev2_c + _h(r_b * b_b) * b_b * b_b * path.dev2_b
        a0, c0 = (start[g].a, start[g].c) if start is not None else (0.0, 0.0)
        a = running_sum(direction * beta * path.diff - penalty, a0)
        yield Component(log_w, a, running_sum(beta, c0))


def _stacked(
    path: StratifiedPath,
    direction: int,
    start: Sequence[Component] | None,
    r_c: FloatArray,
    r_b: FloatArray,
    cap: FloatArray,
    base: FloatArray,
) -> Iterator[Component]:
    """components() of a 1-D path with the grid as a leading axis: elementwise the same operations."""
    factors = np.asarray(GRID_FACTORS, dtype=np.float64)[:, None]
    beta = np.where(path.stratum, np.minimum(factors * base, cap), 0.0)
    b_c, b_b = beta / path.n_c, beta / path.n_b
    penalty = _h(r_c * b_c) * b_c * b_c * path.dev2_c + _h(r_b * b_b) * b_b * b_b * path.dev2_b
    a0 = np.asarray([p.a for p in start], dtype=np.float64).reshape(-1) if start is not None else 0.0
    c0 = np.asarray([p.c for p in start], dtype=np.float64).reshape(-1) if start is not None else 0.0
    a = running_sum(direction * beta * path.diff - penalty, np.broadcast_to(a0, (len(GRID_FACTORS),)))
    c = running_sum(beta, np.broadcast_to(c0, (len(GRID_FACTORS),)))
    for g, log_w in enumerate(GRID_LOG_WEIGHTS):
        yield Component(log_w, a[g], c[g])


def last_look(parts: Iterable[Component]) -> tuple[Component, ...]:
    """Each component at its last look only: what a later chunk of intervals continues from."""
    return tuple(Component(p.log_weight, p.a[..., -1], p.c[..., -1]) for p in parts)


def log_e_value(parts: Iterable[Component], direction: int, delta: ArrayLike) -> FloatArray:
    """log of the grid-averaged e-value at null value `delta` after each look (shape (..., K))."""
    d = np.asarray(delta, dtype=np.float64)
    total: FloatArray | None = None
    for p in parts:
        term = p.log_weight + p.a - direction * d * p.c
        total = term if total is None else np.logaddexp(total, term)
    if total is None:
        raise ValueError("no grid components")
    return total


def confidence_bound(parts: Sequence[Component], direction: int, alpha: float) -> FloatArray:
    """One-sided confidence sequence at level alpha after each look: for REGRESSION the lower bound
    (every delta below it is rejected), for NOT_WORSE the upper bound. +-MAX_LOSS_NATS where the
    test has rejected nothing inside the range."""
    target = math.log(1.0 / alpha)
    # The grid stacked once (G, ..., K): each bisection step is then a few whole-array operations.
    w = np.asarray([p.log_weight for p in parts]).reshape((-1,) + (1,) * parts[0].a.ndim)
    a = np.stack([p.a for p in parts]) + w
    c = direction * np.stack([p.c for p in parts])

    def log_e(delta: FloatArray) -> FloatArray:
        terms = a - delta * c
        top = terms.max(axis=0)
        # Summed row by row (not pairwise): the same at every look whatever the array's length.
        out: FloatArray = top + np.log(np.add.accumulate(np.exp(terms - top), axis=0)[-1])
        return out

    # log E is decreasing in delta for REGRESSION, increasing for NOT_WORSE: bisect between the side
    # that is rejected (lo) and the side that is not (hi).
    lo = np.full(parts[0].a.shape, -MAX_LOSS_NATS * direction)
    hi = -lo
    none = log_e(lo) < target
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        rejected = log_e(mid) >= target
        lo = np.where(rejected, mid, lo)
        hi = np.where(rejected, hi, mid)
    out: FloatArray = np.where(none, -MAX_LOSS_NATS * direction, lo)
    return out


def information_to_cross(excess: float, margin: float, information: float, alpha: float) -> float:
    """Smallest information I' >= `information` at which an estimate `excess` nats beyond the null
    would make the grid's e-value reach 1/alpha, in the normal approximation of each component
    (log E ~ s I' e - s^2 I' / 2 for the effect scale s = factor * margin, caps ignored); inf if never
    (excess <= 0). Only for the "samples still needed" projection, never for a decision."""
    if not (excess > 0 and math.isfinite(excess) and margin > 0 and math.isfinite(margin)):
        return math.inf
    target = math.log(1.0 / alpha)
    scales = [f * margin for f in GRID_FACTORS]

    def gap(i: float) -> float:
        terms = [w + s * i * excess - s * s * i / 2 for s, w in zip(scales, GRID_LOG_WEIGHTS, strict=True)]
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms)) - target

    lo = max(information, 0.0)
    if gap(lo) >= 0:
        return lo
    hi = max(lo, 1.0 / (excess * excess)) * 2.0
    while gap(hi) < 0:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    return float(optimize.brentq(gap, lo, hi, xtol=1e-12, rtol=1e-12))
