"""The warn-only watch's test (spec.postPromotion.holdbackWeight: 0): is the promoted model's mean loss
above a fixed reference, the baseline's mean loss at the rollout's last look plus the margin?

Losses X lie in [0, L]. With the centre m = c (the reference plus the margin, fixed before the watch)
and r = c (X - c >= -c since X >= 0), Fan's inequality gives, for every fixed bet 0 <= b < 1/r,

    E exp(b (X - mu) - h(r b) b^2 (X - c)^2) <= 1,   h(x) = (-log(1 - x) - x) / x^2,

so under H0: mu <= c the product over the watch's requests, exp(b (S - n c) - h(r b) b^2 D) with
D = sum (X - c)^2, is a test supermartingale; so is the average over a fixed grid of bets, and by
Ville's inequality it ever reaches 1/alpha with probability at most alpha. It only needs the running
sums (n, sum, sum of squares) of the watch's labels, which status keeps.

What it does not account for: the reference is an estimate taken before the watch, and the traffic
and its labels may drift after it. Without a concurrent control that drift is confounded with the
model, which is why this test only warns (docs/judge.md, "Post-promotion watch").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KAPPA = 0.5  # the largest bet is KAPPA / r: r b stays well below 1
GRID = 24  # bets KAPPA / r * 2^-j, j = 0..GRID-1, equally weighted


@dataclass(frozen=True)
class LateSums:
    """Canary labels read in the watch this tick: count, sum and sum of squares of their losses, and
    the end (unix ms) of the last interval counted, so no interval is ever counted twice."""

    n: float
    sum: float
    sumsq: float
    through_ms: int


def _h(x: float) -> float:
    if x < 1e-6:
        return 0.5 + x / 3
    return (-math.log1p(-x) - x) / (x * x)


def log_e_value(n: float, total: float, sumsq: float, reference: float) -> float:
    """log of the grid-averaged e-value of H0: mean <= reference (reference > 0), from running sums."""
    if n <= 0 or not reference > 0:
        return 0.0
    c = r = reference
    dev2 = max(sumsq - 2 * c * total + n * c * c, 0.0)
    logs = []
    for j in range(GRID):
        b = KAPPA / r * 2.0**-j
        logs.append(b * (total - n * c) - _h(r * b) * b * b * dev2)
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs) / GRID)


def p_value(n: float, total: float, sumsq: float, reference: float) -> float:
    """The always-valid p-value at these sums (min(1, 1/E)); the watch keeps whether it ever fell
    below alpha, so looking every interval costs nothing."""
    return min(1.0, math.exp(-log_e_value(n, total, sumsq, reference)))
