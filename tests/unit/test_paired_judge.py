"""The paired judge (core/paired.py): calibrated at the null's boundary, powerful against +2 margins,
the same in any chunking (the fixed-size fold), and blind to counters no bounded d can produce.

Simulations use fixed seeds; the tolerance on a rate estimated from R rollouts is 2.33 binomial
standard errors (a one-sided 99% bound): rate <= alpha + 2.33 sqrt(alpha (1 - alpha) / R)."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.family import family_size, split_alpha
from lossgate.core.judge_types import JudgeConfig
from lossgate.core.paired import PairedArrays, PairedFold, PairedStats, advance, paired_path
from lossgate.core.verdicts import LossVerdict

MARGIN = 0.05
CONFIG = JudgeConfig(
    margin=MARGIN,
    alpha_rollback=0.05,
    alpha_promote=0.05,
    min_samples_before_rollback=0,
    min_samples_before_promote=0,
)
R, K, N = 2000, 20, 100  # rollouts, looks, pairs per look


def _losses(rng: np.random.Generator, shape: tuple[int, ...], rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-request baseline and canary losses in [0, L]: exponential-like, correlated (hard requests
    are hard for both) through a shared difficulty."""
    hard = rng.exponential(0.4, shape)
    own_b, own_c = rng.exponential(0.4, shape), rng.exponential(0.4, shape)
    b = np.clip(math.sqrt(rho) * hard + math.sqrt(1 - rho) * own_b, 0, MAX_LOSS_NATS)
    c = np.clip(math.sqrt(rho) * hard + math.sqrt(1 - rho) * own_c, 0, MAX_LOSS_NATS)
    return b, c


def _arrays(b: np.ndarray, d: np.ndarray) -> PairedArrays:
    """Per-look counters from per-request arrays shaped (R, K, N)."""
    return PairedArrays(np.full(d.shape[:-1], float(d.shape[-1])), d.sum(-1), (d * d).sum(-1), b.sum(-1))


def _boundary(seed: int, shift: float) -> PairedArrays:
    """d with mean exactly `shift`: a symmetric zero-mean noise (bounded, so its mean is exact) plus shift."""
    rng = np.random.default_rng(seed)
    b, c = _losses(rng, (R, K, N), rho=0.8)
    noise = c - b  # exchangeable arms: symmetric about 0, mean exactly 0
    return _arrays(b, noise + shift)


def _bound(alpha: float) -> float:
    return alpha + 2.33 * math.sqrt(alpha * (1 - alpha) / R)


def test_false_rollbacks_at_the_boundary_stay_under_alpha() -> None:
    # Given 2,000 shadow phases whose true mean difference is exactly the margin (H0's boundary)
    x = _boundary(seed=11, shift=MARGIN)
    # When the paired test runs at every one of 20 looks
    path = paired_path(x, CONFIG, CONFIG.alpha_rollback)
    rate = float(path.regression[:, -1].mean())
    # Then the share that ever rolled back is at most alpha plus sampling error
    assert rate <= _bound(CONFIG.alpha_rollback), rate


def test_false_promotions_at_the_boundary_stay_under_alpha() -> None:
    # Given the same boundary (the canary worse by exactly the margin)
    x = _boundary(seed=12, shift=MARGIN)
    # When the paired test runs; Then "not worse" is shown at most alpha_promote of the time
    path = paired_path(x, CONFIG, CONFIG.alpha_rollback)
    rate = float(path.not_worse[:, -1].mean())
    assert rate <= _bound(CONFIG.alpha_promote), rate


def test_a_regression_of_two_margins_is_caught_and_an_equal_canary_is_shown_not_worse() -> None:
    # Given correlated losses (rho 0.8): a canary worse by 2 margins, and one equal to the baseline
    worse, equal = _boundary(seed=13, shift=2 * MARGIN), _boundary(seed=14, shift=0.0)
    # When the paired test runs 20 looks of 100 pairs
    caught = float(paired_path(worse, CONFIG, CONFIG.alpha_rollback).regression[:, -1].mean())
    shown = float(paired_path(equal, CONFIG, CONFIG.alpha_rollback).not_worse[:, -1].mean())
    # Then nearly every regression is caught and nearly every equal canary is shown not worse. Why 0.9:
    # each pair's bet is at most 0.9 / (L + m), about 0.065, so log E grows by about 0.065 x 0.05
    # (the excess over the null) = 0.0033 a pair, less the penalty h(0.9) b^2 var(d) = 0.0005
    # (var(d) = 2 (1 - rho) 0.16 = 0.064): 2,000 pairs give about 5.5 nats on average, past
    # log(1 / 0.05) = 3.0 with a standard deviation of about 0.065 sqrt(2000 x 0.064) = 0.74.
    assert caught >= 0.9, caught
    assert shown >= 0.9, shown


