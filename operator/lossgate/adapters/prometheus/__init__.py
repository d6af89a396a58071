"""Prometheus as the operator's MetricsSource.

    metrics = PrometheusMetrics(PrometheusConfig("http://prometheus.monitoring:9090", bearer_token=token))
    intervals = await asyncio.to_thread(metrics.loss_intervals, ref, start, end, 30.0)
    if isinstance(intervals, Problem): ...       # Unavailable / NoData / BadQuery / Partial

Synchronous (blocking HTTP): call it off the event loop. Thread-safe. Never raises across the port.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lossgate.adapters.prometheus.batch import LossRequest, read_batch
from lossgate.adapters.prometheus.calibration import read_calibration
from lossgate.adapters.prometheus.client import PromClient, PrometheusConfig, QueryFailed
from lossgate.adapters.prometheus.guardrails import GuardrailReader
from lossgate.adapters.prometheus.labels import read_label_evidence
from lossgate.adapters.prometheus.loss import LossReader
from lossgate.adapters.prometheus.paired import read_paired
from lossgate.adapters.prometheus.promql import TemplateError, escape_label_value, quote
from lossgate.adapters.prometheus.tokens import TokenReader
from lossgate.adapters.prometheus.training import TrainingReader
from lossgate.core.calibration import CalibrationInterval
from lossgate.core.evidence import IntervalStats, Problem, TrainingRun
from lossgate.core.guardrail import CountInterval
from lossgate.core.label_checks import LabelEvidence
from lossgate.core.paired import PairedStats
from lossgate.core.token_fold import TokenInterval
from lossgate.ports import (
    CalibrationSeriesRef,
    GuardrailSeriesRef,
    LossSeriesRef,
    MetricsErrorKind,
    TokenSeriesRef,
)

__all__ = [
    "LossRequest",
    "PromClient",
    "PrometheusConfig",
    "PrometheusMetrics",
    "TemplateError",
    "escape_label_value",
    "quote",
]


class PrometheusMetrics:
    """Implements lossgate.ports.MetricsSource against one Prometheus server."""

    def __init__(self, config: PrometheusConfig, client: PromClient | None = None) -> None:
        self.config = config
        self.client = client or PromClient(config)
        self._loss = LossReader(self.client, config)
        self._training = TrainingReader(self.client)
        self._guardrails = GuardrailReader(self._loss)
        self._tokens = TokenReader(self._loss)

    def loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[IntervalStats] | Problem:
        """Per aligned interval [start + k*interval, start + (k+1)*interval) ending at or before `end`:
        each arm's (n, sum, sumsq, tail) of per-request loss. [] while no interval has closed."""
        try:
            return self._loss.read(ref, start, end, interval_s)
        except QueryFailed as failed:
            return failed.problem
        except Exception as err:
            return _internal(err)

    def paired_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[PairedStats] | Problem:
        """Per aligned interval: the joiner's paired counters of the canary against the baseline on
        the same requests (n, sum of d, sum of d^2, the baseline's loss sum). [] while none closed."""
        try:
            return read_paired(self._loss, ref, start, end, interval_s)
        except QueryFailed as failed:
            return failed.problem
        except Exception as err:
            return _internal(err)

    def loss_intervals_batch(self, requests: Sequence[LossRequest]) -> list[list[IntervalStats] | Problem]:
        """loss_intervals for many rollouts at once: one query per series kind for all of them where
        their series allow (batch.py), each result exactly what its own read would give."""
        try:
            return read_batch(self._loss, requests)
        except Exception as err:
            return [_internal(err)] * len(requests)

    def guardrail_intervals(
        self, ref: GuardrailSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CountInterval] | Problem:
        """Per aligned interval, each arm's (requests, outcome sum) for one guardrail (guardrails.py)."""
        try:
            return self._guardrails.read(ref, start, end, interval_s)
        except QueryFailed as failed:
            return failed.problem
        except Exception as err:
            return _internal(err)

    def calibration_intervals(
        self, ref: CalibrationSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CalibrationInterval] | Problem:
        """Per aligned interval, both arms' reliability counters per confidence bin (calibration.py)."""
        try:
            return read_calibration(self._loss, ref, start, end, interval_s)
        except QueryFailed as failed:
            return failed.problem
        except Exception as err:
            return _internal(err)

    def token_intervals(
        self, ref: TokenSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[TokenInterval] | Problem:
        """Per aligned interval, each arm's six token counters (tokens.py)."""
        try:
            return self._tokens.read(ref, start, end, interval_s)
        except QueryFailed as failed:
            return failed.problem
        except Exception as err:
            return _internal(err)

    def class_loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> dict[str, list[IntervalStats]] | Problem:
        """loss_intervals per value of the `class` label (the per-class judge's evidence)."""
        try:
            return self._guardrails.read_classes(ref, start, end, interval_s)
        except QueryFailed as failed:
            return failed.problem
        except Exception as err:
            return _internal(err)

    def training_run(
        self, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
    ) -> TrainingRun | Problem:
        """The run's per-rank training series over [start, end] sampled every step_s, and the latest
        validation loss of the run (and of the baseline run, when given)."""
        try:
            return self._training.read(run, baseline_run, start, end, step_s)
        except QueryFailed as failed:
            return failed.problem
        except Exception as err:
            return _internal(err)

    def label_evidence(self, ref: LossSeriesRef, start: datetime, end: datetime) -> LabelEvidence | Problem:
        """Label coverage per arm and the p90 label delay over [start, end], from the label joiner's
        series (adapters.prometheus.labels; docs/joiner.md)."""
        try:
            return read_label_evidence(self.client, ref, start, end)
        except Exception as err:
            return _internal(err)

    def close(self) -> None:
        self.client.close()


def _internal(err: Exception) -> Problem:
    return Problem(
        MetricsErrorKind.UNAVAILABLE.value,
        f"internal error in the Prometheus adapter ({type(err).__name__}: {err}); please report it",
        {"reason": "InternalError", "exception": type(err).__name__},
    )
