"""The loss-per-token judge (core/token_loss.py, core/token_fold.py): false rollbacks at most alpha
over 200 looks at low and high counts, detection, and the fold equal to the whole history."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.core.judge import used_intervals
from lossgate.core.token_fold import (
    TokenConfig,
    TokenCounts,
    TokenFold,
    TokenInterval,
    advance,
    conclude,
    decode,
    encode,
    evaluate,
)
from lossgate.core.token_loss import TokenNull, token_path
from lossgate.core.verdicts import LossVerdict

MARGIN = 0.02
MAX_TOKENS = 256
BASE = 2.3  # nats per token: perplexity 10


def _requests(rng: np.random.Generator, total: int, r: float, hard_long: bool) -> tuple[np.ndarray, ...]:
    """T tokens and S summed NLL per request with E[S] / E[T] = r exactly. `hard_long`: longer
    references are harder per token (a correlation of S / T with T, which the ratio must weigh)."""
    t = np.minimum(1.0 + rng.negative_binomial(2, 2.0 / 41.0, size=total), MAX_TOKENS)
    u = rng.gamma(4.0, 0.25, size=total)
    if hard_long:
        u = u * (0.5 + t / 40.0)
        # Rescale so that E[T u] / E[T] = 1 under this T distribution (computed, not assumed).
        u = u / _long_factor()
    s = np.minimum(rng.gamma(t * 0.5, u * r / 0.5), MAX_LOSS_NATS * t)
    return t, s


def _long_factor() -> float:
    rng = np.random.default_rng(99)
    t = np.minimum(1.0 + rng.negative_binomial(2, 2.0 / 41.0, size=2_000_000), MAX_TOKENS)
    return float(np.sum(t * (0.5 + t / 40.0)) / np.sum(t))


def _counters(rng: np.random.Generator, n: np.ndarray, r: float, hard_long: bool = False) -> np.ndarray:
    flat = n.reshape(-1)
    t, s = _requests(rng, int(flat.sum()), r, hard_long)
    cell = np.repeat(np.arange(flat.size), flat)
    rows = [
        np.bincount(cell, weights=x, minlength=flat.size)
        for x in (np.ones_like(t), s, t, s * s, t * t, s * t)
    ]
    return np.moveaxis(np.stack(rows).reshape((6, *n.shape)), 0, -2)


def _streams(
    seed: int, reps: int, per_look: float, r_c: float, hard_long: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and canary counters of `reps` rollouts of 200 looks with a 25% canary."""
    rng = np.random.default_rng(seed)
    n_c = rng.poisson(per_look * 0.25, size=(reps, 200))
    n_b = rng.poisson(per_look * 0.75, size=(reps, 200))
    return _counters(rng, n_b, BASE, hard_long), _counters(rng, n_c, r_c, hard_long)


def _rolled_back(
    seed: int, reps: int, per_look: float, r_c: float, alpha: float, hard_long: bool
) -> np.ndarray:
    """Which of `reps` rollouts of 200 looks (a 25% canary) the regression test rolls back."""
    base, canary = _streams(seed, reps, per_look, r_c, hard_long)
    looks = base.shape[-1]
    used = np.broadcast_to(used_intervals([25] * looks, True), (reps, looks))
    path = token_path(base, canary, used, TokenNull(MARGIN, max_tokens=MAX_TOKENS, warmup=200))
    return np.asarray((path.log_p_regression <= math.log(alpha)).any(axis=-1))


def _tolerance(alpha: float, reps: int) -> float:
    # alpha plus 2.33 binomial standard errors: a valid test exceeds it with chance under 1%.
    return alpha + 2.33 * math.sqrt(alpha * (1 - alpha) / reps)


@pytest.mark.parametrize(
    ("per_look", "reps", "hard_long"),
    [(40.0, 400, False), (40.0, 400, True), (1000.0, 80, False)],
    ids=["low-count", "low-count-long-is-hard", "high-count"],
)
def test_false_rollbacks_on_the_margin_at_most_alpha(per_look: float, reps: int, hard_long: bool) -> None:
    # Given canaries exactly on the margin (the hardest null), 200 looks each, alpha 0.05
    alpha = 0.05
    # When the regression test looks at every interval
    rolled = _rolled_back(7, reps, per_look, BASE + MARGIN, alpha, hard_long)
    # Then at most alpha of them are rolled back, within the binomial tolerance
    assert rolled.mean() <= _tolerance(alpha, reps)


