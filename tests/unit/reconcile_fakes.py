"""Fakes for the reconciler's ports: a ModelRollout's API calls, a router, Prometheus, a clock.

The fakes count calls, so tests can assert on the API traffic a tick makes (e.g. no status PATCH).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from lossgate.adapters.routers import RouteRef
from lossgate.core.evidence import ArmStats, IntervalStats, Problem, TrainingRun, Weights
from lossgate.ports import LossSeriesRef, MetricsErrorKind, MetricsSource, RouterErrorKind, TrafficRouter
from lossgate.reconcile.deps import Deps, OperatorConfig

T0 = datetime(2025, 1, 6, 12, 0, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "model": "m",
    "baseline": {"version": "v1", "service": "m-v1"},
    "canary": {"version": "v2", "service": "m-v2"},
    "trafficRouting": {"gatewayAPI": {"httpRoute": "m"}},
    "steps": [{"weight": 10}, {"weight": 100}],
    # Stay on step 1: far more samples than any test gives, no minimum duration (no clock in messages).
    "stepDefaults": {"minSamples": 1_000_000, "minDuration": "0s"},
    "analysis": {
        "interval": "30s",
        "prometheus": {"address": "http://prometheus.test:9090"},
        "loss": {"margin": 0.01},
    },
}


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@dataclass
class FakeObjects:
    """RolloutObjects in memory: the status PATCHes land in `body` (as the watch would deliver them)."""

    body: dict[str, Any] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    status_patches: list[dict[str, Any]] = field(default_factory=list)
    annotation_removals: list[list[str]] = field(default_factory=list)
    secret_reads: int = 0
    secret_error: Problem | None = None

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> Problem | None:
        self.status_patches.append(copy.deepcopy(status))
        merged = dict(self.body.get("status") or {})
        merged.update({k: v for k, v in status.items() if v is not None})
        for k in [k for k, v in status.items() if v is None]:
            merged.pop(k, None)
        self.body["status"] = merged
        return None

    def remove_annotations(self, namespace: str, name: str, keys: list[str]) -> Problem | None:
        self.annotation_removals.append(keys)
        annotations = self.body.get("metadata", {}).get("annotations") or {}
        for k in keys:
            annotations.pop(k, None)
        return None

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | Problem:
        self.secret_reads += 1
        if self.secret_error is not None:
            return self.secret_error
        if (namespace, name) not in self.secrets:
            return Problem(
                RouterErrorKind.NOT_FOUND.value,
                f"Secret {namespace}/{name} does not exist: create it or fix the reference in the spec",
            )
        return dict(self.secrets[(namespace, name)])

    def scale_deployment(self, namespace: str, name: str, replicas: int | None) -> Problem | None:
        return None


class FakeRouter:
    def __init__(self, canary: int = 0) -> None:
        self.canary = canary
        self.gets = self.sets = 0

    def get_weights(self) -> Weights | Problem:
        self.gets += 1
        return Weights(100 - self.canary, self.canary)

    def set_weights(self, weights: Weights) -> Weights | Problem:
        self.sets += 1
        self.canary = weights.canary
        return weights


class FakeMetrics:
    """Fixed loss intervals: a read returns those inside [start, end) (so a re-read is the same)."""

    def __init__(self, intervals: list[IntervalStats] | None = None) -> None:
        self.intervals = intervals or []
        self.reads = 0
        self.gate: threading.Event | None = None  # when set: reads block until it is set

    def loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[IntervalStats] | Problem:
        self.reads += 1
        if self.gate is not None:
            self.gate.wait(30)
        s, e = start.timestamp(), end.timestamp()
        return [iv for iv in self.intervals if iv.start >= s and iv.end <= e]

    def training_run(
        self, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
    ) -> TrainingRun | Problem:
        self.reads += 1
        return Problem(MetricsErrorKind.NO_DATA.value, "no training run in this fake")


def interval(start: datetime, seconds: float = 30, n: float = 200, mean: float = 0.4) -> IntervalStats:
    arm = ArmStats(n=n, sum=n * mean, sumsq=n * (mean * mean + 0.01))
    t = start.timestamp()
    return IntervalStats(start=t, end=t + seconds, baseline=arm, canary=arm)


class FakeDeps(Deps):
    """Deps with a fake router and Prometheus (the rest real: settings, clock, status policy)."""

    def __init__(
        self,
        objects: Any,
        router: TrafficRouter,
        metrics: MetricsSource | Problem,
        clock: FakeClock,
        settings: OperatorConfig | None = None,
        api_client: client.ApiClient | None = None,
    ) -> None:
        super().__init__(
            api_client=api_client or client.ApiClient(),
            settings=settings or OperatorConfig(metrics_port=0, scrape_lag=timedelta(0), tick_quantum_s=0),
            clock=clock,
        )
        self.objects = objects
        self._router, self._metrics = router, metrics

    def router(self, ref: RouteRef) -> TrafficRouter:
        return self._router

    async def metrics(self, namespace: str, source: Any) -> Any:
        return self._metrics


def rollout_body(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, generation: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "lossgate.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"namespace": "ml", "name": "m", "uid": "uid-1", "generation": generation},
        "spec": copy.deepcopy(spec or SPEC),
        "status": copy.deepcopy(status or {}),
    }


def counting(fn: Callable[..., Any], calls: list[str], label: str) -> Callable[..., Any]:
    """Wrap a method so each call appends `label` to `calls`."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(label)
        return fn(*args, **kwargs)

    return wrapped


async def until(cond: Callable[[], bool], within: float) -> float:
    """Poll `cond` every 10 ms; the seconds it took. Fails when it is not true `within` seconds."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < within, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


class Stopped:
    """kopf.DaemonStopped as the loop uses it: falsy until set, awaitable."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    def __bool__(self) -> bool:
        return self.flag.is_set()

    async def wait(self) -> None:
        await self.flag.wait()
