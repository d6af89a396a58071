"""The operator's own Prometheus metrics, served on --metrics-port (default 8090)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from lossgate.core.decision import DecisionKind
from lossgate.reconcile.rollout_gauges import RolloutGauges

# Decision kinds exported at 0 from a rollout's first tick: alerts take their increase.
ALERTED_KINDS = (DecisionKind.ROLLBACK.value, DecisionKind.PROMOTE.value)
PHASES = ("Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Failed")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rollouts = Gauge(
            "lossgate_rollouts", "ModelRollouts by phase.", ["namespace", "phase"], registry=self.registry
        )
        self.decisions = Counter(
            "lossgate_decisions_total",
            "Decisions taken, by kind (advance, promote, rollback, hold, ...).",
            ["namespace", "name", "kind"],
            registry=self.registry,
        )
        self.analysis_seconds = Histogram(
            "lossgate_analysis_duration_seconds",
            "Wall time of one analysis tick (observe, decide, apply, status write).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.query_errors = Counter(
            "lossgate_prometheus_query_errors_total",
            "Prometheus reads that failed, by error kind (Unavailable, NoData, BadQuery, Partial).",
            ["namespace", "name", "kind"],
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "lossgate_canary_weight_percent",
            "Canary weight in force.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "lossgate_status_writes_total",
            "Status PATCHes by outcome: written, or skipped because nothing changed (docs/operator.md).",
            ["outcome"],
            registry=self.registry,
        )
        self.tick_failures = Counter(
            "lossgate_tick_failures_total",
            "Ticks that did not complete, by reason (StatusUnreadable, TickFailed, TickTimedOut).",
            ["namespace", "name", "reason"],
            registry=self.registry,
        )
        self.ticks = Gauge(
            "lossgate_ticks",
            "Analysis ticks running, and routine ticks waiting for a slot (LOSSGATE_MAX_CONCURRENT_TICKS).",
            ["state"],
            registry=self.registry,
        )
        self.malloc_trim_seconds = Histogram(
            "lossgate_malloc_trim_seconds",
            "Time to hand freed heap memory back to the kernel (LOSSGATE_MALLOC_TRIM_S).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5),
            registry=self.registry,
        )
        self.notifications = Counter(
            "lossgate_notifications_total",
            "Notification deliveries by sink and outcome (delivered, retried, failed, dropped).",
            ["sink", "outcome"],
            registry=self.registry,
        )
        self.rollout = RolloutGauges(self.registry)
        self._phase_of: dict[tuple[str, str], str] = {}

    def forget(self, namespace: str, name: str) -> None:
        """The rollout was deleted: drop its series."""
        self.set_phase(namespace, name, None)
        self.rollout.forget(namespace, name)
        with contextlib.suppress(KeyError):  # never set
            self.canary_weight.remove(namespace, name)
        for kind in DecisionKind:
            with contextlib.suppress(KeyError):
                self.decisions.remove(namespace, name, kind.value)

    def notified(self, sink: str, outcome: str) -> None:
        """One delivery outcome (called from the sinks' threads; prometheus_client is thread-safe)."""
        self.notifications.labels(sink, outcome).inc()

    def watch_ticks(self, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        """Read the tick gate's counts at each scrape."""
        self.ticks.labels("running").set_function(running)
        self.ticks.labels("waiting").set_function(waiting)

    def set_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Move one rollout between phase gauges (None: the rollout is gone)."""
        old = self._phase_of.pop((namespace, name), None)
        if old is not None:
            self.rollouts.labels(namespace, old).dec()
        if phase is not None:
            self._phase_of[(namespace, name)] = phase
            self.rollouts.labels(namespace, phase).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 (the pod's metrics port)
        start_http_server(port, addr=addr, registry=self.registry)