def test_a_naive_repeated_delta_method_z_test_fails_the_same_tolerance() -> None:
    # Given the low-count streams on the margin, and the usual delta-method z test of the ratio
    # (plug-in variance sum (S - r T)^2 / (sum T)^2 per arm) repeated at every look at alpha 0.05
    base, canary = _streams(7, 400, 40.0, BASE + MARGIN, False)

    def ratio_and_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, s, t, ss, tt, st = (np.cumsum(x[:, i, :], axis=-1) for i in range(6))
        r = s / np.maximum(t, 1.0)
        return r, np.maximum(ss - 2 * r * st + r * r * tt, 0.0) / np.maximum(t, 1.0) ** 2

    r_b, v_b = ratio_and_var(base)
    r_c, v_c = ratio_and_var(canary)
    z = (r_c - r_b - MARGIN) / np.sqrt(np.maximum(v_b + v_c, 1e-12))
    rolled = (z > 1.6449).any(axis=-1)
    # Then it rolls back far more than alpha: the streams can show a miscalibrated test
    assert rolled.mean() > _tolerance(0.05, 400)


def test_detects_a_regression_of_five_margins_at_high_count() -> None:
    # Given canaries 5 margins worse per token (perplexity 10.0 -> 11.05), 1000 labels a look
    rolled = _rolled_back(11, 40, 1000.0, BASE + 5 * MARGIN, 0.01, False)
    # Then nearly every one is rolled back within the 200 looks
    assert rolled.mean() >= 0.9


def _intervals(seed: int, k: int, r_c: float, per_look: int = 120) -> list[TokenInterval]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        w = 10 if i < k // 2 else 25
        n = np.asarray([rng.poisson(per_look * (1 - w / 100)), rng.poisson(per_look * w / 100)])
        b = _counters(rng, n[:1], BASE)[:, 0]
        c = _counters(rng, n[1:], r_c)[:, 0]
        out.append(TokenInterval(30.0 * i, 30.0 * (i + 1), TokenCounts(*b), TokenCounts(*c), w))
    return out


CONFIG = TokenConfig(TokenNull(0.05, max_tokens=MAX_TOKENS, warmup=50), alpha_rollback=0.01)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    k=st.integers(1, 40),
    cuts=st.lists(st.integers(1, 39), max_size=4),
    r_c=st.sampled_from([BASE, BASE + 0.5]),
)
def test_chunked_fold_equals_whole_history(seed: int, k: int, cuts: list[int], r_c: float) -> None:
    # Given a history cut into chunks, status written as JSON in between
    intervals = _intervals(seed, k, r_c)
    fold = TokenFold()
    bounds = sorted({c for c in cuts if c < k})
    for lo, hi in zip([0, *bounds], [*bounds, k], strict=True):
        fold = decode(json.loads(json.dumps(encode(advance(fold, intervals[lo:hi], CONFIG)))))
    # Then the verdict and every number equal the whole history judged at once
    assert conclude(fold, CONFIG) == evaluate(intervals, CONFIG)


def test_large_regression_is_caught_and_reported_per_token() -> None:
    # Given a canary 0.5 nats per token worse (perplexity x1.65), 40 intervals of 120 labels
    result = evaluate(_intervals(3, 40, BASE + 0.5), CONFIG)
    # Then it is a regression, with both arms' NLL per token and a lower bound above the margin
    assert result.verdict is LossVerdict.REGRESSION
    assert result.per_token_baseline is not None
    assert abs(result.per_token_baseline - BASE) < 0.2
    assert result.per_token_canary is not None
    assert result.per_token_canary > result.per_token_baseline + 0.3
    assert result.cs_low > CONFIG.null.margin


def test_no_bet_before_the_warm_up() -> None:
    # Given fewer labelled requests per arm than the warm-up
    intervals = _intervals(5, 3, BASE + 3.0, per_look=40)
    result = evaluate(intervals, TokenConfig(TokenNull(0.05, max_tokens=MAX_TOKENS, warmup=500)))
    # Then nothing is decided, however bad the canary looks, and the reason names the warm-up
    assert result.verdict is LossVerdict.INSUFFICIENT_DATA
    assert result.p_regression == 1.0
    assert "warm-up" in result.reason


def test_counters_outside_the_bounds_are_not_strata() -> None:
    # Given an interval whose mean tokens exceed maxTokensPerRequest (the bound the test rests on)
    good = _intervals(8, 30, BASE + 0.5)
    bad = [
        TokenInterval(iv.start, iv.end, iv.baseline, TokenCounts(10, 1e6, 1e5, 1e11, 1e9, 1e10), 25)
        for iv in good
    ]
    # Then those intervals are ignored (no evidence), not clipped into the test
    assert evaluate(bad, CONFIG).p_regression == 1.0
