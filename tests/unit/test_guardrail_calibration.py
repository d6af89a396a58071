"""Calibration of the guardrail test (core/bounded_diff.py) under continuous monitoring.

Simulated rollouts, vectorised, through `diff_path` (the code the fold runs): 60 looks, a few error
events per interval. Tolerance: if the false-rollback rate were exactly alpha, the count of false
rollbacks in R rollouts is Binomial(R, alpha), with standard error SE = sqrt(alpha (1 - alpha) / R);
asserting rate <= alpha + 2.33 SE fails with probability about 1% for a test exactly at alpha and less
for a conservative one. A naive per-look z test on the same streams fails the same assertion, so the
check has teeth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from lossgate.core.bounded import NOT_WORSE, REGRESSION
from lossgate.core.bounded_diff import DiffNull, confidence_bound, diff_path
from lossgate.core.family import family_size, split_alpha

ROLLOUTS = 2000
LOOKS = 60
ALPHA = 0.01
Z99 = float(special.ndtri(0.99))


def _tolerance(alpha: float, rollouts: int) -> float:
    return alpha + Z99 * math.sqrt(alpha * (1 - alpha) / rollouts)


def _binomial_arms(
    rng: np.random.Generator, p_b: float, p_c: float, n_b: float, n_c: float, rollouts: int = ROLLOUTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    nb = rng.poisson(n_b, (rollouts, LOOKS)).astype(np.float64)
    nc = rng.poisson(n_c, (rollouts, LOOKS)).astype(np.float64)
    return (
        nb,
        rng.binomial(nb.astype(np.int64), p_b).astype(np.float64),
        nc,
        rng.binomial(nc.astype(np.int64), p_c).astype(np.float64),
    )


def _false_rollbacks(log_p: np.ndarray, alpha: float) -> float:
    return float((log_p <= math.log(alpha)).any(axis=-1).mean())


USED = np.ones(LOOKS, dtype=np.bool_)


@pytest.mark.parametrize(
    ("p_b", "n_c", "null", "p_c"),
    [
        # On the absolute margin (the hardest null), at about one error per canary interval.
        (0.005, 200.0, DiffNull.absolute(0.002), 0.007),
        # Equal arms, five canary requests an interval (almost never an event).
        (0.005, 5.0, DiffNull.absolute(0.002), 0.005),
        # On a relative margin of 50%: the canary's rate is exactly 1.5 x the baseline's.
        (0.005, 200.0, DiffNull.relative_to_baseline(0.5), 0.0075),
        # A common event (fraction of slow requests near 10%), on a 1-point margin.
        (0.10, 400.0, DiffNull.absolute(0.01), 0.11),
    ],
)
def test_false_rollbacks_at_most_alpha_over_60_looks(
    p_b: float, n_c: float, null: DiffNull, p_c: float
) -> None:
    # Given rollouts whose canary sits on the null's boundary, looked at every interval
    rng = np.random.default_rng(17)
    nb, sb, nc, sc = _binomial_arms(rng, p_b, p_c, 4 * n_c, n_c)
    # When the guardrail test runs over 60 looks
    path = diff_path(nb, sb, nc, sc, USED, null)
    # Then it rolls back at most alpha of them (within the binomial tolerance)
    assert _false_rollbacks(path.log_p_regression, ALPHA) <= _tolerance(ALPHA, ROLLOUTS)


def test_naive_per_look_z_test_fails_the_same_check() -> None:
    # Given the boundary streams of the first case
    rng = np.random.default_rng(17)
    nb, sb, nc, sc = _binomial_arms(rng, 0.005, 0.007, 800.0, 200.0)
    # When a z test on the pooled rates is repeated at every look at the same alpha
    cb, cc = np.cumsum(nb, -1), np.cumsum(nc, -1)
    rb, rc = np.cumsum(sb, -1) / cb, np.cumsum(sc, -1) / cc
    se = np.sqrt(np.maximum(rb * (1 - rb) / cb + rc * (1 - rc) / cc, 1e-12))
    z = (rc - rb - 0.002) / se
    naive = float((z >= special.ndtri(1 - ALPHA)).any(axis=-1).mean())
    # Then it fails the tolerance the guardrail test passes (the check has teeth)
    assert naive > _tolerance(ALPHA, ROLLOUTS)


def test_bounded_mean_latency_holds_alpha() -> None:
    # Given latencies clipped to a 2 s timeout: a lognormal-ish mix on 6 values, equal arms
    rng = np.random.default_rng(5)
    values = np.array([0.02, 0.05, 0.1, 0.3, 1.0, 2.0])
    probs = np.array([0.3, 0.35, 0.2, 0.1, 0.04, 0.01])
    nb = rng.poisson(120.0, (ROLLOUTS, LOOKS))
    nc = rng.poisson(30.0, (ROLLOUTS, LOOKS))
    sb = np.einsum("rkv,v->rk", rng.multinomial(nb, probs), values)
    sc = np.einsum("rkv,v->rk", rng.multinomial(nc, probs), values)
    null = DiffNull.absolute(0.01, bound=2.0)
    # When the mean-latency test runs with the mean difference on its 10 ms margin... (canary + 10 ms)
    sc = sc + 0.01 * nc
    path = diff_path(nb.astype(float), sb, nc.astype(float), sc, USED, null)
    # Then false rollbacks stay under alpha
    assert _false_rollbacks(path.log_p_regression, ALPHA) <= _tolerance(ALPHA, ROLLOUTS)


def test_family_of_six_checks_holds_alpha_rollback() -> None:
    # Given six independent checks on equal arms, each at its Bonferroni share
    rng = np.random.default_rng(6)
    share = split_alpha(ALPHA, family_size(guardrails=5, class_slots=0))
    any_false = np.zeros(ROLLOUTS, dtype=np.bool_)
    for p in (0.005, 0.01, 0.05, 0.1, 0.2, 0.5):
        nb, sb, nc, sc = _binomial_arms(rng, p, p + 0.5 * p, 800.0, 200.0)
        path = diff_path(nb, sb, nc, sc, USED, DiffNull.relative_to_baseline(0.5))
        any_false |= (path.log_p_regression <= math.log(share)).any(axis=-1)
    # Then the family rolls back at most alpha_rollback of the rollouts
    assert float(any_false.mean()) <= _tolerance(ALPHA, ROLLOUTS)


def test_detects_one_point_error_rate_regression_at_half_percent() -> None:
    # Given a canary at 1.5% errors against 0.5%, 200 canary requests an interval
    rng = np.random.default_rng(8)
    nb, sb, nc, sc = _binomial_arms(rng, 0.005, 0.015, 800.0, 200.0, rollouts=500)
    # When the test runs with a 0.2-point margin
    path = diff_path(nb, sb, nc, sc, USED, DiffNull.absolute(0.002))
    # Then nearly every rollout is caught within the 60 looks
    assert _false_rollbacks(path.log_p_regression, ALPHA) >= 0.95


def test_confidence_sequence_covers_the_true_difference() -> None:
    # Given equal-rate boundary streams
    rng = np.random.default_rng(9)
    nb, sb, nc, sc = _binomial_arms(rng, 0.02, 0.03, 400.0, 100.0, rollouts=500)
    null = DiffNull.absolute(0.005)
    path = diff_path(nb, sb, nc, sc, USED, null)
    # When the one-sided bounds are inverted at every look
    low = confidence_bound(path.reg, REGRESSION, ALPHA, null)
    high = confidence_bound(path.nw, NOT_WORSE, 0.05, null)
    # Then the running intersection misses the true difference (0.01) at most alpha + 0.05 of the time
    missed = ((np.maximum.accumulate(low, -1) > 0.01) | (np.minimum.accumulate(high, -1) < 0.01)).any(-1)
    assert float(missed.mean()) <= _tolerance(ALPHA + 0.05, 500)
    # And the bounds are inside the difference's range
    assert float(low.min()) >= -1.0
    assert float(high.max()) <= 1.0
