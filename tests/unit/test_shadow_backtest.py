"""core.backtest with a shadow first step: judged on the recorded paired intervals, as the operator
would be (the real-Prometheus path of `lossgate replay` is tests/cli/test_replay_simulate.py)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from lossgate.adapters.spec_refs import judge_config
from lossgate.core.backtest import Backtest, backtest
from lossgate.core.paired import PairedStats
from lossgate.model import ModelRolloutSpec
from tests.unit.test_backtest_properties import INTERVAL_S, T0, history

LOOKS = 80
SPEC = ModelRolloutSpec.model_validate({
    "model": "m", "baseline": {"version": "a", "service": "a"}, "canary": {"version": "b", "service": "b"},
    "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
    "steps": [{"shadow": {"mirrorPercent": 100}, "minSamples": 2000}, {"weight": 20}, {"weight": 100}],
    "stepDefaults": {"minSamples": 500, "minDuration": "1m"},
    "analysis": {"interval": "30s", "prometheus": {"address": "http://127.0.0.1:9"},
                 "loss": {"margin": 0.02, "minSamplesBeforeRollback": 500}},
})  # fmt: skip


def pairs(d: float, n: float = 400.0, sd: float = 0.15) -> list[PairedStats]:
    return [PairedStats(n=n, sum=n * d, sumsq=n * (d * d + sd * sd), sum_baseline=n * 0.4)] * LOOKS


def run(paired: list[PairedStats] | None) -> Backtest:
    ivs = history(400, 0.0, 500, np.random.default_rng(7), looks=LOOKS)
    end = T0 + timedelta(seconds=INTERVAL_S * LOOKS)
    return backtest(SPEC, judge_config(SPEC), ivs, T0, end, recorded_split=0.5, paired=paired)


def test_a_recorded_paired_regression_rolls_back_in_shadow() -> None:
    bt = run(pairs(0.2))
    assert bt.status.phase == "RolledBack"
    assert bt.ticks[-1].reason == "PairedRegression"
    assert {t.weight for t in bt.ticks} == {0}


def test_recorded_paired_non_inferiority_leaves_shadow_after_its_quota() -> None:
    bt = run(pairs(0.0))
    left = next(t for t in bt.ticks if t.reason == "ShadowPassed")
    assert left.weight == 20
    assert bt.status.paired is not None
    assert bt.status.paired.n >= 2000  # the shadow step's minSamples, in pairs
    assert all(t.weight == 0 for t in bt.ticks[: bt.ticks.index(left)])


def test_without_a_paired_history_the_shadow_step_waits() -> None:
    bt = run(None)
    assert {t.weight for t in bt.ticks} == {0}
    assert not bt.status.terminal
