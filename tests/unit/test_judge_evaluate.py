"""judge.evaluate: verdict table, configuration, weight changes, projections, the catastrophic guard."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from lossgate.core.bounded import KAPPA, _h
from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.judge import (
    MAX_LOSS_NATS,
    MAX_SAMPLES_NEEDED,
    JudgeConfig,
    evaluate,
)
from lossgate.core.verdicts import LossVerdict


def arm(n: float, mean: float, var: float = 0.5, tail: float = 0.0) -> ArmStats:
    """Aggregates of n losses with the given mean and (population) variance."""
    return ArmStats(n, n * mean, n * (var + mean * mean), tail)


def steady(
    looks: int, canary_mean: float, per_look: float = 1000.0, weight: int = 25, base_mean: float = 0.3
) -> list[IntervalStats]:
    """`looks` intervals at one split, every interval with exactly the same aggregates."""
    n_c = per_look * weight / 100
    return [
        IntervalStats(30 * k, 30 * (k + 1), arm(per_look - n_c, base_mean), arm(n_c, canary_mean), weight)
        for k in range(looks)
    ]


CFG = JudgeConfig(margin=0.01)


@pytest.mark.parametrize(
    ("case", "intervals", "config", "verdict"),
    [
        ("clear regression", steady(60, 0.36), CFG, LossVerdict.REGRESSION),
        ("equal canary, enough samples", steady(120, 0.30, per_look=4000), CFG, LossVerdict.NOT_WORSE),
        ("better canary", steady(60, 0.25), CFG, LossVerdict.NOT_WORSE),
        ("regression evidence, under the rollback quota", steady(4, 0.9), CFG, LossVerdict.INSUFFICIENT_DATA),
        (
            "not-worse evidence, under the promotion quota",
            steady(60, 0.2),
            JudgeConfig(margin=0.01, min_samples_before_promote=50_000),
            LossVerdict.UNDECIDED,
        ),
        ("canary on the margin", steady(30, 0.31), CFG, LossVerdict.UNDECIDED),
        ("no intervals", [], CFG, LossVerdict.INSUFFICIENT_DATA),
        (
            "baseline never labelled",
            [IntervalStats(0, 30, ArmStats(0, 0, 0), arm(500, 0.3), None) for _ in range(20)],
            CFG,
            LossVerdict.INSUFFICIENT_DATA,
        ),
    ],
)
def test_verdict_table(
    case: str, intervals: Sequence[IntervalStats], config: JudgeConfig, verdict: LossVerdict
) -> None:
    # Given the intervals of the case
    # When the judge evaluates them
    result = evaluate(intervals, config)
    # Then it reaches the expected verdict, with finite numbers and a reason that carries them
    assert result.verdict is verdict, (case, result.reason)
    for value in (result.theta_hat, result.cs_low, result.cs_high, result.p_regression, result.information):
        assert math.isfinite(value)
    assert result.cs_low <= result.theta_hat <= result.cs_high
    assert result.reason
    decided = verdict in (LossVerdict.REGRESSION, LossVerdict.NOT_WORSE)
    assert (result.samples_needed == 0) == decided


def test_regression_numbers_are_consistent() -> None:
    # Given a canary 0.06 nats worse than the baseline with a 0.01 margin
    result = evaluate(steady(60, 0.36), CFG)
    # Then the p-value is below alpha and the interval shown (the one at the look that crossed, lower
    # end at alpha_rollback, upper at alpha_promote: 94%) lies wholly above the margin
    assert result.p_regression <= 0.01
    assert result.p_not_worse == 1.0
    assert result.cs_level == pytest.approx(0.94)
    assert result.margin < result.cs_low < result.theta_hat < result.cs_high
    assert result.theta_hat == pytest.approx(0.06, rel=1e-9)
    assert result.mean_canary - result.mean_baseline == pytest.approx(0.06, rel=1e-9)
    assert "regression" in result.reason
    assert "0.0600" in result.reason
    assert "94% CS" in result.reason
    # And the numbers are those of the crossing look: the first at or under alpha, not the last
    later = evaluate(steady(60, 0.36) + steady(40, 0.36), CFG)
    assert later.decided_look == result.decided_look < 59
    assert f"at look {result.decided_look + 1}" in result.reason
    assert later.n_canary == result.n_canary


def test_under_quota_reports_the_samples_missing() -> None:
    # Given overwhelming regression evidence from only 1000 canary samples (4 strata of 250; the
    # first interval is dropped after the weight change) and a quota of 1250
    result = evaluate(steady(5, 0.9), JudgeConfig(margin=0.01, min_samples_before_rollback=1250))
    # Then the judge waits for the quota and says how many more it needs
    assert result.verdict is LossVerdict.INSUFFICIENT_DATA
    assert result.n_canary == 1000
    assert result.p_regression <= 0.01
    assert result.samples_needed == 250


def test_relative_margin_resolves_against_the_baseline_mean() -> None:
    result = evaluate(steady(10, 0.3, base_mean=0.4), JudgeConfig(relative_margin=0.02))
    assert result.margin == pytest.approx(0.008, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"margin": 0.01, "relative_margin": 0.02},
        {"margin": 0.0},
        {"margin": -0.01},
        {"margin": math.nan},
        {"relative_margin": math.inf},
        {"margin": 0.01, "alpha_rollback": 0.0},
        {"margin": 0.01, "alpha_promote": 1.0},
        {"margin": 0.01, "min_samples_before_rollback": -1},
        {"margin": 0.01, "catastrophic_ratio": 0.0},
    ],
)
def test_invalid_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must be|give exactly one"):
        JudgeConfig(**kwargs)  # type: ignore[arg-type]


def test_first_interval_after_a_weight_change_is_dropped() -> None:
    # Given a rollout whose first interval at each new split carries a transient (a canary 10x worse)
    def iv(k: int, weight: int, canary_mean: float) -> IntervalStats:
        n_c = 40 * weight
        return IntervalStats(k, k + 1, arm(4000 - n_c, 0.3), arm(n_c, canary_mean), weight)

    intervals = []
    for weight in (5, 10, 25):
        intervals.append(iv(len(intervals), weight, 3.0))
        intervals += [iv(len(intervals), weight, 0.3) for _ in range(9)]
    # When the judge evaluates with and without dropping
    kept = evaluate(intervals, CFG)
    raw = evaluate(intervals, JudgeConfig(margin=0.01, drop_first_after_weight_change=False))
    # Then with dropping the transients are ignored (3 intervals dropped, estimate exactly 0)
    assert kept.dropped == 3
    assert kept.theta_hat == pytest.approx(0.0, abs=1e-12)
    assert kept.n_canary == 9 * 40 * (5 + 10 + 25)
    # And without dropping they reach the estimate (the second and third transients are strata)
    assert raw.dropped == 0
    assert raw.theta_hat > 0.1


def test_unknown_weights_are_never_a_change() -> None:
    intervals = [IntervalStats(k, k + 1, arm(900, 0.3), arm(100, 0.3), None) for k in range(5)]
    assert evaluate(intervals, CFG).dropped == 0


def test_samples_needed_is_a_faithful_projection() -> None:
    # Given a steady canary 0.02 nats worse (margin 0.01) that has not yet crossed the boundary
    cfg = JudgeConfig(margin=0.01)
    head = steady(8, 0.32, per_look=4000)
    first = evaluate(head, cfg)
    assert first.verdict is LossVerdict.UNDECIDED
    needed = first.samples_needed
    per_look_canary = 1000.0
    # When 10% fewer, and more, canary samples arrive at the same split and the same estimate
    # (the projection uses each grid bet's normal approximation, whose variance penalty is the
    # bounded test's with h(x) = 1/2; the test pays h(x) <= h(KAPPA) = 0.773, at most 55% more)
    slack = float(_h(np.asarray(KAPPA))) / 0.5
    looks_short = math.floor(needed * 0.9 / per_look_canary)
    looks_enough = math.ceil(needed * slack / per_look_canary)
    short = evaluate(steady(8 + looks_short, 0.32, per_look=4000), cfg)
    enough = evaluate(steady(8 + looks_enough, 0.32, per_look=4000), cfg)
    # Then 10% fewer than projected does not cross and the projection times that slack does
    assert short.verdict is LossVerdict.UNDECIDED
    assert enough.verdict is LossVerdict.REGRESSION


def test_samples_needed_is_capped_when_the_estimate_sits_on_the_margin() -> None:
    result = evaluate(steady(20, 0.31), CFG)
    assert result.verdict is LossVerdict.UNDECIDED
    assert result.samples_needed == MAX_SAMPLES_NEEDED


def test_catastrophic_guard_rolls_back_before_the_quota() -> None:
    # Given a canary with 10% of its predictions confidently wrong (baseline: 0.3%), at a 5% split,
    # 4 used intervals with 40 canary samples each (far under the 1000-sample quota)
    intervals = [
        IntervalStats(k, k + 1, arm(760, 0.3, tail=760 * 0.003), arm(40, 0.8, tail=4), 5) for k in range(5)
    ]
    result = evaluate(intervals, CFG)
    # Then the guard fires: regression with catastrophic set, before the minimum-sample rule
    assert result.n_canary < 1000
    assert result.catastrophic
    assert result.verdict is LossVerdict.REGRESSION
    assert result.p_catastrophic <= 0.001
    assert "catastrophic" in result.reason


def test_equal_tail_rates_do_not_trigger_the_guard() -> None:
    intervals = [
        IntervalStats(k, k + 1, arm(9000, 0.3, tail=27), arm(1000, 0.3, tail=3), 10) for k in range(50)
    ]
    result = evaluate(intervals, CFG)
    assert not result.catastrophic
    assert result.p_catastrophic == 1.0


def test_no_data_gives_the_whole_loss_range_as_interval() -> None:
    result = evaluate([], JudgeConfig(relative_margin=0.02))
    assert (result.cs_low, result.cs_high) == (-MAX_LOSS_NATS, MAX_LOSS_NATS)
    assert result.samples_needed == 1000


def test_p_values_never_increase_along_looks() -> None:
    # Given a noisy-looking sequence (alternating good and bad intervals)
    intervals = [
        IntervalStats(k, k + 1, arm(750, 0.3), arm(250, 0.3 + (0.08 if k % 3 else -0.05)), 25)
        for k in range(40)
    ]
    # When each prefix is evaluated (each look)
    results = [evaluate(intervals[: k + 1], CFG) for k in range(len(intervals))]
    # Then the always-valid p-values are running minima, and the final one is the minimum over looks
    p_reg = [r.p_regression for r in results]
    p_nw = [r.p_not_worse for r in results]
    assert all(b <= a for a, b in itertools.pairwise(p_reg))
    assert all(b <= a for a, b in itertools.pairwise(p_nw))


def test_to_dict_is_json_ready() -> None:
    d = evaluate(steady(60, 0.36), CFG).to_dict()
    assert d["verdict"] == "Regression"
    assert json.loads(json.dumps(d)) == d
