"""The stratified estimator against a direct computation from raw per-request losses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.judge import JudgeConfig, evaluate
from lossgate.core.stratified import (
    PRIOR_MEAN_NATS,
    PRIOR_SAMPLES,
    PRIOR_VAR_NATS2,
    ArmArrays,
    stratified_path,
)


def _raw_rollout(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Raw losses per interval and arm, with splits and a drifting difficulty shared by both arms."""
    rng = np.random.default_rng(seed)
    base, can = [], []
    for k, weight in enumerate([5, 5, 5, 10, 10, 25, 25, 50, 50, 50]):
        total = rng.poisson(400)
        n_c = rng.binomial(total, weight / 100)
        difficulty = 1.0 + 0.5 * math.sin(k / 2)  # shared drift
        base.append(rng.exponential(0.3 * difficulty, total - n_c))
        can.append(rng.exponential(0.32 * difficulty, n_c))
    return base, can


def _shrunk(x: np.ndarray, mean0: float, var0: float) -> tuple[float, float]:
    """Mean and variance of raw samples with PRIOR_SAMPLES pseudo-samples at (mean0, var0)."""
    n = len(x)
    ss = float(((x - x.mean()) ** 2).sum()) if n else 0.0
    mean = (float(x.sum()) + PRIOR_SAMPLES * mean0) / (n + PRIOR_SAMPLES)
    return min(max(mean, 0.0), MAX_LOSS_NATS), (ss + PRIOR_SAMPLES * var0) / (n + PRIOR_SAMPLES)


def _by_hand(base: list[np.ndarray], can: list[np.ndarray]) -> tuple[float, float]:
    """The formulas of docs/judge.md written out with raw samples and loops: theta_hat, I."""
    info = 0.0
    weighted = 0.0
    for k in range(len(base)):
        if len(base[k]) == 0 or len(can[k]) == 0:
            continue
        prev_b = np.concatenate(base[:k]) if k else np.array([])
        prev_c = np.concatenate(can[:k]) if k else np.array([])
        m_p, v_p = _shrunk(np.concatenate([prev_b, prev_c]), PRIOR_MEAN_NATS, PRIOR_VAR_NATS2)
        _, var_b = _shrunk(prev_b, m_p, v_p)
        _, var_c = _shrunk(prev_c, m_p, v_p)
        v = var_c / len(can[k]) + var_b / len(base[k])
        d = can[k].mean() - base[k].mean()
        info += 1 / v
        weighted += d / v
    return weighted / info, info


def _aggregates(samples: list[np.ndarray]) -> ArmArrays:
    return ArmArrays.of(
        [len(x) for x in samples], [x.sum() for x in samples], [(x * x).sum() for x in samples]
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_estimator_matches_direct_computation_from_raw_losses(seed: int) -> None:
    # Given raw per-request losses of both arms over ten intervals with changing splits
    base, can = _raw_rollout(seed)
    # When the estimator runs on the (n, sum, sum of squares) aggregates
    path = stratified_path(_aggregates(base), _aggregates(can), np.ones(len(base), dtype=bool))
    # Then theta_hat and the information agree with the formulas applied to the raw samples
    theta, info = _by_hand(base, can)
    assert path.theta_hat[-1] == pytest.approx(theta, rel=1e-9)
    assert path.information[-1] == pytest.approx(info, rel=1e-9)
    # And every earlier look agrees with the same computation on the prefix
    for k in range(len(base)):
        theta_k, info_k = _by_hand(base[: k + 1], can[: k + 1])
        assert path.theta_hat[k] == pytest.approx(theta_k, rel=1e-9)
        assert path.information[k] == pytest.approx(info_k, rel=1e-9)


def test_stratification_cancels_a_shared_mix_shift_that_biases_pooled_means() -> None:
    # Given an equal canary and a mix that turns hard exactly when the canary's share rises:
    # easy period (loss 0.2) at 5% canary, hard period (loss 0.6) at 50% canary, no noise
    def arm(n: float, loss: float) -> ArmStats:
        return ArmStats(n, n * loss, n * loss * loss)

    intervals = [IntervalStats(k, k + 1, arm(950, 0.2), arm(50, 0.2), 5) for k in range(10)]
    intervals += [IntervalStats(k, k + 1, arm(500, 0.6), arm(500, 0.6), 50) for k in range(10, 20)]
    # When the judge evaluates
    result = evaluate(intervals, JudgeConfig(margin=0.01, min_samples_before_rollback=0))
    # Then pooled means differ a lot (Simpson's paradox) but the stratified estimate is exactly 0
    assert result.mean_canary - result.mean_baseline > 0.2
    assert result.theta_hat == pytest.approx(0.0, abs=1e-12)
    assert result.verdict.value != "Regression"


def test_zero_variance_and_empty_arms_do_not_divide_by_zero() -> None:
    # Given intervals with identical losses (zero variance), one arm empty, and fractional counts
    zero = ArmStats(0.0, 0.0, 0.0)
    const = ArmStats(100.0, 30.0, 9.0)  # every loss exactly 0.3
    intervals = [
        IntervalStats(0, 1, const, zero, 5),
        IntervalStats(1, 2, const, ArmStats(0.4, 0.1, 0.03), 5),
        IntervalStats(2, 3, const, const, 5),
        IntervalStats(3, 4, zero, const, 5),
        IntervalStats(4, 5, const, const, 5),
        IntervalStats(5, 6, const, const, 5),
    ]
    # When the estimator runs
    with np.errstate(all="raise"):
        result = evaluate(intervals, JudgeConfig(margin=0.01, min_samples_before_promote=0))
    # Then everything is finite, the estimate is exactly 0, and an exactly equal canary is no regression
    assert all(
        math.isfinite(v) for v in (result.theta_hat, result.information, result.cs_low, result.cs_high)
    )
    assert result.theta_hat == 0.0
    assert result.information > 0
    assert result.verdict.value != "Regression"
    # And with enough of the same data it is shown not worse (a few hundred samples cannot rule out
    # an unseen 13.8-nat loss worth more than the margin; 50,000 can)
    more = [
        IntervalStats(k, k + 1, ArmStats(1000.0, 300.0, 90.0), ArmStats(1000.0, 300.0, 90.0), 5)
        for k in range(6, 56)
    ]
    with np.errstate(all="raise"):
        later = evaluate(intervals + more, JudgeConfig(margin=0.01, min_samples_before_promote=0))
    assert later.verdict.value == "NotWorse"
