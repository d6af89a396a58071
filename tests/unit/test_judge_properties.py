"""Property-based tests of the judge (hypothesis)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.judge import JudgeConfig, JudgeResult, evaluate
from lossgate.core.stratified import PRIOR_SAMPLES
from lossgate.core.verdicts import LossVerdict

# Verdicts ordered from "canary looks good" to "canary looks bad".
RANK = {
    LossVerdict.NOT_WORSE: 0,
    LossVerdict.UNDECIDED: 1,
    LossVerdict.INSUFFICIENT_DATA: 1,
    LossVerdict.REGRESSION: 2,
}
CFG = JudgeConfig(margin=0.02, min_samples_before_rollback=200, min_samples_before_promote=1000)


def arm_of(n: float, mean: float, sd: float, tail: float = 0.0) -> ArmStats:
    return ArmStats(n, n * mean, n * (sd * sd + mean * mean), tail)


@st.composite
def intervals_strategy(
    draw: st.DrawFn, min_size: int = 1, max_size: int = 25, dense: bool = False
) -> list[IntervalStats]:
    """Plausible interval histories: counts (fractional too), means, spreads, splits and tails.
    `dense` histories have both arms labelled in every interval and one split (most looks informative)."""
    size = draw(st.integers(min_size, max_size))
    base_mean = draw(st.floats(0.05, 3.0))
    out = []
    for k in range(size):
        if dense:
            weight: int | None = None
            n_b, n_c = draw(st.floats(100.0, 5000.0)), draw(st.floats(50.0, 3000.0))
        else:
            weight = draw(st.sampled_from([None, 5, 10, 25, 50]))
            n_b = draw(st.one_of(st.just(0.0), st.floats(0.0, 5000.0)))
            n_c = draw(st.one_of(st.just(0.0), st.floats(0.0, 3000.0)))
        m_b = base_mean * draw(st.floats(0.8, 1.2))
        m_c = m_b + draw(st.floats(-0.5, 0.5))
        sd_b, sd_c = draw(st.floats(0.0, 2.0)), draw(st.floats(0.0, 2.0))
        t_b = n_b * draw(st.floats(0.0, 0.05))
        t_c = n_c * draw(st.floats(0.0, 0.3))
        out.append(
            IntervalStats(
                30.0 * k,
                30.0 * (k + 1),
                arm_of(n_b, m_b, sd_b, t_b),
                arm_of(n_c, max(m_c, 0.0), sd_c, t_c),
                weight,
            )
        )
    return out


garbage_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def garbage_intervals(draw: st.DrawFn) -> list[IntervalStats]:
    """Anything the type allows: NaN, infinities, negative counts, inconsistent sums of squares."""
    size = draw(st.integers(0, 8))
    return [
        IntervalStats(
            0.0,
            1.0,
            ArmStats(draw(garbage_float), draw(garbage_float), draw(garbage_float), draw(garbage_float)),
            ArmStats(draw(garbage_float), draw(garbage_float), draw(garbage_float), draw(garbage_float)),
            draw(st.one_of(st.none(), st.integers(-5, 200))),
        )
        for _ in range(size)
    ]


def assert_finite(result: JudgeResult) -> None:
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, float):
            assert math.isfinite(value), (field.name, value)
    assert 0.0 <= result.p_regression <= 1.0
    assert 0.0 <= result.p_not_worse <= 1.0
    assert result.cs_low <= result.cs_high
    assert result.samples_needed >= 0


@settings(max_examples=200, deadline=None)
@given(intervals_strategy(min_size=0), st.sampled_from([CFG, JudgeConfig(relative_margin=0.02)]))
def test_outputs_are_always_finite_and_deterministic(
    intervals: list[IntervalStats], cfg: JudgeConfig
) -> None:
    # Given any plausible history, When it is evaluated twice
    first, second = evaluate(intervals, cfg), evaluate(intervals, cfg)
    # Then nothing is NaN or infinite and the result is the same
    assert_finite(first)
    assert first == second


@settings(max_examples=200, deadline=None)
@given(garbage_intervals())
def test_garbage_input_never_yields_nan_or_raises(intervals: list[IntervalStats]) -> None:
    with np.errstate(all="ignore"):
        result = evaluate(intervals, JudgeConfig(relative_margin=0.02))
    assert_finite(result)


@settings(max_examples=150, deadline=None)
@given(intervals_strategy(min_size=2), st.floats(0.0, 2.0))
def test_a_worse_canary_in_the_last_interval_never_looks_better(
    intervals: list[IntervalStats], worse_by: float
) -> None:
    # Given a history, and the same history with the last interval's canary losses all worse by `worse_by`
    last = intervals[-1]
    n = last.canary.n
    worse_canary = ArmStats(n, last.canary.sum + worse_by * n, last.canary.sumsq, last.canary.tail)
    worse = [*intervals[:-1], dataclasses.replace(last, canary=worse_canary)]
    # When both are evaluated
    before, after = evaluate(intervals, CFG), evaluate(worse, CFG)
    # Then the worse history has an estimate no lower, p-values moved only toward regression, and a verdict
    # no more favourable (the last interval's sum of squares only feeds later strata's variances)
    assert after.theta_hat >= before.theta_hat - 1e-12 * (1 + abs(before.theta_hat))
    assert after.p_regression <= before.p_regression * (1 + 1e-9) + 1e-300
    assert after.p_not_worse >= before.p_not_worse * (1 - 1e-9)
    assert RANK[after.verdict] >= RANK[before.verdict]


@settings(max_examples=150, deadline=None)
@given(
    intervals_strategy(min_size=3, dense=True),
    intervals_strategy(min_size=1, max_size=3),
    st.floats(0.1, 2.0),
)
def test_regression_is_never_turned_into_not_worse_by_more_data(
    intervals: list[IntervalStats], more: list[IntervalStats], worse_by: float
) -> None:
    # Given a history the judge calls a regression (canary shifted worse to make that common)
    shifted = [
        dataclasses.replace(
            iv,
            canary=ArmStats(
                iv.canary.n,
                iv.canary.sum + worse_by * iv.canary.n,
                iv.canary.sumsq + 2 * worse_by * iv.canary.sum + worse_by**2 * iv.canary.n,
                iv.canary.tail,
            ),
        )
        for iv in intervals
    ]
    assume(evaluate(shifted, CFG).verdict is LossVerdict.REGRESSION)
    # When any further intervals arrive (worse or not)
    later = evaluate(shifted + more, CFG)
    # Then it stays a regression: the decision is on the running minimum p-value and canary counts only grow
    assert later.verdict is LossVerdict.REGRESSION


def _drifted() -> list[IntervalStats]:
    """A canary better than the baseline early, much worse later: its one-sided bounds cross."""
    empty = ArmStats(0.0, 0.0, 0.0, 0.0)
    out = [IntervalStats(30.0 * k, 30.0 * (k + 1), empty, empty, None) for k in range(15)]
    early, late = ArmStats(904, 791, 1596.125, 0), ArmStats(193, 289.5, 434.25, 0)
    out[8] = IntervalStats(240.0, 270.0, ArmStats(2383, 2383, 2383, 0), early, None)
    out[14] = IntervalStats(420.0, 450.0, ArmStats(1858, 1858, 1858, 0), late, None)
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(intervals_strategy(min_size=1), intervals_strategy(min_size=3, dense=True)),
    st.floats(-0.3, 1.0),
    st.sampled_from([CFG, JudgeConfig(relative_margin=0.02, min_samples_before_rollback=0)]),
)
@example(_drifted(), 0.0, CFG)  # once shown as a point at the bounds' midpoint, below the margin
def test_the_interval_shown_agrees_with_the_verdict(
    intervals: list[IntervalStats], worse_by: float, cfg: JudgeConfig
) -> None:
    # Given any history, its canary moved by `worse_by` nats (often enough to decide either way)
    def moved(a: ArmStats) -> ArmStats:
        shift = max(worse_by, -a.mean)
        return ArmStats(a.n, a.sum + shift * a.n, a.sumsq + 2 * shift * a.sum + shift * shift * a.n, a.tail)

    history = [dataclasses.replace(iv, canary=moved(iv.canary)) for iv in intervals]
    # When it is evaluated
    r = evaluate(history, cfg)
    # Then a loss regression is shown with the whole interval above the margin, a promotion with the
    # whole interval below it, and otherwise the margin is inside the interval or the quota is unmet
    if r.verdict is LossVerdict.REGRESSION and not r.catastrophic:
        assert r.cs_low >= r.margin
        assert r.p_regression <= cfg.alpha_rollback
    elif r.verdict is LossVerdict.NOT_WORSE:
        assert r.cs_high <= r.margin
        assert r.p_not_worse <= cfg.alpha_promote
    assert r.cs_low <= r.cs_high or r.verdict is LossVerdict.REGRESSION


@settings(max_examples=150, deadline=None)
@given(intervals_strategy(min_size=1), st.floats(0.01, 20.0))
def test_an_exact_copy_of_the_baseline_is_centred_and_never_a_regression(
    intervals: list[IntervalStats], share: float
) -> None:
    # Given a canary whose every interval has the baseline's exact mean and spread (any sample size)
    copied = [
        dataclasses.replace(
            iv,
            canary=ArmStats(
                iv.baseline.n * share,
                iv.baseline.sum * share,
                iv.baseline.sumsq * share,
                iv.baseline.tail * share,
            ),
        )
        for iv in intervals
    ]
    # When evaluated
    result = evaluate(copied, CFG)
    # Then the estimate is 0, the interval contains 0, and the verdict is never a regression (every
    # stratum's bet on "canary worse" gains nothing and pays its variance penalty)
    width = result.cs_high - result.cs_low
    assert abs(result.theta_hat) <= 1e-9 * max(width, 1.0)
    assert result.cs_low <= 1e-12
    assert result.cs_high >= -1e-12
    assert result.p_regression == 1.0
    assert result.verdict is not LossVerdict.REGRESSION


@settings(max_examples=150, deadline=None)
@given(
    st.integers(3, 12),
    st.floats(0.1, 2.0),
    st.floats(0.2, 1.5),
    st.floats(-0.2, 0.2),
    st.floats(200.0, 5000.0),
    st.sampled_from([0.05, 0.1, 0.25, 0.5]),
)
def test_splitting_an_interval_in_two_at_the_same_split_changes_little(
    prefix_looks: int, mean: float, sd: float, diff: float, n_total: float, p: float
) -> None:
    # Given a history of intervals drawn from one distribution per arm, then a last interval ...
    def interval(k: float, n: float) -> IntervalStats:
        return IntervalStats(
            k, k + 1, arm_of(n * (1 - p), mean, sd), arm_of(n * p, mean + diff, sd * 1.1), None
        )

    prefix = [interval(k, n_total) for k in range(prefix_looks)]
    whole = [*prefix, interval(prefix_looks, n_total)]
    # ... and the same history with the last interval's data cut in two halves at the same split
    halves = [*prefix, interval(prefix_looks, n_total / 2), interval(prefix_looks + 0.5, n_total / 2)]
    # When both are evaluated
    a, b = evaluate(whole, CFG), evaluate(halves, CFG)
    # Then the estimate and the information agree: the only difference is that the second half's weight
    # uses variances that include the first half. Each arm's variance estimate is a pseudo-count
    # average, so the half moves it by at most the share it adds to its arm's count (n/2 of
    # N + PRIOR_SAMPLES), times the distance to the data's variance, and the information by less.
    # Every interval has the same per-arm means, so every stratum's difference is `diff` and theta_hat
    # is `diff` whatever the weights.
    assert abs(a.theta_hat - b.theta_hat) <= 1e-9 * (a.cs_high - a.cs_low)
    half_c = n_total * p / 2
    share = half_c / (prefix_looks * n_total * p + PRIOR_SAMPLES)
    assert math.isclose(a.information, b.information, rel_tol=share)


def test_crossed_bounds_show_the_verdicts_end_and_say_so() -> None:
    # Given a canary better than the baseline early and much worse later (the bounds cross)
    history = _drifted()
    # When it is evaluated
    r = evaluate(history, CFG)
    # Then it is a regression shown as a point at the lower bound (above the margin), and the reason
    # says the difference changed during the rollout
    assert r.verdict is LossVerdict.REGRESSION
    assert r.cs_low == r.cs_high
    assert r.cs_low >= r.margin
    assert "the bounds crossed" in r.reason
