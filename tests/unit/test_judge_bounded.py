"""The bounded test's e-process: the inequality it rests on, its per-request form, its inversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.bounded import (
    GRID_FACTORS,
    GRID_LOG_WEIGHTS,
    KAPPA,
    NOT_WORSE,
    REGRESSION,
    _h,
    components,
    confidence_bound,
    information_to_cross,
    log_e_value,
)
from lossgate.core.stratified import ArmArrays, stratified_path

B = MAX_LOSS_NATS


def test_grid_weights_are_a_probability_distribution() -> None:
    assert len(GRID_FACTORS) == len(GRID_LOG_WEIGHTS)
    assert sum(math.exp(w) for w in GRID_LOG_WEIGHTS) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, B), st.floats(1e-3, 1.0)), min_size=1, max_size=6),
    st.floats(0.0, B),
    st.floats(0.0, 1.0),
    st.sampled_from([REGRESSION, NOT_WORSE]),
)
def test_each_requests_factor_has_expectation_at_most_one(
    atoms: list[tuple[float, float]], centre: float, bet_fraction: float, direction: int
) -> None:
    # Given any distribution on [0, L] (a few atoms), any centre fixed in advance, and any bet up to
    # KAPPA of its limit 1 / r, where r is how far one request can fall on the losing side of the centre
    xs = np.array([a for a, _ in atoms])
    ps = np.array([p for _, p in atoms])
    ps = ps / ps.sum()
    mu = float(ps @ xs)
    r = centre if direction == REGRESSION else B - centre
    bet = bet_fraction * KAPPA / max(r, 1e-6)
    # When the factor exp(b y - h(r b) b^2 (x - m)^2), y the signed deviation from the true mean, is
    # averaged exactly over the distribution
    y = direction * (xs - mu)
    factor = np.exp(bet * y - float(_h(np.asarray(r * bet))) * bet * bet * (xs - centre) ** 2)
    # Then it is at most 1: the supermartingale step the whole test rests on (Fan's inequality)
    assert float(ps @ factor) <= 1.0 + 1e-12


def _raw(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    base, can = [], []
    for k in range(8):
        n_b, n_c = rng.integers(5, 60), rng.integers(3, 30)
        base.append(np.minimum(rng.exponential(0.3, n_b) * (1 + (k % 3)), B))
        can.append(np.minimum(rng.exponential(0.33, n_c) * (1 + (k % 3)), B))
    return base, can


def _arrays(samples: list[np.ndarray]) -> ArmArrays:
    return ArmArrays.of(
        [len(x) for x in samples], [x.sum() for x in samples], [(x * x).sum() for x in samples]
    )


@pytest.mark.parametrize("direction", [REGRESSION, NOT_WORSE])
def test_components_equal_the_product_over_requests(direction: int) -> None:
    # Given raw losses of both arms over eight intervals
    base, can = _raw(3)
    path = stratified_path(_arrays(base), _arrays(can), np.ones(len(base), dtype=bool))
    scale = np.full(len(base), 0.01)
    delta = 0.02
    # When the grid's components are computed from the (n, sum, sum of squares) aggregates
    parts = list(components(path, scale, direction))
    # Then each equals the sum over requests of b (signed deviation from the null) - h(r b) b^2 (x - m)^2
    for factor, part in zip(GRID_FACTORS, parts, strict=True):
        total = 0.0
        for k in range(len(base)):
            m_b, m_c = path.centre_b[k], path.centre_c[k]
            r_c = m_c if direction == REGRESSION else B - m_c
            r_b = B - m_b if direction == REGRESSION else m_b
            beta = min(factor * 0.01 * path.weight[k], KAPPA * min(len(can[k]) / r_c, len(base[k]) / r_b))
            b_c, b_b = beta / len(can[k]), beta / len(base[k])
            lin = direction * (b_c * can[k].sum() - b_b * base[k].sum() - beta * delta)
            pen = float(_h(np.asarray(r_c * b_c))) * b_c**2 * ((can[k] - m_c) ** 2).sum()
            pen += float(_h(np.asarray(r_b * b_b))) * b_b**2 * ((base[k] - m_b) ** 2).sum()
            total += lin - pen
        assert part.a[-1] - direction * delta * part.c[-1] == pytest.approx(total, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("direction", "alpha"), [(REGRESSION, 0.01), (NOT_WORSE, 0.05)])
def test_the_confidence_bound_is_where_the_test_crosses(direction: int, alpha: float) -> None:
    # Given a canary clearly worse than the baseline, 30 looks of 2,000 requests per arm
    rng = np.random.default_rng(5)
    base = [np.minimum(rng.exponential(0.3, 2000), B) for _ in range(30)]
    can = [np.minimum(rng.exponential(0.4, 2000), B) for _ in range(30)]
    path = stratified_path(_arrays(base), _arrays(can), np.ones(30, dtype=bool))
    parts = list(components(path, np.full(30, 0.01), direction))
    # When the one-sided bound is inverted
    bound = confidence_bound(parts, direction, alpha)
    # Then at the last look the test crosses exactly there: rejected on one side, not on the other
    target = math.log(1 / alpha)
    inside = bound[-1] + 1e-9 * direction
    outside = bound[-1] - 1e-9 * direction
    assert log_e_value(parts, direction, np.asarray(outside))[-1] >= target
    assert log_e_value(parts, direction, np.asarray(inside))[-1] < target
    # And the bound brackets the truth 0.1 nats on the right side
    assert (bound[-1] < 0.1) if direction == REGRESSION else (bound[-1] > 0.1)


def test_information_to_cross_is_the_normal_approximations_root() -> None:
    info = information_to_cross(0.01, 0.01, 0.0, 0.01)
    terms = [
        w + f * 0.01 * info * 0.01 - (f * 0.01) ** 2 * info / 2
        for f, w in zip(GRID_FACTORS, GRID_LOG_WEIGHTS, strict=True)
    ]
    top = max(terms)
    assert top + math.log(sum(math.exp(t - top) for t in terms)) == pytest.approx(math.log(100), abs=1e-8)
    assert information_to_cross(-0.01, 0.01, 0.0, 0.01) == math.inf
    assert information_to_cross(0.01, 0.01, 2 * info, 0.01) == 2 * info
