"""core.backtest: the virtual clock honours the spec, whatever the history (hypothesis). The same
code runs against a real Prometheus in tests/cli/test_replay_simulate.py and on e2e rollouts in
tests/e2e/test_promote_rollback.py; here the intervals are generated."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from lossgate.adapters.spec_refs import judge_config
from lossgate.core.backtest import Backtest, backtest
from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.model import ModelRolloutSpec

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL_S = 30.0


def spec(steps: list[int], defaults: dict[str, Any]) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate({
        "model": "m", "baseline": {"version": "a", "service": "a"},
        "canary": {"version": "b", "service": "b"},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
        "steps": [{"weight": w} for w in steps] + [{"weight": 100}], "stepDefaults": defaults,
        "analysis": {"interval": "30s", "prometheus": {"address": "http://127.0.0.1:9"},
                     "loss": {"margin": 0.02, "minSamplesBeforeRollback": 500,
                              "minSamplesBeforePromotion": 1500}},
    })  # fmt: skip


def history(
    n: int, delta: float, tail_every: int, rng: np.random.Generator, looks: int = 80
) -> list[IntervalStats]:
    """A 50/50 A/B history: `n` labelled predictions per arm and interval, the canary `delta` nats worse."""
    out = []
    for k in range(looks):
        arms = []
        for mean, every in ((0.4, 500), (0.4 + delta, tail_every)):
            m = mean + rng.normal(0.0, 0.6 / math.sqrt(n))
            arms.append(ArmStats(n=float(n), sum=n * m, sumsq=n * (0.36 + m * m), tail=float(n // every)))
        out.append(
            IntervalStats(T0.timestamp() + INTERVAL_S * k, T0.timestamp() + INTERVAL_S * (k + 1), *arms, None)
        )
    return out


def run(s: ModelRolloutSpec, ivs: list[IntervalStats]) -> Backtest:
    return backtest(
        s, judge_config(s), ivs, T0, T0 + timedelta(seconds=INTERVAL_S * len(ivs)), recorded_split=0.5
    )


@seed(19)
@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(st.sampled_from([5, 10, 25, 50, 75]), min_size=1, max_size=3, unique=True).map(sorted),
    min_samples=st.integers(0, 800),
    min_minutes=st.integers(0, 6),
    max_minutes=st.one_of(st.none(), st.integers(7, 12)),
    on_max=st.sampled_from(["Rollback", "Hold", "Advance"]),
    n=st.integers(100, 600),
    delta=st.sampled_from([0.0, 0.01, 0.08]),
    data_seed=st.integers(0, 2**16),
)
def test_the_clock_honours_every_quota(
    steps: list[int], min_samples: int, min_minutes: int, max_minutes: int | None, on_max: str, n: int,
    delta: float, data_seed: int,
) -> None:  # fmt: skip
    # Given any steps and quotas, and any 50/50 history
    defaults: dict[str, Any] = {
        "minSamples": min_samples,
        "minDuration": f"{min_minutes}m",
        "onMaxDuration": on_max,
    }
    if max_minutes is not None:
        defaults["maxDuration"] = f"{max_minutes}m"
    s = spec(steps, defaults)
    bt = run(s, history(n, delta, 500, np.random.default_rng(data_seed)))
    moves = bt.moves
    # Then the rollout starts at the start, and moves through the steps in order, one at a time
    assert (moves[0].kind, moves[0].time) == ("Start", T0)
    assert [m.step for m in moves if m.kind == "Advance"] == list(
        range(2, 2 + sum(m.kind == "Advance" for m in moves))
    )
    starts = {1: T0} | {m.step: m.time for m in moves if m.kind == "Advance"}
    ticks = bt.ticks
    for i, m in enumerate(moves[1:], 1):
        left = moves[i - 1].step if moves[i - 1].kind != "Start" else 1
        in_step = m.time - starts[left]
        before = next(t for t in reversed(ticks) if t.time < m.time)
        timed_out = m.reason in ("StepTimedOut", "PromotedOnTimeout")
        if m.kind in ("Advance", "Promote") and not timed_out:
            # And no step ends before its minDuration and minSamples
            assert in_step >= timedelta(minutes=min_minutes), m
            assert before.samples_in_step + n >= min_samples, m
        if timed_out:
            # And a timeout comes exactly at maxDuration (the clock wakes at the deadline)
            assert max_minutes is not None
            assert in_step == timedelta(minutes=max_minutes), m
            assert on_max in ("Rollback", "Advance"), m
        if m.reason == "LossRegression":
            # And a regression rolls back only with minSamplesBeforeRollback canary samples judged
            assert m.n_canary >= 500, m
            assert m.cs_low is not None, m
            assert m.margin is not None, m
            assert m.cs_low > m.margin, m
    # And with Hold, a step past maxDuration never times out by itself
    if on_max == "Hold":
        assert all(m.reason not in ("StepTimedOut", "PromotedOnTimeout") for m in moves)


def test_the_catastrophic_guard_rolls_back_through_the_state_machine() -> None:
    # Given a canary with the same mean loss but one loss above 4.6 nats in 10 (the baseline: 1 in 500)
    s = spec([50], {"minSamples": 100, "minDuration": "10m"})
    bt = run(s, history(400, 0.0, 10, np.random.default_rng(7)))
    # Then decide() rolls back for catastrophic losses, before the 10-minute step could end
    assert [(m.kind, m.reason) for m in bt.moves] == [("Start", "Started"), ("Rollback", "CatastrophicLoss")]
    assert bt.moves[-1].time - T0 < timedelta(minutes=10)
    assert "catastrophic" in bt.moves[-1].message


def test_a_truncated_history_is_compared_from_its_oldest_kept_move() -> None:
    from lossgate.cli.backtest_cmd import comparable, compare

    def move(t: str, kind: str, step: int) -> dict[str, Any]:
        return {"time": f"2026-03-01T12:{t}Z", "kind": kind, "reason": kind, "step": step}

    replayed = [move("00:00", "Start", 1), move("05:00", "Advance", 2), move("10:00", "Advance", 3),
                move("15:00", "Promote", 4)]  # fmt: skip
    # Given a status.history that lost its oldest entries (only the last 20 decisions are kept)
    recorded = [move("10:01", "Advance", 3), move("15:00", "Promote", 4)]
    # Then the replay is compared from the oldest move still recorded, and matches
    mine = comparable(replayed, recorded, timedelta(seconds=45))
    assert mine == replayed[2:]
    assert compare(mine, recorded, timedelta(seconds=45)) == []
    # And a complete history is compared whole: a missing move is a difference
    assert compare(replayed, [move("00:00", "Start", 1), *recorded], timedelta(seconds=45)) == [
        "decision 2: replay Advance (Advance, step 2) at 2026-03-01T12:05:00Z, operator Advance (Advance, "
        "step 3) at 2026-03-01T12:10:01Z",
        "decision 3: replay Advance (Advance, step 3) at 2026-03-01T12:10:00Z, operator Promote (Promote, "
        "step 4) at 2026-03-01T12:15:00Z",
        "decision 4: replay Promote (Promote, step 4) at 2026-03-01T12:15:00Z, operator none",
    ]
