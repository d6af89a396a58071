"""Whole ticks of a rollout with a shadow first step, against in-memory fakes of the ports (a router
that mirrors, Prometheus with the joiner's paired counters). The real-server pieces are tested apart:
the routers' mirror in tests/kube/test_router_mirror.py, the paired reads in tests/joiner."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from lossgate.core.evidence import Problem, Weights
from lossgate.core.paired import PairedStats
from lossgate.model import ModelRolloutStatus, Phase, Reason
from lossgate.ports import LossSeriesRef
from tests.unit.reconcile_fakes import FakeClock, FakeObjects, FakeRouter, rollout_body
from tests.unit.test_tick_wiring import FixedVersions, RecordingMetrics, WiredDeps, merged, run_ticks

SHADOW = {
    "steps": [
        {"shadow": {"mirrorPercent": 40}, "minSamples": 3000, "minDuration": "0s"},
        {"weight": 10},
        {"weight": 100},
    ]
}


class MirrorRouter(FakeRouter):
    """A router that mirrors: every weight and mirror it was set to is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.mirror = 0
        self.mirror_sets: list[int] = []
        self.weights_seen: list[int] = []

    def set_weights(self, weights: Weights) -> Weights | Problem:
        self.weights_seen.append(weights.canary)
        return super().set_weights(weights)

    def get_mirror(self) -> int | Problem:
        return self.mirror

    def set_mirror(self, percent: int) -> int | Problem:
        self.mirror_sets.append(percent)
        self.mirror = percent
        return percent


@dataclass
class PairedMetrics(RecordingMetrics):
    """Every aligned interval has `pairs` requests both versions predicted, with mean difference
    `d` (canary minus baseline) and spread `sd`; the windows read are recorded."""

    pairs: float = 2000.0
    d: float = 0.0
    sd: float = 0.1
    paired_reads: list[tuple[float, float]] = field(default_factory=list)

    def paired_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[PairedStats] | Problem:
        s, e = start.timestamp(), end.timestamp()
        self.paired_reads.append((s, e))
        k = math.floor((e - s) / interval_s + 1e-9)
        n = self.pairs
        one = PairedStats(n=n, sum=n * self.d, sumsq=n * (self.d**2 + self.sd**2), sum_baseline=n * 0.4)
        return [one] * k


def shadow_rollout(metrics: PairedMetrics) -> tuple[WiredDeps, FakeObjects, MirrorRouter]:
    objects = FakeObjects(body=rollout_body(merged(SHADOW)))
    deps = WiredDeps(objects, metrics, FixedVersions(None))
    router = MirrorRouter()
    deps._router = router
    assert isinstance(deps.clock, FakeClock)
    return deps, objects, router


def test_a_bad_canary_is_rolled_back_in_shadow_without_serving_anyone() -> None:
    # Given a canary whose loss on the same requests is 0.2 nats above the baseline's (margin 0.01)
    metrics = PairedMetrics(d=0.2)
    deps, objects, router = shadow_rollout(metrics)
    # When the rollout runs
    status = run_ticks(deps, objects, 6)
    # Then it rolled back in the shadow step on the paired test
    assert status.phase is Phase.ROLLED_BACK
    assert status.history[-1].reason == Reason.PAIRED_REGRESSION
    assert status.step_index == 0
    # And the canary never had a user (weight 0 throughout), the mirror was set to 40% then removed
    assert set(router.weights_seen) <= {0}
    assert router.canary == 0
    assert router.mirror_sets == [40, 0]
    assert status.mirror_percent == 0
    # And status shows the paired numbers the verdict was taken on
    assert status.paired is not None
    assert status.paired.verdict == "Regression"
    assert status.paired.delta is not None
    assert abs(status.paired.delta - 0.2) < 1e-9
    assert status.paired.n >= 2000


def test_a_good_canary_leaves_shadow_for_the_first_live_step_on_paired_evidence() -> None:
    # Given a canary as good as the baseline on the same requests (d = 0, sd 0.1, margin 0.01)
    metrics = PairedMetrics(d=0.0)
    deps, objects, router = shadow_rollout(metrics)
    # When the rollout runs until it leaves the shadow step
    status = run_ticks(deps, objects, 1)
    assert status.mirror_percent == 40
    assert router.mirror == 40
    for _ in range(40):
        status = run_ticks(deps, objects, 1)
        if status.step_index > 0:
            break
    # Then it moved to step 2 at 10% on paired non-inferiority, and the mirror is gone
    assert status.step_index == 1
    assert status.canary_weight == 10
    assert router.canary == 10
    assert status.phase is Phase.PROGRESSING
    assert any(h.reason == Reason.SHADOW_PASSED for h in status.history)
    assert router.mirror_sets == [40, 0]
    assert status.paired is not None
    assert status.paired.verdict == "NotWorse"
    assert status.paired.n >= 3000  # the shadow step's minSamples counts pairs
    # And each tick read only the paired intervals closed since the last one (state in status)
    starts = [s for s, _ in metrics.paired_reads]
    ends = [e for _, e in metrics.paired_reads]
    assert starts == sorted(starts)
    assert all(b_start <= a_end for a_end, b_start in zip(ends, starts[1:], strict=False))
    assert len(set(starts)) > 1
    # And once live, no more paired reads
    reads = len(metrics.paired_reads)
    run_ticks(deps, objects, 2)
    assert len(metrics.paired_reads) == reads


def test_the_paired_state_survives_an_operator_restart_bit_for_bit() -> None:
    # Given the same shadow rollout run by one operator, and by one restarted after each tick
    one = PairedMetrics(d=0.0)
    deps, objects, _ = shadow_rollout(one)
    straight = run_ticks(deps, objects, 5)
    two = PairedMetrics(d=0.0)
    deps2, objects2, router2 = shadow_rollout(two)
    for _ in range(5):
        fresh = WiredDeps(objects2, two, FixedVersions(None))  # a new operator: only status carries over
        fresh._router = router2
        fresh.clock = deps2.clock
        run_ticks(fresh, objects2, 1)
    restarted = ModelRolloutStatus.model_validate(objects2.body["status"])
    # Then the paired state and numbers are identical
    assert straight.paired_state == restarted.paired_state
    assert straight.paired == restarted.paired
