"""Per-rollout gauges: the judge's numbers, the step, and what holds or gates it (docs/metrics.md).

Labels are namespace, name and model only (bounded by the rollouts in the cluster; verdicts and arms
are from small fixed sets). A finished rollout drops its series except the last decision's time, so
10,000 finished objects do not keep 10,000 sets of stale judge numbers; a deleted one drops them all.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge

from lossgate.model import ModelRolloutSpec, ModelRolloutStatus

LABELS = ("namespace", "name", "model")
VERDICTS = ("Pass", "Warn", "Fail", "Unknown")
_P_TESTS = ("regression", "not_worse")


class RolloutGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, [*LABELS, *extra], registry=registry)

        self.delta = gauge("lossgate_judge_delta_nats", "Estimated canary minus baseline mean loss (nats).")
        self.cs = gauge(
            "lossgate_judge_cs_nats", "Confidence-sequence bound on the difference (nats).", ("bound",)
        )
        self.margin = gauge("lossgate_judge_margin_nats", "Margin the verdict is taken against (nats).")
        self.p_value = gauge(
            "lossgate_judge_p_value", "Always-valid p-value of each one-sided test.", ("test",)
        )
        self.samples = gauge(
            "lossgate_judge_samples", "Labelled predictions the judge used, per arm.", ("arm",)
        )
        self.needed = gauge("lossgate_judge_samples_needed", "More canary samples the judge expects to need.")
        self.step = gauge("lossgate_step_index", "0-based step of spec.steps the rollout is on.")
        self.in_step = gauge("lossgate_step_seconds", "Time spent in the current step, pauses excluded.")
        self.max_in_step = gauge("lossgate_step_max_duration_seconds", "maxDuration of the current step.")
        self.unavailable = gauge(
            "lossgate_metrics_unavailable_since_timestamp_seconds",
            "Unix time since which the loss metrics have been unavailable (absent while available).",
        )
        self.training = gauge(
            "lossgate_training_health",
            "1 for the canary's training-health verdict, 0 for the others.",
            ("verdict",),
        )
        self.analysed = gauge(
            "lossgate_last_analysis_timestamp_seconds", "Unix time of the rollout's last completed tick."
        )
        self.interval = gauge("lossgate_analysis_interval_seconds", "spec.analysis.interval.")
        self.phase = gauge("lossgate_rollout_phase", "1 for the phase of a rollout in progress.", ("phase",))
        self._seen: dict[tuple[str, str], str] = {}
        self._phase: dict[tuple[str, str, str], str] = {}

    def record(
        self, namespace: str, name: str, spec: ModelRolloutSpec, st: ModelRolloutStatus, now: datetime
    ) -> None:
        """After a completed tick: the gauges of the status it wrote."""
        model = spec.model
        if self._seen.get((namespace, name), model) != model:
            self.forget(namespace, name)
        self._seen[(namespace, name)] = model
        key = (namespace, name, model)
        self.analysed.labels(*key).set(now.timestamp())
        self._set_phase(key, None if st.terminal else st.phase.value)
        if st.terminal:
            self._drop(key, keep_last_analysis=True)
            return
        self.interval.labels(*key).set(spec.analysis.interval.total_seconds())
        self.step.labels(*key).set(st.step_index)
        self.in_step.labels(*key).set(st.active_in_step(now).total_seconds())
        quota = spec.quota(min(st.step_index, spec.last_step))
        _set_or_drop(
            self.max_in_step, key, quota.max_duration.total_seconds() if quota.max_duration else None
        )
        since = st.metrics_unavailable_since
        _set_or_drop(self.unavailable, key, since.timestamp() if since else None)
        a = st.analysis
        if a is not None:
            _set_or_drop(self.delta, key, a.delta)
            _set_or_drop(self.cs, (*key, "low"), a.cs_low)
            _set_or_drop(self.cs, (*key, "high"), a.cs_high)
            _set_or_drop(self.margin, key, a.margin)
            _set_or_drop(self.p_value, (*key, "regression"), a.p_regression)
            _set_or_drop(self.p_value, (*key, "not_worse"), a.p_not_worse)
            _set_or_drop(self.needed, key, a.samples_needed)
            self.samples.labels(*key, "baseline").set(a.baseline.n)
            self.samples.labels(*key, "canary").set(a.canary.n)
        health = st.training_health
        for verdict in VERDICTS:
            if health is None:
                _set_or_drop(self.training, (*key, verdict), None)
            else:
                self.training.labels(*key, verdict).set(float(health.verdict == verdict))

    def _set_phase(self, key: tuple[str, str, str], phase: str | None) -> None:
        """One series per rollout in progress, on its phase (the old phase's series removed)."""
        old = self._phase.pop(key, None)
        if old is not None and old != phase:
            _set_or_drop(self.phase, (*key, old), None)
        if phase is not None:
            self._phase[key] = phase
            self.phase.labels(*key, phase).set(1)

    def forget(self, namespace: str, name: str) -> None:
        """The rollout is gone: drop all its series."""
        model = self._seen.pop((namespace, name), None)
        if model is not None:
            self._drop((namespace, name, model), keep_last_analysis=False)

    def _drop(self, key: tuple[str, str, str], keep_last_analysis: bool) -> None:
        for g in (self.delta, self.margin, self.needed, self.step, self.in_step, self.max_in_step,
                  self.unavailable, self.interval):  # fmt: skip
            _set_or_drop(g, key, None)
        for bound in ("low", "high"):
            _set_or_drop(self.cs, (*key, bound), None)
        for test in _P_TESTS:
            _set_or_drop(self.p_value, (*key, test), None)
        for arm in ("baseline", "canary"):
            _set_or_drop(self.samples, (*key, arm), None)
        for verdict in VERDICTS:
            _set_or_drop(self.training, (*key, verdict), None)
        self._set_phase(key, None)
        if not keep_last_analysis:
            _set_or_drop(self.analysed, key, None)


def _set_or_drop(gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
    if value is None:
        with contextlib.suppress(KeyError):  # never set
            gauge.remove(*labels)
        return
    gauge.labels(*labels).set(float(value))
