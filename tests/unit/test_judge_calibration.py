"""Calibration of the judge under continuous monitoring, on simulated heavy-tailed rollouts.

The simulation is vectorised (all rollouts at once) and runs through `judge_path`, the same code
`evaluate` uses; one rollout is cross-checked against `evaluate` itself.

Tolerance: if the judge's false-rollback rate were exactly alpha, the count x of false rollbacks in R
rollouts is Binomial(R, alpha) and the Clopper-Pearson 99% upper bound U on the rate is about
x/R + z_.99 SE with SE = sqrt(alpha (1 - alpha) / R). Asserting U <= alpha + 2 z_.99 SE therefore
fails with probability about 1% for a judge exactly at alpha and less for a conservative one. A naive
per-look test on the same streams must fail that assertion, so the check has teeth; at low counts the
judge before the bounded test (a normal mixture on plug-in variances) fails it too (docs/judge.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import optimize, special, stats

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.bounded import information_to_cross
from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.judge import JudgeConfig, evaluate, judge_path, used_intervals
from lossgate.core.stratified import ArmArrays

ROLLOUTS = 2000
LOOKS_PER_STEP = 15
WEIGHTS = np.repeat([5, 10, 25, 50], LOOKS_PER_STEP)  # 60 looks
LABELLED_PER_LOOK = 4000.0
Z99 = float(special.ndtri(0.99))
EDGES = np.concatenate([[0.0], np.geomspace(1e-3, 14.0, 48)])
TAIL = 4.6


@dataclass(frozen=True)
class Pmf:
    """Per-request cross-entropy on 48 bins (each bin's conditional mean), clipped at p >= 1e-6."""

    values: np.ndarray
    probs: np.ndarray

    @staticmethod
    def binned(losses: np.ndarray, mass: np.ndarray) -> Pmf:
        losses = np.minimum(losses, MAX_LOSS_NATS)
        idx = np.clip(np.searchsorted(EDGES, losses, side="right") - 1, 0, len(EDGES) - 2)
        pmf = np.bincount(idx, mass, len(EDGES) - 1)
        values = np.bincount(idx, mass * losses, len(EDGES) - 1)
        keep = pmf > 0
        return Pmf(values[keep] / pmf[keep], pmf[keep] / pmf[keep].sum())

    @property
    def mean(self) -> float:
        return float(self.probs @ self.values)

    @property
    def var(self) -> float:
        return float(self.probs @ (self.values - self.mean) ** 2)

    def scaled(self, factor: float) -> Pmf:
        return Pmf(np.minimum(self.values * factor, MAX_LOSS_NATS), self.probs)


GRID = (np.arange(20_000) + 0.5) / 20_000


def binary_classifier(noise: float) -> Pmf:
    """A calibrated binary classifier with label noise: confidence q = 1 - u/2, u ~ Beta(0.4, 1.5);
    the label agrees with the prediction with probability q (1 - noise) + (1 - q) noise."""
    q = 1.0 - 0.5 * stats.beta.ppf(GRID, 0.4, 1.5)
    agree = q * (1 - noise) + (1 - q) * noise
    losses = np.concatenate([-np.log(np.maximum(q, 1e-6)), -np.log(np.maximum(1 - q, 1e-6))])
    return Pmf.binned(losses, np.concatenate([agree, 1 - agree]) / len(GRID))


def beta_mixture() -> Pmf:
    """-ln p with p ~ 0.99 Beta(8, 2) + 0.01 Beta(0.5, 5): mean about 0.27, 1% in a heavy tail."""
    bulk = -np.log(np.maximum(stats.beta.ppf(GRID, 8, 2), 1e-6))
    tail = -np.log(np.maximum(stats.beta.ppf(GRID, 0.5, 5), 1e-6))
    mass = np.concatenate([np.full(len(GRID), 0.99), np.full(len(GRID), 0.01)]) / len(GRID)
    return Pmf.binned(np.concatenate([bulk, tail]), mass)


def softmax_10(noise: float) -> Pmf:
    """A calibrated 10-class softmax: top probability q = 0.1 + 0.9 Beta(4, 1.2), the rest spread
    evenly; the true class is the top one with probability q, and a fraction `noise` of labels is
    replaced by a uniformly random class."""
    q = 0.1 + 0.9 * stats.beta.ppf(GRID, 4, 1.2)
    top = (1 - noise) * q + noise / 10
    losses = np.concatenate([-np.log(np.maximum(q, 1e-6)), -np.log(np.maximum((1 - q) / 9, 1e-6))])
    return Pmf.binned(losses, np.concatenate([top, 1 - top]) / len(GRID))


CLASSIFIER = binary_classifier(0.01)
VALUES, PMF = CLASSIFIER.values, CLASSIFIER.probs
MEAN = CLASSIFIER.mean
VAR = CLASSIFIER.var


def _arm(rng: np.random.Generator, expected: np.ndarray, pmf: Pmf) -> tuple[ArmArrays, np.ndarray]:
    n = rng.poisson(expected)
    counts = rng.multinomial(n, pmf.probs)
    arm = ArmArrays.of(n.astype(np.float64), counts @ pmf.values, counts @ (pmf.values * pmf.values))
    return arm, counts @ (pmf.values > TAIL).astype(np.float64)


def simulate(seed: int, canary_values: np.ndarray, rollouts: int = ROLLOUTS) -> tuple[ArmArrays, ArmArrays]:
    """Per-interval aggregates of both arms: Poisson traffic split by the weights, multinomial bins."""
    rng = np.random.default_rng(seed)
    share = np.broadcast_to(WEIGHTS / 100.0, (rollouts, len(WEIGHTS)))
    base, _ = _arm(rng, LABELLED_PER_LOOK * (1.0 - share), CLASSIFIER)
    can, _ = _arm(rng, LABELLED_PER_LOOK * share, Pmf(canary_values, PMF))
    return base, can


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


LOW_COUNT_CASES = [
    # (distribution, baseline / canary labelled per interval, looks): the 40 / 20 over 300
    # looks rolled back 5.7% of boundary rollouts with the normal-mixture judge
    ("-ln p, p ~ 0.99 Beta(8,2) + 0.01 Beta(0.5,5)", beta_mixture(), 40.0, 20.0, 300),
    ("binary classifier, 0.5% label noise", binary_classifier(0.005), 10.0, 5.0, 300),
    ("10-class softmax, 2% label noise", softmax_10(0.02), 100.0, 50.0, 200),
]


@pytest.mark.parametrize(("case", "pmf", "per_b", "per_c", "looks"), LOW_COUNT_CASES)
def test_false_rollbacks_stay_under_alpha_at_low_counts(
    case: str, pmf: Pmf, per_b: float, per_c: float, looks: int
) -> None:
    # Given 1,000 rollouts of a heavy-tailed canary on the margin, with a handful of labels a look
    rollouts, cfg = 1000, JudgeConfig(relative_margin=0.02)
    rng = np.random.default_rng(20261201)
    shape = (rollouts, looks)
    base, tail_b = _arm(rng, np.full(shape, per_b), pmf)
    can, tail_c = _arm(rng, np.full(shape, per_c), pmf.scaled(1.02))
    # When the judge looks at every interval (no weight change: every interval is a stratum)
    path = judge_path(base, can, tail_b, tail_c, np.ones(looks, dtype=bool), cfg)
    # Then false rollbacks and false promotions stay under their alphas, with the binomial tolerance
    rolled = int(path.regression.any(axis=-1).sum())
    promoted = int(path.not_worse.any(axis=-1).sum())
    fired = int(path.catastrophic.any(axis=-1).sum())
    a_r, a_p, a_c = cfg.alpha_rollback, cfg.alpha_promote, cfg.catastrophic_alpha
    assert upper99(rolled, rollouts) <= a_r + tolerance(a_r, rollouts), (case, rolled)
    assert upper99(promoted, rollouts) <= a_p + tolerance(a_p, rollouts), (case, promoted)
    assert upper99(fired, rollouts) <= a_c + tolerance(a_c, rollouts), (case, fired)
    # And the rollouts are long enough for the minimum-sample rule to have been met in most of them
    assert float(np.median(path.estimator.n_canary[:, -1])) >= cfg.min_samples_before_rollback


def crossing_excess(info: float, margin: float, alpha: float) -> float:
    """The estimate's excess over the null at which the test crosses at information `info`, in the
    normal approximation of each grid component (the one `samples_needed` uses)."""
    return float(
        optimize.brentq(lambda e: information_to_cross(e, margin, 0.0, alpha) - info, 1e-9, 10.0, xtol=1e-15)
    )


def last_look_power(effect: float, info: float, margin: float, alpha: float) -> float:
    """Probability that the test has crossed at a look with information `info`, judged from that look
    alone with theta_hat ~ N(theta, 1/I). Looks before the last can only add crossings; the bounded
    test's variance penalty is h(x) >= 1/2 times the normal one with x = range * bet, under 0.2 here,
    so its own boundary is at most sqrt(h(0.2) / 0.5) = 7.5% further out: we allow for that."""
    b = crossing_excess(info, margin, alpha) * math.sqrt(0.5739 / 0.5)
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
    predicted = last_look_power(0.01, info, 0.01, cfg.alpha_promote)
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
    predicted = last_look_power(theta - margin, info, margin, cfg.alpha_rollback)
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
    base, can = simulate(5, VALUES * 1.08, rollouts=3)
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
            # Then the numbers match the vectorised path at that look (the estimate at the look whose
            # numbers are reported: the crossing look once decided)
            shown = result.decided_look
            assert result.theta_hat == pytest.approx(path.estimator.theta_hat[r, shown], rel=1e-12, abs=1e-15)
            assert result.information == pytest.approx(path.estimator.information[r, k], rel=1e-12)
            assert math.log(max(result.p_regression, 1e-300)) == pytest.approx(
                max(path.log_p_regression[r, k], math.log(1e-300)), rel=1e-9, abs=1e-9
            )
            assert (result.verdict.value == "Regression") == bool(path.regression[r, k])
