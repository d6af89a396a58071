"""Whole ticks against in-memory fakes of the ports that record every read and its arguments.

Each test sets one spec field to a non-default value and shows that it reaches the port (or the
decision) it is documented to change: before these tests, each of them silently had no effect.
The real-server versions of these paths are in tests/adapters, tests/kube and tests/e2e.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lossgate.core.evidence import ArmStats, IntervalStats, Problem, RankSeries, TrainingRun
from lossgate.core.judge import evaluate
from lossgate.core.timeline import with_weights
from lossgate.model import ModelRolloutStatus
from lossgate.ports import CanaryPodsRef, LossSeriesRef, VersionSource
from lossgate.reconcile.rollout import tick
from tests.unit.reconcile_fakes import SPEC, FakeClock, FakeDeps, FakeObjects, FakeRouter, rollout_body

INTERVAL = 30.0


@dataclass
class LossRead:
    ref: LossSeriesRef
    start: float
    end: float
    interval_s: float


@dataclass
class RecordingMetrics:
    """Prometheus as a function of time: every aligned interval closed in a read's window has the same
    arm aggregates; each read and its arguments are recorded."""

    baseline: ArmStats = field(default_factory=lambda: ArmStats(2000, 800.0, 2000 * 0.41))
    canary: ArmStats = field(default_factory=lambda: ArmStats(500, 200.0, 500 * 0.41))
    run: TrainingRun | None = None
    loss_reads: list[LossRead] = field(default_factory=list)
    training_reads: list[tuple[str, str | None]] = field(default_factory=list)

    def loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[IntervalStats] | Problem:
        s, e = start.timestamp(), end.timestamp()
        self.loss_reads.append(LossRead(ref, s, e, interval_s))
        k = math.floor((e - s) / interval_s + 1e-9)
        return [IntervalStats(s + i * interval_s, s + (i + 1) * interval_s, self.baseline, self.canary)
                for i in range(k)]  # fmt: skip

    def training_run(
        self, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
    ) -> TrainingRun | Problem:
        self.training_reads.append((run, baseline_run))
        return self.run if self.run is not None else Problem("NoData", "no run")


class FixedVersions:
    def __init__(self, version: str | None) -> None:
        self.version, self.calls = version, 0

    def canary_version(self) -> str | Problem | None:
        self.calls += 1
        return self.version


class WiredDeps(FakeDeps):
    def __init__(
        self, objects: FakeObjects, metrics: RecordingMetrics, versions: FixedVersions | None = None
    ):
        super().__init__(objects, FakeRouter(), metrics, FakeClock())
        self.fixed_versions = versions or FixedVersions(None)
        self.version_refs: list[CanaryPodsRef] = []

    def versions(self, ref: CanaryPodsRef) -> VersionSource:
        self.version_refs.append(ref)
        return self.fixed_versions


def merged(over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(SPEC)
    for key, value in over.items():
        node = out
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def run_ticks(deps: WiredDeps, objects: FakeObjects, ticks: int) -> ModelRolloutStatus:
    """Tick, move the clock one interval, tick again...; the status travels as JSON, as through the
    API server."""
    for _ in range(ticks):
        objects.body["status"] = json.loads(json.dumps(objects.body.get("status") or {}))
        asyncio.run(tick(deps, objects.body, lambda e: None))
        assert isinstance(deps.clock, FakeClock)
        deps.clock.advance(INTERVAL)
    return ModelRolloutStatus.model_validate(objects.body["status"])


def start(
    over: dict[str, Any], metrics: RecordingMetrics, versions: FixedVersions | None = None
) -> tuple[WiredDeps, FakeObjects]:
    objects = FakeObjects(body=rollout_body(merged(over)))
    return WiredDeps(objects, metrics, versions), objects


def test_catastrophic_threshold_reaches_the_loss_series_read() -> None:
    # Given a rollout whose tail threshold is 10 nats instead of the default 4.6
    metrics = RecordingMetrics()
    deps, objects = start({"analysis.loss.catastrophicThreshold": 10}, metrics)
    # When it starts and judges one interval
    run_ticks(deps, objects, 3)
    # Then every loss read asked for the le="10.0" bucket
    assert metrics.loss_reads
    assert {r.ref.tail_le for r in metrics.loss_reads} == {"10.0"}


def test_catastrophic_ratio_is_the_guards_null() -> None:
    # Given a canary whose rate of very large losses is 4x the baseline's, means otherwise equal
    tails = dict(
        baseline=ArmStats(2000, 800.0, 2000 * 0.41, tail=20), canary=ArmStats(500, 200.0, 500 * 0.41, tail=20)
    )
    outcomes = {}
    for ratio in (2, 10):
        metrics = RecordingMetrics(**tails)
        deps, objects = start({"analysis.loss.catastrophicRatio": ratio}, metrics)
        # When it runs 40 intervals
        outcomes[ratio] = run_ticks(deps, objects, 40).phase.value
    # Then the guard rolls back under "at most twice the baseline's rate", not under "at most 10x"
    assert outcomes == {2: "RolledBack", 10: "Progressing"}


def _healthy_run(validation: float, baseline_validation: float) -> TrainingRun:
    steps = tuple(float(s) for s in range(300))
    ranks = tuple(
        RankSeries(str(r), steps, tuple(2.0 - 0.001 * s + 0.01 * math.sin(s + r) for s in range(300)),
                   tuple(1.0 + 0.05 * math.sin(0.7 * s + r) for s in range(300)))
        for r in range(2)
    )  # fmt: skip
    return TrainingRun("r2", ranks, validation_loss=validation, baseline_validation_loss=baseline_validation)


def test_baseline_run_and_validation_margin_reach_the_health_gate() -> None:
    # Given a canary run whose validation loss is 5% above the baseline run's
    phases = {}
    for margin in (0.02, 0.10):
        metrics = RecordingMetrics(run=_healthy_run(1.05, 1.00))
        gate = {"validationMargin": margin, "warmupSteps": 0, "windowSteps": 100}
        over = {"canary.trainingRun": "r2", "baseline.trainingRun": "r1", "analysis.gradientHealth": gate}
        deps, objects = start(over, metrics)
        # When the rollout tries to start
        status = run_ticks(deps, objects, 2)
        phases[margin] = status.phase.value
        # Then the training run was read with the baseline's run beside it
        assert metrics.training_reads[0] == ("r2", "r1")
    # And a 2% margin blocks the start, a 10% margin lets it start
    assert phases == {0.02: "Failed", 0.10: "Progressing"}


def test_the_canary_version_its_pods_serve_holds_the_start() -> None:
    over = {"canary.deployment": "m-v2"}
    phases = {}
    for seen in ("v1", "v2"):
        deps, objects = start(over, RecordingMetrics(), FixedVersions(seen))
        status = run_ticks(deps, objects, 2)
        phases[seen] = status.phase.value
        assert deps.version_refs[0] == CanaryPodsRef("ml", "m-v2", "v2")
        if seen == "v1":
            assert any(c.reason == "CanaryNotReady" for c in status.conditions) or "v1" in status.message
    # Pods still on the old version hold the rollout before traffic moves; the new one lets it start
    assert phases == {"v1": "Pending", "v2": "Progressing"}


def test_each_tick_reads_only_the_intervals_closed_since_the_last() -> None:
    # Given a rollout ticking once an interval for 60 intervals
    metrics = RecordingMetrics()
    deps, objects = start({}, metrics)
    status = run_ticks(deps, objects, 60)
    st = status.judge_state
    assert st is not None
    assert st.looks >= 55
    origin = st.origin_ms / 1000
    reads = [r for r in metrics.loss_reads if r.start >= origin]  # not the probe before the start
    # Then every read after the first starts where the previous one's intervals ended
    assert len(reads) >= 55
    for prev, cur in itertools.pairwise(reads):
        closed = math.floor((prev.end - prev.start) / INTERVAL + 1e-9)
        assert cur.start == prev.start + closed * INTERVAL
        assert cur.end - cur.start < 2 * INTERVAL  # constant, whatever the rollout's age
    # And the judge's numbers equal the full recompute over every interval since the start
    b, c = metrics.baseline, metrics.canary
    whole = [IntervalStats(origin + i * INTERVAL, origin + (i + 1) * INTERVAL, b, c) for i in range(st.looks)]
    timeline = [(s.at.timestamp(), s.weight) for s in status.step_starts]
    full = evaluate(with_weights(whole, timeline), judge_config_of(objects))
    assert status.analysis is not None
    assert status.analysis.canary.n == full.n_canary
    assert status.analysis.reason == full.reason


def test_a_restarted_operator_continues_from_status_without_rereading() -> None:
    # Given a rollout judged for 20 intervals, then a new operator process (fresh deps) on its status
    metrics = RecordingMetrics()
    deps, objects = start({}, metrics)
    run_ticks(deps, objects, 20)
    before = ModelRolloutStatus.model_validate(objects.body["status"]).judge_state
    assert before is not None
    fresh = WiredDeps(objects, metrics)
    fresh.clock = deps.clock
    n_reads = len(metrics.loss_reads)
    # When it ticks once
    after = run_ticks(fresh, objects, 1).judge_state
    # Then it read only from where the state ended, and continued the same fold
    assert metrics.loss_reads[n_reads].start == before.through_ms / 1000
    assert after is not None
    assert after.looks == before.looks + 1


def test_finished_rollouts_read_nothing_from_prometheus() -> None:
    # Given a rollout that rolled back (the catastrophic guard)
    metrics = RecordingMetrics(
        baseline=ArmStats(2000, 800.0, 2000 * 0.41, tail=0), canary=ArmStats(500, 200.0, 500 * 0.41, tail=100)
    )
    deps, objects = start({"canary.trainingRun": "r2"}, metrics)
    metrics.run = _healthy_run(1.0, 1.0)
    over = merged(
        {"canary.trainingRun": "r2", "analysis.gradientHealth": {"warmupSteps": 0, "windowSteps": 100}}
    )
    objects.body["spec"] = over
    assert run_ticks(deps, objects, 10).phase.value == "RolledBack"
    reads = len(metrics.loss_reads) + len(metrics.training_reads)
    # When it keeps ticking
    run_ticks(deps, objects, 5)
    # Then no further loss or training read is made
    assert len(metrics.loss_reads) + len(metrics.training_reads) == reads


def judge_config_of(objects: FakeObjects) -> Any:
    from lossgate.adapters.spec_refs import judge_config
    from lossgate.model import ModelRolloutSpec

    return judge_config(ModelRolloutSpec.model_validate(objects.body["spec"]))


def test_a_finished_training_run_is_read_twice_then_never_again() -> None:
    # Given a gated rollout whose training run no longer advances
    metrics = RecordingMetrics(run=_healthy_run(1.0, 1.0))
    gate = {"warmupSteps": 0, "windowSteps": 100}
    deps, objects = start({"canary.trainingRun": "r2", "analysis.gradientHealth": gate}, metrics)
    # When the rollout runs 30 intervals (the verdict is refreshed every 5)
    status = run_ticks(deps, objects, 30)
    # Then the run was read at the start and once more, found finished, and not read again
    assert status.phase.value == "Progressing"
    assert len(metrics.training_reads) == 2
    assert status.training_health is not None
    assert status.training_health.finished
    assert status.training_health.last_step == 299.0


def test_an_abort_reads_nothing_from_prometheus_and_rolls_back() -> None:
    # Given a progressing rollout whose Prometheus now hangs on every read
    metrics = RecordingMetrics()
    deps, objects = start({}, metrics)
    assert run_ticks(deps, objects, 3).phase.value == "Progressing"
    reads = len(metrics.loss_reads)

    def hung(*_: Any) -> Any:
        raise AssertionError("an abort must not wait for Prometheus")

    metrics.loss_intervals = hung  # type: ignore[method-assign]
    # When someone annotates it with lossgate.io/abort
    objects.body["metadata"]["annotations"] = {"lossgate.io/abort": ""}
    status = run_ticks(deps, objects, 1)
    # Then it rolled back to 0% without a single loss read, and kept the evidence it had
    assert status.phase.value == "RolledBack"
    assert status.canary_weight == 0
    assert len(metrics.loss_reads) == reads
    assert status.analysis is not None
