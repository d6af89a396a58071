"""Calibration of the judge under continuous monitoring, on simulated heavy-tailed rollouts.

The simulation is vectorised (all rollouts at once) and runs through `judge_path`, the same code
`evaluate` uses; one rollout is cross-checked against `evaluate` itself.

Tolerance: if the judge's false-rollback rate were exactly alpha, the count x of false rollbacks in R
rollouts is Binomial(R, alpha) and the Clopper-Pearson 99% upper bound U on the rate is about
x/R + z_.99 SE with SE = sqrt(alpha (1 - alpha) / R). Asserting U <= alpha + 2 z_.99 SE therefore
fails with probability about 1% for a judge exactly at alpha and less for a conservative one. A naive
per-look test on the same streams must fail that assertion, so the check has teeth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, special, stats

from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.judge import JudgeConfig, evaluate, judge_path, used_intervals
from lossgate.core.mixture import log_lambda_mixture
from lossgate.core.stratified import ArmArrays

ROLLOUTS = 2000
LOOKS_PER_STEP = 15
WEIGHTS = np.repeat([5, 10, 25, 50], LOOKS_PER_STEP)  # 60 looks
LABELLED_PER_LOOK = 4000.0
Z99 = float(special.ndtri(0.99))


def loss_pmf() -> tuple[np.ndarray, np.ndarray]:
    """Per-request cross-entropy of a calibrated binary classifier with 1% label noise, on 48 bins.

    Confidence q = 1 - u/2, u ~ Beta(0.4, 1.5); the label agrees with the prediction with probability
    q (0.99) + (1 - q) (0.01); loss -log q or -log(1 - q), p clipped at 1e-6. Skew about 5.5.
    """
    grid = (np.arange(20_000) + 0.5) / 20_000
    u = 0.5 * stats.beta.ppf(grid, 0.4, 1.5)
    q = 1.0 - u
    agree = q * 0.99 + (1.0 - q) * 0.01
    losses = np.concatenate([-np.log(np.maximum(q, 1e-6)), -np.log(np.maximum(1.0 - q, 1e-6))])
    mass = np.concatenate([agree, 1.0 - agree]) / len(grid)
    edges = np.concatenate([[0.0], np.geomspace(1e-3, 14.0, 48)])
    idx = np.clip(np.searchsorted(edges, losses, side="right") - 1, 0, len(edges) - 2)
    pmf = np.bincount(idx, mass, len(edges) - 1)
    values = np.bincount(idx, mass * losses, len(edges) - 1)
    keep = pmf > 0
    return values[keep] / pmf[keep], pmf[keep] / pmf[keep].sum()


VALUES, PMF = loss_pmf()
MEAN = float(PMF @ VALUES)
VAR = float(PMF @ (VALUES - MEAN) ** 2)


def simulate(seed: int, canary_values: np.ndarray, rollouts: int = ROLLOUTS) -> tuple[ArmArrays, ArmArrays]:
    """Per-interval aggregates of both arms: Poisson traffic split by the weights, multinomial bins."""
    rng = np.random.default_rng(seed)
    share = WEIGHTS / 100.0
    arms = []
    for values, expected in ((VALUES, 1.0 - share), (canary_values, share)):
        n = rng.poisson(LABELLED_PER_LOOK * np.broadcast_to(expected, (rollouts, len(WEIGHTS))))
        counts = rng.multinomial(n, PMF)
        arms.append(ArmArrays.of(n.astype(np.float64), counts @ values, counts @ (values * values)))
    return arms[0], arms[1]


def upper99(count: int, total: int) -> float:
    return float(stats.beta.ppf(0.99, count + 1, total - count))


def tolerance(alpha: float, total: int) -> float:
    return 2.0 * Z99 * math.sqrt(alpha * (1.0 - alpha) / total)


def test_the_simulated_loss_is_as_heavy_tailed_as_the_spec_says() -> None:
    skew = float(PMF @ (VALUES - MEAN) ** 3) / VAR**1.5
    kurt = float(PMF @ (VALUES - MEAN) ** 4) / VAR**2 - 3.0
    assert 4.5 < skew < 6.5
    assert 40 < kurt < 70


@pytest.mark.parametrize(
    ("case", "config", "canary_values"),
    [
        ("relative margin, canary scaled onto the margin", JudgeConfig(relative_margin=0.02), VALUES * 1.02),
        ("absolute margin, canary shifted onto the margin", JudgeConfig(margin=0.01), VALUES + 0.01),
    ],
)
def test_false_rollbacks_stay_under_alpha_over_60_looks(
    case: str, config: JudgeConfig, canary_values: np.ndarray
) -> None:
    # Given 2,000 rollouts of a canary exactly on the margin (the hardest null), 60 looks each
    base, can = simulate(20240601, canary_values)
    used = used_intervals(list(WEIGHTS), True)
    zeros = np.zeros(base.n.shape)
    # When the judge looks at every interval
    path = judge_path(base, can, zeros, zeros, used, config)
    # Then the rate of rollouts ever rolled back has a 99% upper bound under alpha_r + tolerance
    rolled_back = int(path.regression.any(axis=-1).sum())
    alpha = config.alpha_rollback
    assert upper99(rolled_back, ROLLOUTS) <= alpha + tolerance(alpha, ROLLOUTS), (case, rolled_back)
    # And on the same boundary the non-inferiority test (H0: theta >= margin) is calibrated too
    promoted = int(path.not_worse.any(axis=-1).sum())
    alpha_p = config.alpha_promote
    assert upper99(promoted, ROLLOUTS) <= alpha_p + tolerance(alpha_p, ROLLOUTS), (case, promoted)
    # And a naive one-sided z-test at alpha_r at every look, on the same estimates, fails this check
    est = path.estimator
    z = (est.theta_hat - path.margin) * np.sqrt(est.information)
    naive = int((z > special.ndtri(1 - alpha)).any(axis=-1).sum())
    assert upper99(naive, ROLLOUTS) > alpha + tolerance(alpha, ROLLOUTS)


def last_look_power(effect: float, info: float, rho: float, config: JudgeConfig, alpha: float) -> float:
    """Probability that a one-sided mixture test has crossed at a look with information `info`, from
    that look alone: the boundary is the excess b with Lambda(I b, I) = 1/alpha, theta_hat ~ N(theta, 1/I).
    Looks before the last can only add crossings, so the judge's rate should be at least this."""
    b = optimize.brentq(
        lambda e: float(log_lambda_mixture(info * e, info, rho, config.rho_scales)) - math.log(1 / alpha),
        0.0,
        1.0,
    )
    return float(special.ndtr((effect - b) * math.sqrt(info)))