def test_a_canary_in_a_regression_is_never_shown_not_worse() -> None:
    x = _boundary(seed=15, shift=2 * MARGIN)
    path = paired_path(x, CONFIG, CONFIG.alpha_rollback)
    assert float(path.not_worse[:, -1].mean()) <= _bound(0.0) + 1e-9


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 15), min_size=0, max_size=4, unique=True),
    shift=st.sampled_from([0.0, 0.05, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_the_fold_in_any_chunks_equals_the_whole_path(cuts: list[int], shift: float, seed: int) -> None:
    # Given one shadow phase of 16 intervals (some empty) cut into chunks anywhere
    rng = np.random.default_rng(seed)
    b, c = _losses(rng, (16, 50), rho=0.7)
    d = c - b + shift
    n = rng.integers(0, 3, 16) * 25  # 0, 25 or 50 pairs
    stats = [
        PairedStats(
            float(n[k]),
            float(d[k, : n[k]].sum()),
            float((d[k, : n[k]] ** 2).sum()),
            float(b[k, : n[k]].sum()),
        )
        for k in range(16)
    ]
    whole = advance(PairedFold(), stats, CONFIG, 0.05)
    # When the fold advances chunk by chunk
    fold, edges = PairedFold(), [0, *sorted(cuts), 16]
    for lo, hi in itertools.pairwise(edges):
        fold = advance(fold, stats[lo:hi], CONFIG, 0.05)
    # Then the verdict, its look, the evidence and the sums are the whole path's (bit for bit)
    assert (fold.verdict, fold.decided_at, fold.looks) == (whole.verdict, whole.decided_at, 16)
    assert fold.start.log_p_regression == whole.start.log_p_regression
    assert fold.start.log_p_not_worse == whole.start.log_p_not_worse
    assert np.array_equal(fold.start.reg_a, whole.start.reg_a)
    assert fold.n == whole.n == float(n.sum())
    assert math.isclose(fold.cs[0], whole.cs[0], abs_tol=1e-9)
    assert math.isclose(fold.cs[1], whole.cs[1], abs_tol=1e-9)


def test_counters_no_bounded_difference_can_produce_are_ignored() -> None:
    # Given garbage intervals: NaN, negative count, |mean d| > L, sum of d^2 above n L^2, a reset
    bad = [
        PairedStats(math.nan, 1.0, 1.0, 1.0),
        PairedStats(-5.0, 1.0, 1.0, 1.0),
        PairedStats(10.0, 10 * 20.0, 10 * 400.0, 5.0),
        PairedStats(10.0, 1.0, 10 * MAX_LOSS_NATS**2 * 2, 5.0),
        PairedStats(10.0, 1.0, 1.0, -3.0),
    ]
    # When they are folded; Then nothing counts, and the fold reports no evidence either way
    fold = advance(PairedFold(), bad, CONFIG, 0.05)
    assert fold.n == 0.0
    assert fold.verdict is LossVerdict.UNDECIDED
    assert fold.start.log_p_regression == 0.0 == fold.start.log_p_not_worse


def test_min_samples_gate_the_verdicts() -> None:
    # Given a clear regression seen in 400 pairs and a config that waits for 1,000 before rolling back
    cfg = JudgeConfig(margin=MARGIN, min_samples_before_rollback=1000, min_samples_before_promote=5000)
    stats = [PairedStats(100.0, 100 * 0.5, 100 * 0.3, 100 * 0.4)] * 4
    fold = advance(PairedFold(), stats, cfg, 0.01)
    # Then no verdict yet, though the evidence has crossed; and at 1,000 pairs it rolls back
    assert fold.verdict is LossVerdict.UNDECIDED
    assert fold.p_regression <= 0.01
    fold = advance(fold, [PairedStats(600.0, 600 * 0.5, 600 * 0.3, 600 * 0.4)], cfg, 0.01)
    assert (fold.verdict, fold.decided_at) == (LossVerdict.REGRESSION, 4)
    assert fold.cs[0] > MARGIN


def test_the_shadow_phase_is_one_more_check_in_the_rollouts_family() -> None:
    # Given a rollout with 2 guardrails and 3 class slots, with and without a shadow step
    live, shadowed = family_size(2, 3), family_size(2, 3, shadow=True)
    # Then the shadow phase's paired test takes one Bonferroni share, and all shares sum to alphaRollback
    assert (live, shadowed) == (6, 7)
    assert math.isclose(shadowed * split_alpha(0.01, shadowed), 0.01, rel_tol=1e-12)


def test_rare_extreme_differences_at_the_boundary_stay_under_alpha() -> None:
    # Given d that is -0.089 nats 99% of the time and +L (a confident mistake only the canary makes)
    # 1% of the time: mean exactly the margin, the skew that a normal approximation gets wrong
    rng = np.random.default_rng(21)
    p = 0.01
    low = (MARGIN - p * MAX_LOSS_NATS) / (1 - p)
    d = np.where(rng.random((R, K, N)) < p, MAX_LOSS_NATS, low)
    b = np.full((R, K, N), MAX_LOSS_NATS / 2)
    x = _arrays(b, d)
    # When the paired test runs; Then it rolls back at most alpha of them, and (mirror image, rare -L)
    # shows "not worse" at most alpha_promote of the time
    path = paired_path(x, CONFIG, CONFIG.alpha_rollback)
    assert float(path.regression[:, -1].mean()) <= _bound(CONFIG.alpha_rollback)
    mirror = _arrays(b, 2 * MARGIN - d)  # mean exactly the margin again, the rare value now -L + 2 margins
    assert float(paired_path(mirror, CONFIG, CONFIG.alpha_rollback).not_worse[:, -1].mean()) <= _bound(
        CONFIG.alpha_promote
    )
