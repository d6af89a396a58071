"""The per-rollout gauges follow the status each tick wrote, and drop what a finished or deleted
rollout no longer has (prometheus_client's real registry)."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry

from lossgate.model import AnalysisStatus, ArmStatus, Phase, TrainingHealthStatus
from lossgate.reconcile.rollout_gauges import RolloutGauges
from tests.unit.test_machine_rules import T0, at_step, make_spec, terminal

KEY = {"namespace": "ns", "name": "fraud", "model": "fraud-scorer"}


def _value(reg: CollectorRegistry, name: str, **extra: str) -> float | None:
    return reg.get_sample_value(name, KEY | extra)


def _series(reg: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [s.labels for m in reg.collect() for s in m.samples if s.name == name]


def test_a_progressing_rollout_exports_the_judges_numbers_and_its_step() -> None:
    # Given a rollout on step 2 of 4 for 10 minutes, with the judge's numbers, metrics unavailable
    # since T0 - 1 min, and a failing training run
    reg = CollectorRegistry()
    gauges = RolloutGauges(reg)
    spec = make_spec(model="fraud-scorer", stepDefaults={"maxDuration": "2h"})
    analysis = AnalysisStatus(
        verdict="Undecided", baseline=ArmStatus(n=50_000, mean=0.41), canary=ArmStatus(n=6_000, mean=0.412),
        delta=0.002, cs_low=-0.004, cs_high=0.01, margin=0.01, p_regression=0.4, p_not_worse=0.2,
        samples_needed=12_000,
    )  # fmt: skip
    status = at_step(
        spec, 1, analysis=analysis, metrics_unavailable_since=T0 - timedelta(minutes=1),
        training_health=TrainingHealthStatus(verdict="Fail"),
    )  # fmt: skip
    # When the tick's status is recorded
    gauges.record("ns", "fraud", spec, status, T0)
    # Then every number is there, labelled by namespace, name and model
    assert _value(reg, "lossgate_judge_delta_nats") == 0.002
    assert _value(reg, "lossgate_judge_cs_nats", bound="low") == -0.004
    assert _value(reg, "lossgate_judge_cs_nats", bound="high") == 0.01
    assert _value(reg, "lossgate_judge_margin_nats") == 0.01
    assert _value(reg, "lossgate_judge_p_value", test="regression") == 0.4
    assert _value(reg, "lossgate_judge_p_value", test="not_worse") == 0.2
    assert _value(reg, "lossgate_judge_samples", arm="baseline") == 50_000
    assert _value(reg, "lossgate_judge_samples", arm="canary") == 6_000
    assert _value(reg, "lossgate_judge_samples_needed") == 12_000
    assert _value(reg, "lossgate_step_index") == 1
    assert _value(reg, "lossgate_step_seconds") == 600
    assert _value(reg, "lossgate_step_max_duration_seconds") == 7200
    assert (
        _value(reg, "lossgate_metrics_unavailable_since_timestamp_seconds")
        == (T0 - timedelta(minutes=1)).timestamp()
    )
    assert _value(reg, "lossgate_training_health", verdict="Fail") == 1
    assert _value(reg, "lossgate_training_health", verdict="Pass") == 0
    assert _value(reg, "lossgate_last_analysis_timestamp_seconds") == T0.timestamp()
    assert _value(reg, "lossgate_analysis_interval_seconds") == spec.analysis.interval.total_seconds()

    # When metrics come back and the rollout then finishes
    gauges.record("ns", "fraud", spec, status.model_copy(update={"metrics_unavailable_since": None}), T0)
    assert _value(reg, "lossgate_metrics_unavailable_since_timestamp_seconds") is None
    later = T0 + timedelta(minutes=5)
    gauges.record("ns", "fraud", spec, terminal(spec, Phase.PROMOTED, 100, analysis=analysis), later)
    # Then only the time of its last tick stays
    kept = {m.name for m in reg.collect() for s in m.samples if s.labels.get("name") == "fraud"}
    assert kept == {"lossgate_last_analysis_timestamp_seconds"}
    assert _value(reg, "lossgate_last_analysis_timestamp_seconds") == later.timestamp()

    # When it is deleted
    gauges.forget("ns", "fraud")
    # Then nothing of it is left
    assert not _series(reg, "lossgate_last_analysis_timestamp_seconds")


def test_a_renamed_model_drops_the_series_of_the_old_label() -> None:
    # Given a rollout recorded under model a
    reg = CollectorRegistry()
    gauges = RolloutGauges(reg)
    spec_a = make_spec(model="a")
    gauges.record("ns", "fraud", spec_a, at_step(spec_a, 0), T0)
    # When its spec.model changes to b
    spec_b = make_spec(model="b")
    gauges.record("ns", "fraud", spec_b, at_step(spec_b, 0), T0)
    # Then only b's series are exported
    assert {s["model"] for s in _series(reg, "lossgate_step_index")} == {"b"}
    assert {s["model"] for s in _series(reg, "lossgate_last_analysis_timestamp_seconds")} == {"b"}


def test_one_phase_series_per_rollout_in_progress() -> None:
    # Given a progressing rollout
    reg = CollectorRegistry()
    gauges = RolloutGauges(reg)
    spec = make_spec(model="fraud-scorer")
    gauges.record("ns", "fraud", spec, at_step(spec, 0), T0)
    assert _series(reg, "lossgate_rollout_phase") == [KEY | {"phase": "Progressing"}]
    # When it is paused, then only the new phase has a series
    gauges.record("ns", "fraud", spec, at_step(spec, 0, phase=Phase.PAUSED), T0)
    assert _series(reg, "lossgate_rollout_phase") == [KEY | {"phase": "Paused"}]
    # When it finishes, then it has none (the on-call table lists rollouts in progress)
    gauges.record("ns", "fraud", spec, terminal(spec, Phase.PROMOTED, 100), T0)
    assert _series(reg, "lossgate_rollout_phase") == []
