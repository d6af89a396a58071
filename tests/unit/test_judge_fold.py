"""The running fold gives bitwise the verdict and numbers of evaluate() over the whole history."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.judge import JudgeConfig, evaluate, interval_arrays, judge_path
from lossgate.core.judge_codec import CorruptState, decode, encode
from lossgate.core.judge_fold import JudgeFold, advance, conclude
from lossgate.core.stratified import ArmArrays
from lossgate.core.verdicts import LossVerdict
from tests.unit.test_judge_properties import CFG, intervals_strategy


def fold_in_chunks(intervals: list[IntervalStats], cuts: list[int], config: JudgeConfig) -> JudgeFold:
    fold, lo = JudgeFold(), 0
    for hi in [*sorted(set(cuts)), len(intervals)]:
        fold = advance(fold, intervals[lo:hi], config)
        lo = max(lo, hi)
    return fold


@settings(max_examples=200, deadline=None)
@given(intervals=intervals_strategy(max_size=30), cuts=st.lists(st.integers(0, 30), max_size=6))
def test_folding_in_any_chunks_equals_the_full_recompute(
    intervals: list[IntervalStats], cuts: list[int]
) -> None:
    # Given any history, cut into chunks anywhere (empty chunks too)
    cuts = [c for c in cuts if c <= len(intervals)]
    # When it is folded chunk by chunk
    folded = conclude(fold_in_chunks(intervals, cuts, CFG), CFG)
    # Then the result is exactly the one judging the whole history at once gives
    assert folded == evaluate(intervals, CFG)


@settings(max_examples=100, deadline=None)
@given(intervals=intervals_strategy(min_size=5, max_size=30, dense=True), cut=st.integers(1, 29))
def test_relative_margins_and_decided_looks_agree_too(intervals: list[IntervalStats], cut: int) -> None:
    config = JudgeConfig(
        relative_margin=0.05, min_samples_before_rollback=100, min_samples_before_promote=500
    )
    assert conclude(fold_in_chunks(intervals, [cut], config), config) == evaluate(intervals, config)


def test_one_interval_at_a_time_over_a_long_history_reaches_the_same_decision() -> None:
    # Given a 400-interval regression of 3.5 margins with heavy-tailed losses
    rng = np.random.default_rng(7)
    intervals = []
    for k in range(400):
        n_b, n_c = float(rng.poisson(600)), float(rng.poisson(120))
        m_b, m_c = 0.40, 0.47
        intervals.append(
            IntervalStats(
                30.0 * k,
                30.0 * (k + 1),
                ArmStats(n_b, n_b * m_b, n_b * (1.5 + m_b**2), float(rng.poisson(1))),
                ArmStats(n_c, n_c * m_c, n_c * (1.5 + m_c**2), float(rng.poisson(0.1))),
                10,
            )
        )
    config = JudgeConfig(margin=0.02, min_samples_before_rollback=200, min_samples_before_promote=1000)
    # When it is folded one interval per tick
    fold = JudgeFold()
    for iv in intervals:
        fold = advance(fold, [iv], config)
    # Then the verdict, the decided look and every number equal the full recompute
    full = evaluate(intervals, config)
    assert full.verdict is LossVerdict.REGRESSION
    assert conclude(fold, config) == full


@settings(max_examples=100, deadline=None)
@given(intervals=intervals_strategy(max_size=30), cut=st.integers(0, 30))
def test_a_fold_written_to_status_and_read_back_continues_identically(
    intervals: list[IntervalStats], cut: int
) -> None:
    # Given a fold stored as JSON (as status keeps it) after the first `cut` intervals
    stored = json.loads(json.dumps(encode(advance(JudgeFold(), intervals[:cut], CFG))))
    # When an operator restarted from it folds the rest
    resumed = advance(decode(stored), intervals[cut:], CFG)
    # Then it reaches exactly the full recompute's result
    assert conclude(resumed, CFG) == evaluate(intervals, CFG)


def test_numbers_that_are_not_a_fold_are_refused() -> None:
    good = encode(
        advance(JudgeFold(), [IntervalStats(0, 30, ArmStats(10, 5, 5), ArmStats(10, 5, 5), 10)], CFG)
    )
    for broken in ({**good, "totals": [1.0]}, {k: v for k, v in good.items() if k != "cs"},
                   {**good, "regression": [0.0] * 5}):  # fmt: skip
        with pytest.raises(CorruptState):
            decode(broken)


@settings(max_examples=50, deadline=None)
@given(intervals=intervals_strategy(min_size=2, max_size=20, dense=True))
def test_the_benchmarks_batched_paths_equal_one_history_at_a_time(intervals: list[IntervalStats]) -> None:
    # Given a history judged alone (the operator's grid-stacked path) and as a row of a batch of two
    base, can, tb, tc = interval_arrays(intervals)
    used = np.ones(len(intervals), dtype=bool)
    one = judge_path(base, can, tb, tc, used, CFG)
    two = judge_path(
        *(_twice(a) for a in (base, can)), np.stack([tb, tb]), np.stack([tc, tc]), np.stack([used, used]), CFG
    )
    # Then every look's p-values are bitwise the same
    for name in ("log_p_regression", "log_p_not_worse", "log_p_catastrophic"):
        assert np.array_equal(getattr(one, name), getattr(two, name)[1])


def _twice(arm: ArmArrays) -> ArmArrays:
    return ArmArrays(np.stack([arm.n, arm.n]), np.stack([arm.sum, arm.sum]), np.stack([arm.sumsq, arm.sumsq]))