def test_equal_canaries_are_almost_never_rolled_back_and_shown_not_worse_as_predicted() -> None:
    # Given 2,000 rollouts of a canary identical to the baseline
    base, can = simulate(7, VALUES)
    zeros = np.zeros(base.n.shape)
    cfg = JudgeConfig(margin=0.01)
    path = judge_path(base, can, zeros, zeros, used_intervals(list(WEIGHTS), True), cfg)
    # Then false rollbacks are far rarer than alpha (theta = 0 is deep inside H0) ...
    assert upper99(int(path.regression.any(axis=-1).sum()), ROLLOUTS) <= 0.01
    # ... and non-inferiority is shown at least as often as the last look alone predicts
    info = float(path.estimator.information[:, -1].mean())
    predicted = last_look_power(0.01, info, float(path.rho[0, -1]), cfg, cfg.alpha_promote)
    shown = float(path.not_worse.any(axis=-1).mean())
    assert shown >= predicted - Z99 * math.sqrt(predicted * (1 - predicted) / ROLLOUTS)


def test_power_is_at_least_what_the_last_look_alone_predicts() -> None:
    # Given 500 rollouts of a canary 3 margins worse (0.03 nats against a 0.01 margin)
    rollouts, margin, theta = 500, 0.01, 0.03
    base, can = simulate(11, VALUES + theta, rollouts=rollouts)
    zeros = np.zeros(base.n.shape)
    cfg = JudgeConfig(margin=margin)
    path = judge_path(base, can, zeros, zeros, used_intervals(list(WEIGHTS), True), cfg)
    # When we predict power from the last look alone
    info = float(path.estimator.information[:, -1].mean())
    predicted = last_look_power(theta - margin, info, float(path.rho[0, -1]), cfg, cfg.alpha_rollback)
    # Then the judge, which may also cross at any earlier look, has at least that power (binomial SE)
    power = float(path.regression.any(axis=-1).mean())
    assert power >= predicted - Z99 * math.sqrt(predicted * (1 - predicted) / rollouts)
    assert predicted > 0.9  # the case is informative: a regression the plan should catch


