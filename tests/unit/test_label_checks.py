"""The label checks' arithmetic: PromQL's histogram_quantile, the delay warning, and the coverage
test (a two-proportion z-test that holds only on a significant and material difference)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.core.label_checks import (
    COVERAGE_ALPHA,
    COVERAGE_MIN_DIFFERENCE,
    Coverage,
    coverage_imbalance,
    delay_warning,
    histogram_quantile,
)

BOUNDS = [60.0, 3600.0, 86400.0, 172800.0]


def test_histogram_quantile_interpolates_like_promql() -> None:
    # Given 10 delays: 2 under a minute, 6 within the hour, 2 within the day, none beyond
    cumulative = [2.0, 8.0, 10.0, 10.0, 10.0]
    # Then the median is interpolated inside (60 s, 3600 s], the p90 inside (3600 s, 86400 s]
    assert histogram_quantile(0.5, BOUNDS, cumulative) == 60 + (3600 - 60) * (5 - 2) / 6
    assert histogram_quantile(0.9, BOUNDS, cumulative) == 3600 + (86400 - 3600) * (9 - 8) / 2
    # And an empty histogram has no quantile; one in the +Inf bucket gives the top finite bound
    assert histogram_quantile(0.9, BOUNDS, [0.0] * 5) is None
    assert histogram_quantile(0.9, BOUNDS, [0.0, 0.0, 0.0, 0.0, 4.0]) == 172800.0


def test_delay_warning_only_when_min_duration_is_shorter_than_p90() -> None:
    assert delay_warning(3600, 1800, step=2) is None
    assert delay_warning(3600, None, step=2) is None
    msg = delay_warning(600, 2 * 86400, step=2)
    assert msg is not None
    assert "step 2's minDuration (10.0m)" in msg
    assert "label delay (2.0d)" in msg
    assert "steps[].minDuration" in msg


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    n_b=st.integers(0, 100_000),
    n_c=st.integers(0, 100_000),
    r_b=st.floats(0, 1),
    r_c=st.floats(0, 1),
)
def test_coverage_hold_is_significant_material_and_symmetric(
    n_b: int, n_c: int, r_b: float, r_c: float
) -> None:
    b, c = Coverage(n_b, round(n_b * r_b)), Coverage(n_c, round(n_c * r_c))
    check = coverage_imbalance(b, c)
    swapped = coverage_imbalance(c, b)
    # A hold needs both a significant (p < alpha) and a material (>= 5 points) difference
    if check.hold is not None:
        assert check.p_value is not None
        assert check.p_value < COVERAGE_ALPHA
        assert b.ratio is not None
        assert c.ratio is not None
        assert abs(b.ratio - c.ratio) >= COVERAGE_MIN_DIFFERENCE
    # And the test does not depend on which arm is which
    assert (check.hold is None) == (swapped.hold is None)
    if check.z is not None:
        assert swapped.z is not None
        assert math.isclose(check.z, -swapped.z, rel_tol=1e-9, abs_tol=1e-12)


def test_equal_coverage_never_holds_and_a_real_gap_does() -> None:
    # Given equal ratios on arms of any size: no hold
    assert coverage_imbalance(Coverage(5000, 4000), Coverage(800, 640)).hold is None
    # Given 80% of the baseline's 5000 predictions labelled but 60% of the canary's 1200
    check = coverage_imbalance(Coverage(5000, 4000), Coverage(1200, 720))
    # Then the weight is held with the numbers in the message
    assert check.hold is not None
    assert "60% of the canary's 1200 predictions but 80% of the baseline's 5000" in check.hold
    assert check.z is not None
    assert check.z < -10
    # And too few predictions never hold, whatever the ratios
    assert coverage_imbalance(Coverage(50, 50), Coverage(50, 0)).hold is None
