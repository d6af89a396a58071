"""The warn-only watch's test (core/watch_ref.py): at most alpha false warnings however often it is
looked at, and it finds a promoted model clearly above the reference. Fixed seeds."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.core.watch_ref import log_e_value, p_value

ALPHA = 0.05


def _watch(rng: np.random.Generator, mean: float, reference: float, looks: int, per_look: int) -> int | None:
    """The first look whose running p-value is below ALPHA (None: never), losses Gamma(0.5) of `mean`."""
    n = s = q = 0.0
    for k in range(looks):
        x = rng.gamma(0.5, mean / 0.5, per_look)
        n, s, q = n + per_look, s + float(x.sum()), q + float((x * x).sum())
        if p_value(n, s, q, reference) <= ALPHA:
            return k
    return None


def test_false_warnings_stay_below_alpha_over_200_looks() -> None:
    # Given 400 watches whose promoted model sits exactly at the reference (the null's boundary)
    rng = np.random.default_rng(21)
    alarms = sum(_watch(rng, 0.4, 0.4, looks=200, per_look=50) is not None for _ in range(400))
    # Then at most alpha of them ever warn over 200 looks (binomial 3-sigma slack over 400 runs)
    assert alarms <= 400 * ALPHA + 3 * math.sqrt(400 * ALPHA * (1 - ALPHA)), alarms


def test_a_model_25_percent_above_the_reference_is_found() -> None:
    # Given watches of a model at 0.5 nats against a reference (+margin) of 0.4
    rng = np.random.default_rng(7)
    found = [_watch(rng, 0.5, 0.4, looks=200, per_look=50) for _ in range(50)]
    # Then every one warns, within about 10,000 labels
    assert all(k is not None and k < 200 for k in found), found


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.floats(1, 1e6),
    st.floats(0.0, 3.0),
    st.floats(0.0, 4.0),
    st.floats(0.01, 3.0),
)
def test_the_e_value_is_finite_and_rewards_only_means_above_the_reference(
    n: float, mean: float, spread: float, reference: float
) -> None:
    s, q = n * mean, n * (mean * mean + spread)
    log_e = log_e_value(n, s, q, reference)
    assert math.isfinite(log_e)
    assert 0.0 <= p_value(n, s, q, reference) <= 1.0
    if mean <= reference:  # a mean at or below the reference is never evidence against the null
        assert log_e <= 1e-9