def test_catastrophic_guard_is_calibrated_at_its_null_ratio() -> None:
    # Given 4,000 rollouts where the canary's tail rate is exactly twice the baseline's (the guard's H0)
    rng = np.random.default_rng(3)
    rollouts, rate = 4000, 0.003
    share = WEIGHTS / 100.0
    n_b = rng.poisson(LABELLED_PER_LOOK * (1 - share), (rollouts, len(WEIGHTS))).astype(np.float64)
    n_c = rng.poisson(LABELLED_PER_LOOK * share, (rollouts, len(WEIGHTS))).astype(np.float64)
    t_b, t_c = rng.binomial(n_b.astype(np.int64), rate), rng.binomial(n_c.astype(np.int64), 2 * rate)
    base = ArmArrays.of(n_b, n_b * MEAN, n_b * (VAR + MEAN**2))
    can = ArmArrays.of(n_c, n_c * MEAN, n_c * (VAR + MEAN**2))
    cfg = JudgeConfig(margin=0.01)
    # When the judge looks at every interval
    path = judge_path(base, can, t_b, t_c, used_intervals(list(WEIGHTS), True), cfg)
    # Then the guard's false alarms stay under its alpha (0.001) with the same binomial tolerance
    fired = int(path.catastrophic.any(axis=-1).sum())
    assert upper99(fired, rollouts) <= cfg.catastrophic_alpha + tolerance(cfg.catastrophic_alpha, rollouts)
    # And at ten times the baseline's rate it fires in nearly every rollout
    t_c10 = rng.binomial(n_c.astype(np.int64), 10 * rate)
    loud = judge_path(base, can, t_b, t_c10, used_intervals(list(WEIGHTS), True), cfg)
    assert loud.catastrophic.any(axis=-1).mean() > 0.99


def test_vectorised_path_agrees_with_evaluate() -> None:
    # Given a few simulated rollouts
    base, can = simulate(5, VALUES * 1.05, rollouts=3)
    cfg = JudgeConfig(relative_margin=0.02)
    zeros = np.zeros(base.n.shape)
    path = judge_path(base, can, zeros, zeros, used_intervals(list(WEIGHTS), True), cfg)
    for r in range(3):
        intervals = [
            IntervalStats(
                30.0 * k,
                30.0 * (k + 1),
                ArmStats(base.n[r, k], base.sum[r, k], base.sumsq[r, k]),
                ArmStats(can.n[r, k], can.sum[r, k], can.sumsq[r, k]),
                int(WEIGHTS[k]),
            )
            for k in range(len(WEIGHTS))
        ]
        # When each rollout is evaluated look by look the ordinary way
        for k in (5, 20, 59):
            result = evaluate(intervals[: k + 1], cfg)
            # Then the numbers match the vectorised path at that look
            assert result.theta_hat == pytest.approx(path.estimator.theta_hat[r, k], rel=1e-12, abs=1e-15)
            assert result.information == pytest.approx(path.estimator.information[r, k], rel=1e-12)
            assert math.log(max(result.p_regression, 1e-300)) == pytest.approx(
                max(path.log_p_regression[r, k], math.log(1e-300)), rel=1e-9, abs=1e-9
            )
            assert (result.verdict.value == "Regression") == bool(path.regression[r, k])
