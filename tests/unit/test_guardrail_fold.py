"""The guardrail check as a fold: chunked equals whole, status round-trips, fixed size, verdicts stick."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.core.bounded_diff import DiffNull
from lossgate.core.family import CheckVerdict, combine, family_size, split_alpha
from lossgate.core.guardrail import (
    CheckConfig,
    CheckFold,
    CountInterval,
    Counts,
    advance,
    conclude,
    decode,
    encode,
    evaluate,
)
from lossgate.core.verdicts import LossVerdict

CONFIG = CheckConfig("errorRate", DiffNull.absolute(0.01), alpha_rollback=0.005)


def _intervals(seed: int, k: int, p_b: float, p_c: float, n: int = 300) -> list[CountInterval]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        nb, nc = int(rng.poisson(n)), int(rng.poisson(n / 3))
        out.append(
            CountInterval(
                30.0 * i, 30.0 * (i + 1),
                Counts(nb, float(rng.binomial(nb, p_b))), Counts(nc, float(rng.binomial(nc, p_c))),
                canary_weight=10 if i < k // 2 else 25,
            )
        )  # fmt: skip
    return out


def _roundtrip(fold: CheckFold) -> CheckFold:
    return decode(json.loads(json.dumps(encode(fold))))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    k=st.integers(1, 40),
    cuts=st.lists(st.integers(1, 39), max_size=4),
    p_c=st.sampled_from([0.0, 0.02, 0.05, 0.2]),
)
def test_chunked_fold_equals_whole_history(seed: int, k: int, cuts: list[int], p_c: float) -> None:
    # Given a history cut into chunks at random points, with status written as JSON in between
    intervals = _intervals(seed, k, 0.02, p_c)
    bounds = sorted({c for c in cuts if c < k})
    fold = CheckFold()
    for lo, hi in zip([0, *bounds], [*bounds, k], strict=True):
        fold = _roundtrip(advance(fold, intervals[lo:hi], CONFIG))
    # When the fold concludes
    got = conclude(fold, CONFIG)
    # Then it says exactly what the whole history judged at once says
    assert got == evaluate(intervals, CONFIG)


def test_state_size_does_not_grow_with_age() -> None:
    # Given a fold after 10 and after 400 intervals
    short = encode(advance(CheckFold(), _intervals(1, 10, 0.02, 0.02), CONFIG))
    long = encode(advance(CheckFold(), _intervals(1, 400, 0.02, 0.02), CONFIG))
    # Then both fit the same fixed bound: counts, weight, 8 sums, the interval, three looks of 8
    # numbers and four grids of 37 (optional looks are empty until reached)
    bound = 2 + 1 + 8 + 2 + 3 * 8 + 4 * 37
    assert sum(map(len, short.values())) <= bound
    assert sum(map(len, long.values())) <= bound
    assert short.keys() == long.keys()


def test_regression_sticks_and_reports_the_look_that_decided() -> None:
    # Given a canary at 20% errors against 2%
    fold = advance(CheckFold(), _intervals(3, 20, 0.02, 0.2), CONFIG)
    first = conclude(fold, CONFIG)
    assert first.verdict is LossVerdict.REGRESSION
    assert first.cs_low > CONFIG.null.delta
    assert "errorRate" in first.reason
    # When later intervals look equal
    later = conclude(advance(fold, _intervals(4, 40, 0.02, 0.02), CONFIG), CONFIG)
    # Then the verdict and its numbers stay those of the deciding look
    assert later.verdict is LossVerdict.REGRESSION
    assert later.delta == first.delta
    assert later.looks == 60


def test_equal_arms_show_not_worse_with_enough_requests() -> None:
    # Given equal 2% error rates and plenty of requests
    result = evaluate(_intervals(5, 60, 0.02, 0.02, n=3000), CONFIG)
    # Then non-inferiority is shown and the interval sits below the margin
    assert result.verdict is LossVerdict.NOT_WORSE
    assert result.cs_high < 0.01
    assert result.p_not_worse <= 0.05


def test_min_requests_delay_a_rollback() -> None:
    # Given a clear regression but a quota larger than the canary's requests
    config = CheckConfig("errorRate", DiffNull.absolute(0.01), min_requests_before_rollback=1e9)
    result = evaluate(_intervals(3, 20, 0.02, 0.2), config)
    # Then the check waits
    assert result.verdict is LossVerdict.INSUFFICIENT_DATA


def test_relative_margin_tests_the_ratio_exactly() -> None:
    # Given a canary with 3x the baseline's rate, relative margin 50%
    config = CheckConfig("latency", DiffNull.relative_to_baseline(0.5))
    result = evaluate(_intervals(7, 40, 0.05, 0.15, n=1000), config)
    # Then the test rolls back, and reports the excess over 1.5 x the baseline (margin 0)
    assert result.verdict is LossVerdict.REGRESSION
    assert result.margin == 0.0
    assert result.cs_low > 0.0


def test_corrupt_numbers_are_rejected() -> None:
    numbers = encode(advance(CheckFold(), _intervals(1, 5, 0.02, 0.02), CONFIG))
    numbers["reg_a"] = numbers["reg_a"][:3]
    try:
        decode(numbers)
    except ValueError:
        return
    raise AssertionError("a truncated grid decoded")


def test_family_split_and_combination() -> None:
    # Given a pooled judge, three guardrails and five class slots
    m = family_size(3, 5)
    assert m == 9
    assert split_alpha(0.01, m) == 0.01 / 9
    # When one check regresses, it is named; an unjudged class never blocks promotion
    checks = [
        CheckVerdict("loss", LossVerdict.NOT_WORSE, ""),
        CheckVerdict("latency", LossVerdict.REGRESSION, "slow"),
        CheckVerdict("class rare", LossVerdict.INSUFFICIENT_DATA, "", judged=False),
    ]
    regression = combine(checks).regression
    assert regression is not None
    assert regression.name == "latency"
    ok = combine([checks[0], checks[2]])
    assert ok.all_not_worse
    assert ok.pending == ()


_COUNTS = st.lists(
    st.tuples(st.integers(0, 500), st.integers(0, 500), st.integers(0, 500), st.integers(0, 500)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(rows=_COUNTS, margin=st.floats(0.001, 0.5), relative=st.booleans())
def test_p_values_and_bounds_are_finite_monotone_and_nested(
    rows: list[tuple[int, int, int, int]], margin: float, relative: bool
) -> None:
    from lossgate.core.bounded import NOT_WORSE, REGRESSION
    from lossgate.core.bounded_diff import confidence_bound, diff_path

    # Given any counts, errors above the request count included (treated as empty intervals)
    arr = np.asarray(rows, dtype=np.float64).T
    used = np.ones(arr.shape[1], dtype=np.bool_)
    null = DiffNull.relative_to_baseline(margin) if relative else DiffNull.absolute(margin)
    path = diff_path(arr[0], arr[1], arr[2], arr[3], used, null)
    # Then the always-valid p-values are finite, in (0, 1], and never rise from one look to the next
    for p in (path.log_p_regression, path.log_p_not_worse):
        assert np.all(np.isfinite(p))
        assert np.all(p <= 0)
        assert np.all(np.diff(p) <= 0)
    # And the bounds lie in the range of mu_c - lam mu_b, a smaller alpha giving a wider interval
    lo_strict = confidence_bound(path.reg, REGRESSION, 0.001, null)
    lo_loose = confidence_bound(path.reg, REGRESSION, 0.05, null)
    hi_strict = confidence_bound(path.nw, NOT_WORSE, 0.001, null)
    hi_loose = confidence_bound(path.nw, NOT_WORSE, 0.05, null)
    assert np.all(lo_strict >= -null.lam)
    assert np.all(hi_strict <= 1.0)
    assert np.all(lo_strict <= lo_loose + 1e-9)
    assert np.all(hi_strict >= hi_loose - 1e-9)


def test_latency_past_the_timeout_is_clipped_not_dropped() -> None:
    # Given a mean-latency check bounded by a 2 s timeout, and a canary whose mean is past it
    config = CheckConfig("mean", DiffNull.absolute(0.05, bound=2.0))
    intervals = [
        CountInterval(30.0 * i, 30.0 * (i + 1), Counts(300, 30.0), Counts(100, 350.0), canary_weight=10)
        for i in range(10)
    ]
    # When it is judged
    result = evaluate(intervals, config)
    # Then the intervals count, the canary's mean clipped to 2 s, and the check rolls back at the
    # first look it can (the first interval is dropped after the weight change)
    assert result.verdict is LossVerdict.REGRESSION
    assert result.n_canary == 100
    assert result.mean_canary == 2.0
