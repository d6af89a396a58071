"""Small Protocols the reconciler depends on; adapters implement them.

Adapters return classified problems as data (`Problem`) instead of raising, so the
reconciler can turn each into a condition without guessing from exception types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from lossgate.conventions import (
    CALIBRATION_METRIC,
    CATASTROPHIC_LE,
    DEFAULT_LOSS_METRIC,
    DEFAULT_TOKEN_METRIC,
)
from lossgate.core.calibration import CalibrationInterval
from lossgate.core.evidence import IntervalStats, Problem, TrainingRun, Weights
from lossgate.core.guardrail import CountInterval
from lossgate.core.label_checks import LabelEvidence
from lossgate.core.notify import Envelope
from lossgate.core.paired import PairedStats
from lossgate.core.token_fold import TokenInterval


class MetricsErrorKind(StrEnum):
    UNAVAILABLE = "Unavailable"  # connection refused, 5xx, timeout: not a regression
    NO_DATA = "NoData"  # the query ran but matched no series
    BAD_QUERY = "BadQuery"  # 4xx: the template or label values are wrong (user error)
    PARTIAL = "Partial"  # one arm has data, the other none


class RouterErrorKind(StrEnum):
    NOT_FOUND = "RouteNotFound"  # the HTTPRoute / VirtualService / Deployment does not exist
    BACKEND_NOT_FOUND = "BackendNotFound"  # the route has no backend for the baseline service
    CRD_MISSING = "CRDNotInstalled"  # Gateway API or Istio is not installed in the cluster
    FORBIDDEN = "Forbidden"  # RBAC denies the operator
    CONFLICT = "Conflict"  # still conflicting after bounded retries
    UNAVAILABLE = "Unavailable"  # API server unreachable / 5xx
    INVALID = "Invalid"  # the reference itself is wrong (rule index out of range, ...)


@dataclass(frozen=True)
class LossSeriesRef:
    """Which serving metrics to read for one rollout (small reference, not the whole CR)."""

    namespace: str
    model: str
    baseline_version: str
    canary_version: str
    metric: str = DEFAULT_LOSS_METRIC
    # `le` of the bucket at the catastrophic threshold, formatted as Prometheus stores it ("4.6",
    # "10.0"; conventions.le_label): the default tail series is `_count - _bucket{le=tail_le}`.
    tail_le: str = CATASTROPHIC_LE
    # Optional user PromQL templates ({model}, {version} placeholders, values escaped).
    count_template: str | None = None
    sum_template: str | None = None
    sumsq_template: str | None = None
    tail_template: str | None = None


@dataclass(frozen=True)
class GuardrailSeriesRef:
    """Which counters one guardrail reads (spec.analysis.guardrails[]).

    mode "errors": `metric` is a request counter with a `code` label (errors: code=~"5.."), or the
    user's `bad_template`/`total_template`; "slower": `metric` is a histogram and the outcome is being
    slower than `threshold` seconds (the bucket with that `le`); "mean": its _sum over its _count.
    """

    name: str
    namespace: str
    model: str
    baseline_version: str
    canary_version: str
    mode: str
    metric: str
    threshold: float = 0.0
    bad_template: str | None = None
    total_template: str | None = None


@runtime_checkable
class GuardrailSource(Protocol):
    """Request counters of the guardrails, and the loss split by its `class` label."""

    def guardrail_intervals(
        self, ref: GuardrailSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CountInterval] | Problem: ...

    def class_loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> dict[str, list[IntervalStats]] | Problem: ...


class MetricsSource(Protocol):
    def loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[IntervalStats] | Problem: ...

    def training_run(
        self, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
    ) -> TrainingRun | Problem: ...


@runtime_checkable
class LabelSource(Protocol):
    """The label joiner's coverage and delay series (LOSSGATE_LABEL_CHECKS; docs/joiner.md)."""

    def label_evidence(
        self, ref: LossSeriesRef, start: datetime, end: datetime
    ) -> LabelEvidence | Problem: ...


@dataclass(frozen=True)
class CanaryPodsRef:
    """The canary Deployment whose Ready pods say which version they serve, and the version wanted."""

    namespace: str
    deployment: str
    version: str  # spec.canary.version


class VersionSource(Protocol):
    def canary_version(self) -> str | Problem | None:
        """The wanted version when every Ready pod serves it; another version a Ready pod reports
        when some do not; None when unknown (no Ready pod with a version label): never blocks."""
        ...


class TrafficRouter(Protocol):
    def get_weights(self) -> Weights | Problem: ...

    def set_weights(self, weights: Weights) -> Weights | Problem: ...


@runtime_checkable
class MirrorRouter(Protocol):
    """A router that can mirror the baseline's requests to the canary (Gateway API, Istio)."""

    def get_mirror(self) -> int | Problem: ...

    def set_mirror(self, percent: int) -> int | Problem: ...


@runtime_checkable
class PairedSource(Protocol):
    """The joiner's paired counters: both versions' losses on the same (mirrored) requests."""

    def paired_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[PairedStats] | Problem: ...


@dataclass(frozen=True)
class CalibrationSeriesRef:
    """Which reliability counters to read for one rollout (spec.analysis.calibration)."""

    namespace: str
    model: str
    baseline_version: str
    canary_version: str
    metric: str = CALIBRATION_METRIC


@runtime_checkable
class CalibrationSource(Protocol):
    """Both arms' reliability counters per confidence bin (docs/metrics.md, "Calibration")."""

    def calibration_intervals(
        self, ref: CalibrationSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CalibrationInterval] | Problem: ...


@dataclass(frozen=True)
class TokenSeriesRef:
    """A language model's token counters (spec.analysis.tokenLoss): <metric>_requests_total, ..."""

    namespace: str
    model: str
    baseline_version: str
    canary_version: str
    metric: str = DEFAULT_TOKEN_METRIC


@runtime_checkable
class TokenSource(Protocol):
    """Per interval and arm, the six token counters (lossgate.instrument.tokens)."""

    def token_intervals(
        self, ref: TokenSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[TokenInterval] | Problem: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Notifier(Protocol):
    def submit(self, envelope: Envelope) -> None:
        """Hand a notice over for delivery; returns at once, never raises (adapters/notify)."""
        ...
