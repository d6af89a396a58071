"""decide() with the label joiner's evidence (Observation.labels, LOSSGATE_LABEL_CHECKS): an
imbalanced label coverage holds the weight but never delays a rollback, and the LabelsTimely
condition says whether the step's minDuration covers the p90 label delay."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lossgate.core.decision import DecisionKind
from lossgate.core.label_checks import Coverage, LabelEvidence
from lossgate.core.machine import decide
from lossgate.core.verdicts import LossVerdict
from lossgate.model import Phase, Reason
from lossgate.reconcile.deps import OperatorConfig
from tests.unit.test_machine_rules import T0, at_step, loss, make_spec, obs

EVEN = LabelEvidence(Coverage(5000, 4000), Coverage(1000, 800), delay_p90_s=1800.0)
SKEWED = LabelEvidence(Coverage(5000, 4000), Coverage(1000, 550), delay_p90_s=1800.0)
SLOW = LabelEvidence(Coverage(5000, 4000), Coverage(1000, 800), delay_p90_s=2 * 86400.0)


def _conditions(d: object) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status.value, c.reason, c.message) for c in d.status.conditions}  # type: ignore[attr-defined]


def test_even_coverage_lets_the_step_advance() -> None:
    # Given a step whose quotas are met and labels cover both arms alike
    spec = make_spec(stepDefaults={"minSamples": 100, "minDuration": "1h"})
    d = decide(spec, at_step(spec, 0, since=timedelta(hours=2)), obs(labels=EVEN), T0)
    # Then it advances, and LabelsTimely is True (p90 30 min within the 1 h minDuration)
    assert d.kind is DecisionKind.ADVANCE
    status, reason, _ = _conditions(d)["LabelsTimely"]
    assert (status, reason) == ("True", Reason.LABEL_DELAY_WITHIN_STEP)


def test_imbalanced_coverage_holds_with_the_numbers() -> None:
    # Given the same step but 55% of the canary's predictions labelled against 80% of the baseline's
    spec = make_spec(stepDefaults={"minSamples": 100, "minDuration": "1h"})
    d = decide(spec, at_step(spec, 0, since=timedelta(hours=2)), obs(labels=SKEWED), T0)
    # Then the weight is held, the message naming both ratios
    assert d.kind is DecisionKind.HOLD
    assert d.reason == Reason.LABEL_COVERAGE_IMBALANCED
    assert "55% of the canary's 1000 predictions but 80% of the baseline's 5000" in d.status.message
    assert d.status.phase is Phase.PROGRESSING


def test_imbalance_never_delays_a_rollback() -> None:
    # Given a significant regression with enough samples, and imbalanced coverage
    spec = make_spec()
    o = obs(labels=SKEWED, loss=loss(LossVerdict.REGRESSION, n=6000, delta=0.05, cs_low=0.02, cs_high=0.08))
    d = decide(spec, at_step(spec, 1), o, T0)
    # Then it rolls back all the same
    assert d.kind is DecisionKind.ROLLBACK


def test_labels_timely_false_when_min_duration_is_shorter_than_p90_delay() -> None:
    # Given labels that take two days at p90 and a 1-hour step
    spec = make_spec(stepDefaults={"minSamples": 100000, "minDuration": "1h"})
    d = decide(spec, at_step(spec, 0, since=timedelta(minutes=5)), obs(labels=SLOW), T0)
    # Then the condition warns (and names the field to change); the step itself goes on
    status, reason, message = _conditions(d)["LabelsTimely"]
    assert (status, reason) == ("False", Reason.LABEL_DELAY_EXCEEDS_STEP)
    assert "minDuration (1.0h)" in message
    assert "steps[].minDuration" in message
    assert d.kind is DecisionKind.WAIT


def test_no_label_evidence_writes_no_condition() -> None:
    spec = make_spec(stepDefaults={"minSamples": 100000, "minDuration": "1h"})
    d = decide(spec, at_step(spec, 0), obs(), T0)
    assert "LabelsTimely" not in _conditions(d)


def test_label_checks_setting_is_off_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOSSGATE_LABEL_CHECKS", raising=False)
    assert OperatorConfig.from_env().label_checks is False
    monkeypatch.setenv("LOSSGATE_LABEL_CHECKS", "1")
    assert OperatorConfig.from_env().label_checks is True
