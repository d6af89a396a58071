"""The operator's own Prometheus metrics, served on --metrics-port (default 8090)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from lossgate.core.decision import Decision, DecisionKind
from lossgate.core.evidence import Problem
from lossgate.reconcile.rollout_gauges import RolloutGauges

# Decision kinds exported at 0 from a rollout's first tick: alerts take their increase.
ALERTED_KINDS = (DecisionKind.ROLLBACK.value, DecisionKind.PROMOTE.value)
OUTCOMES = (DecisionKind.PROMOTE.value, DecisionKind.ROLLBACK.value)
PHASES = ("Pending", "Progressing", "Paused", "Watching", "Promoted", "RolledBack", "Failed")


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
        self.rollout_seconds = Histogram(
            "lossgate_rollout_duration_seconds",
            "From a rollout's start to its promotion or rollback, by outcome (Promote, Rollback).",
            ["outcome"],
            buckets=(300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # at 0 from the start: the first rollout's duration is an increase
            self.rollout_seconds.labels(outcome)
        self.rollback_delta = Histogram(
            "lossgate_rollback_delta_nats",
            "The judge's mean-loss difference (canary minus baseline) at each rollback: the loss avoided.",
            buckets=(0, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
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

    def record_tick(
        self,
        ns: str,
        name: str,
        decision: Decision,
        metrics_problem: Problem | None,
        seconds: float,
        now: datetime,
    ) -> None:
        """The counters and gauges of one completed tick (the judge's numbers: rollout.record)."""
        self.analysis_seconds.observe(seconds)
        self.decisions.labels(ns, name, decision.kind.value).inc()
        for kind in ALERTED_KINDS:  # exported at 0 first, so the first one is an increase alerts can see
            self.decisions.labels(ns, name, kind)
        st = decision.status
        self.set_phase(ns, name, st.phase.value)
        self.canary_weight.labels(ns, name).set(st.canary_weight)
        if metrics_problem is not None:
            self.query_errors.labels(ns, name, metrics_problem.kind).inc()
        if decision.kind.value in OUTCOMES and st.started_at is not None:
            self.rollout_seconds.labels(decision.kind.value).observe((now - st.started_at).total_seconds())
        if (
            decision.kind is DecisionKind.ROLLBACK
            and st.analysis is not None
            and st.analysis.delta is not None
        ):
            self.rollback_delta.observe(st.analysis.delta)

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
