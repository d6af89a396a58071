"""Whole ticks with spec.analysis.calibration, against a recording fake of Prometheus: every field
reaches the code that uses it (the real-server read is in tests/adapters/test_prom_calibration.py).

Each field is set to a value that changes the outcome, and the test shows the change: `gate` and
`margin` decide a rollback, `metric` is the series read, the gate takes a share of alphaRollback, and
without a gate the calibration is only reported (status.calibration, never a check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from lossgate.adapters.spec_refs import guardrail_checks, judge_config
from lossgate.conventions import CALIBRATION_BINS
from lossgate.core.calibration import Bins, CalibrationInterval
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.core.guardrail import CountInterval, Counts
from lossgate.model import ModelRolloutSpec
from lossgate.model.calibration import BRIER_CHECK
from lossgate.ports import CalibrationSeriesRef, GuardrailSeriesRef, LossSeriesRef
from tests.unit.test_tick_wiring import RecordingMetrics, merged, run_ticks, start


def arm(n: float, b: int, confidence: float, accuracy: float, brier: float) -> Bins:
    """n predictions, all in confidence bin b, with the given mean confidence, accuracy and Brier."""

    def one(x: float) -> tuple[float, ...]:
        return tuple(x if i == b else 0.0 for i in range(CALIBRATION_BINS))

    return Bins(one(n), one(n * confidence), one(n * accuracy), one(n * brier))


BASELINE = arm(2000, 12, 0.83, 0.83, 0.20)  # calibrated
CANARY_SAME = arm(500, 12, 0.83, 0.83, 0.20)
CANARY_WORSE = arm(500, 13, 0.90, 0.75, 0.30)  # overconfident, Brier +0.1


@dataclass
class CalibratedMetrics(RecordingMetrics):
    """RecordingMetrics plus the reliability counters: every interval the same bins per arm."""

    cal: tuple[Bins, Bins] = (BASELINE, CANARY_SAME)
    calibration_reads: list[CalibrationSeriesRef] = field(default_factory=list)

    def calibration_intervals(
        self, ref: CalibrationSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CalibrationInterval] | Problem:
        self.calibration_reads.append(ref)
        s, e = start.timestamp(), end.timestamp()
        k = math.floor((e - s) / interval_s + 1e-9)
        return [
            CalibrationInterval(s + i * interval_s, s + (i + 1) * interval_s, *self.cal) for i in range(k)
        ]


def _run(calibration: dict[str, Any], metrics: CalibratedMetrics, ticks: int = 30, **over: Any) -> Any:
    deps, objects = start({"analysis.calibration": calibration, **over}, metrics)
    return run_ticks(deps, objects, ticks)


def test_a_brier_regression_rolls_back_naming_the_check() -> None:
    # Given a canary whose mean Brier score is 0.30 against the baseline's 0.20, margin 0.02
    metrics = CalibratedMetrics(cal=(BASELINE, CANARY_WORSE))
    status = _run({"gate": "Brier", "margin": 0.02}, metrics)
    # Then the Brier gate rolls the rollout back, named in the message and the condition
    assert status.phase.value == "RolledBack"
    assert f"check {BRIER_CHECK}" in status.message
    assert "CheckRegression" in {c.reason for c in status.conditions}
    (check,) = status.checks
    assert (check.name, check.kind, check.verdict) == (BRIER_CHECK, "calibration", "Regression")
    assert check.mean_canary is not None
    assert math.isclose(check.mean_canary, 0.30)
    assert check.cs_low is not None
    assert check.cs_low > 0.02
    # And status.calibration reports both arms: the canary overconfident by 0.15 in its one bin
    cal = status.calibration
    assert cal is not None
    assert cal.bins == CALIBRATION_BINS
    assert cal.baseline.ece is not None
    assert math.isclose(cal.baseline.ece, 0.0, abs_tol=1e-12)
    assert cal.canary.ece is not None
    assert cal.canary.mce is not None
    assert math.isclose(cal.canary.ece, 0.15, rel_tol=1e-9)
    assert math.isclose(cal.canary.mce, 0.15, rel_tol=1e-9)
    assert cal.canary.brier is not None
    assert math.isclose(cal.canary.brier, 0.30, rel_tol=1e-9)
    assert cal.canary.bins[13].count == cal.canary.n


def test_the_margin_reaches_the_test() -> None:
    # Given the same +0.1 Brier canary under a wide and a narrow margin
    outcomes = {}
    for margin in (0.5, 0.02):
        metrics = CalibratedMetrics(cal=(BASELINE, CANARY_WORSE))
        outcomes[margin] = _run({"gate": "Brier", "margin": margin}, metrics).phase.value
    # Then only the margin the canary exceeds rolls back
    assert outcomes == {0.5: "Progressing", 0.02: "RolledBack"}


def test_without_a_gate_calibration_is_reported_and_never_decides() -> None:
    # Given the worse-calibrated canary and spec.analysis.calibration without a gate
    metrics = CalibratedMetrics(cal=(BASELINE, CANARY_WORSE))
    status = _run({}, metrics)
    # Then nothing rolls back, no check is added, and the numbers are in status.calibration
    assert status.phase.value == "Progressing"
    assert status.checks == []
    assert status.calibration is not None
    assert status.calibration.canary.n == 500 * status.calibration.baseline.n / 2000
    assert status.calibration.canary.n > 0


def test_the_metric_reaches_the_read_and_no_calibration_reads_nothing() -> None:
    # Given a custom metric name
    metrics = CalibratedMetrics()
    _run({"metric": "my_calibration"}, metrics, ticks=4)
    # Then every calibration read asked for it, for this rollout's model and versions
    assert metrics.calibration_reads
    assert {r.metric for r in metrics.calibration_reads} == {"my_calibration"}
    spec = ModelRolloutSpec.model_validate(merged({}))
    assert {(r.model, r.baseline_version, r.canary_version) for r in metrics.calibration_reads} == {
        (spec.model, spec.baseline.version, spec.canary.version)
    }
    # And a rollout without spec.analysis.calibration reads none and reports none
    plain = CalibratedMetrics()
    deps, objects = start({}, plain)
    status = run_ticks(deps, objects, 4)
    assert plain.calibration_reads == []
    assert status.calibration is None


def test_the_gate_takes_a_share_of_alpha_rollback() -> None:
    # Given one guardrail and the Brier gate
    over = {
        "analysis.guardrails": [{"name": "errors", "errorRate": {}, "margin": 0.01}],
        "analysis.calibration": {"gate": "Brier", "margin": 0.01},
    }
    spec = ModelRolloutSpec.model_validate(merged(over))
    # Then the pooled judge, the guardrail and the gate get alphaRollback / 3 each, the gate on [0, 2]
    assert spec.analysis.family_checks == 3
    assert judge_config(spec).alpha_rollback == 0.01 / 3
    checks = {g.config.name: g for g in guardrail_checks(spec)}
    assert set(checks) == {"errors", BRIER_CHECK}
    gate = checks[BRIER_CHECK]
    assert gate.kind == "calibration"
    assert (gate.config.alpha_rollback, gate.config.null.bound, gate.config.null.delta) == (
        0.01 / 3,
        2.0,
        0.01,
    )
    # And alphaPromote reaches it unsplit (promotion is an intersection-union test)
    assert gate.config.alpha_promote == spec.analysis.loss.alpha_promote


def test_require_non_inferiority_waits_for_the_gate() -> None:
    # Given an equal canary, RequireNonInferiority, a loss margin the pooled judge clears quickly, and a
    # Brier margin too tiny to show non-inferiority at these counts versus a generous one
    over = {
        "analysis.loss.promotionPolicy": "RequireNonInferiority",
        "analysis.loss.margin": 0.5,
        "analysis.loss.minSamplesBeforePromotion": 0,
        "stepDefaults": {"minSamples": 1000, "minDuration": "0s"},
    }
    outcomes, messages = {}, {}
    for margin in (1e-4, 0.5):
        status = _run({"gate": "Brier", "margin": margin}, CalibratedMetrics(), ticks=60, **over)
        outcomes[margin], messages[margin] = status.phase.value, status.message
        assert BRIER_CHECK in {c.name for c in status.checks}
    # Then only the gate that shows "not worse" lets the rollout promote; the other waits for it
    assert outcomes == {1e-4: "Progressing", 0.5: "Promoted"}
    assert BRIER_CHECK in messages[1e-4]


def test_bad_calibration_specs_name_the_field_and_the_fix() -> None:
    # Given a gate without a margin, a margin without a gate, a margin outside the score's range and
    # a gate that does not exist
    for body, words in (
        ({"gate": "Brier"}, ("analysis.calibration", "margin is not set; fix: set gate: Brier")),
        ({"margin": 0.01}, ("analysis.calibration", "gate is not set; fix")),
        ({"gate": "Brier", "margin": 2.5}, ("analysis.calibration.margin", "less than 2")),
        ({"gate": "ECE", "margin": 0.01}, ("analysis.calibration.gate", "'Brier'")),
    ):
        # When the spec is validated; Then it is refused, saying where and what to do
        with pytest.raises(ValueError, match="validation error") as err:
            ModelRolloutSpec.model_validate(merged({"analysis.calibration": body}))
        for w in words:
            assert w in str(err.value), (body, str(err.value))


@dataclass
class NoCalibrationSeries(CalibratedMetrics):
    """Servers that do not export the reliability counters (an older lossgate), and whose error rate
    is 6% on the canary against 2% on the baseline."""

    def calibration_intervals(
        self, ref: CalibrationSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CalibrationInterval] | Problem:
        self.calibration_reads.append(ref)
        return Problem("NoData", "no baseline series model_prediction_calibration_count_total")

    def guardrail_intervals(
        self, ref: GuardrailSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CountInterval] | Problem:
        s, e = start.timestamp(), end.timestamp()
        k = math.floor((e - s) / interval_s + 1e-9)
        b, c = Counts(2000, 40.0), Counts(500, 30.0)
        return [CountInterval(s + i * interval_s, s + (i + 1) * interval_s, b, c) for i in range(k)]

    def class_loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> dict[str, list[IntervalStats]] | Problem:
        return {}


def test_missing_counters_hold_only_a_gated_rollout() -> None:
    # Given model servers without reliability counters and an error-rate guardrail that regresses
    over = {"analysis.guardrails": [{"name": "errors", "errorRate": {}, "margin": 0.01}]}
    # When calibration is only reported: the other checks go on (the guardrail rolls back) and
    # status.calibration counts nothing
    reported = _run({}, NoCalibrationSeries(), ticks=20, **over)
    assert reported.phase.value == "RolledBack"
    assert reported.calibration is not None
    assert reported.calibration.baseline.n == 0
    # And with the gate, the missing evidence holds the checks like a guardrail's missing series,
    # named in the MetricsAvailable condition
    gated = _run({"gate": "Brier", "margin": 0.01}, NoCalibrationSeries(), ticks=20, **over)
    assert gated.phase.value == "Progressing"
    available = next(c for c in gated.conditions if c.type == "MetricsAvailable")
    assert available.status == "False"
    assert "model_prediction_calibration_count_total" in available.message
