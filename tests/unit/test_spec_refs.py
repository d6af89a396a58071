"""Spec fields reach the configs and references the adapters and the core take (spec_refs)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from lossgate.adapters.prometheus import PrometheusConfig
from lossgate.adapters.prometheus.loss import arm_queries
from lossgate.adapters.spec_refs import (
    canary_pods_ref,
    health_config,
    judge_config,
    loss_ref,
    tail_bucket_note,
    training_runs,
)
from lossgate.conventions import CATASTROPHIC_LE, CATASTROPHIC_LOSS_NATS, le_label
from lossgate.instrument import LossRecorder
from lossgate.instrument.buckets import LOSS_BUCKETS
from lossgate.model import ModelRolloutSpec
from lossgate.ports import CanaryPodsRef

BASE: dict[str, Any] = {
    "model": "fraud-scorer",
    "baseline": {"version": "v41", "service": "fraud-scorer-v41"},
    "canary": {"version": "v42", "service": "fraud-scorer-v42"},
    "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud-scorer"}},
    "steps": [{"weight": 10}, {"weight": 100}],
    "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "loss": {"margin": 0.01}},
}
QUERIES = {
    "count": 'c{version="{version}"}',
    "sum": 's{version="{version}"}',
    "sumSquares": 'q{version="{version}"}',
}


def spec(loss: dict[str, Any] | None = None, **over: Any) -> ModelRolloutSpec:
    raw = copy.deepcopy(BASE)
    raw["analysis"]["loss"].update(loss or {})
    for key, value in over.items():
        raw[key] = value if not isinstance(value, dict) else {**raw.get(key, {}), **value}
    return ModelRolloutSpec.model_validate(raw)


def test_catastrophic_threshold_selects_the_tail_bucket() -> None:
    # Given the default spec, and one with catastrophicThreshold 7 (a bucket of the exporter)
    default, custom = loss_ref("ml-prod", spec()), loss_ref("ml-prod", spec({"catastrophicThreshold": 7}))
    # Then the references carry the bound as Prometheus stores it
    assert default.tail_le == CATASTROPHIC_LE == "4.6"
    assert custom.tail_le == "7.0"
    # And the canary arm's default bucket selector asks for exactly that le
    for ref, le in ((default, "4.6"), (custom, "7.0")):
        bucket = arm_queries(ref, "canary", ref.canary_version, PrometheusConfig("http://p:9090")).queries[
            "bucket"
        ]
        assert bucket == f'model_prediction_loss_bucket{{model="fraud-scorer",version="v42",le="{le}"}}'


def test_the_exporter_writes_the_le_the_reader_selects() -> None:
    # Given a model server exporting an extra bucket at 6 nats, and a rollout with that threshold
    registry = CollectorRegistry()
    recorder = LossRecorder(registry, buckets=(*LOSS_BUCKETS[:16], 6.0, *LOSS_BUCKETS[16:]))
    recorder.record_prediction("r1", probabilities=math.exp(-5.0), model="m", version="v42")
    recorder.record_label("r1", label=1)  # loss 5 nats: below 6, above 4.6
    ref = loss_ref("ml-prod", spec({"catastrophicThreshold": 6}))
    # Then the exposition has a bucket whose le is exactly the reference's, counting that prediction
    text = generate_latest(registry).decode()
    assert ref.tail_le == "6.0"
    assert f'le="{ref.tail_le}",model="m",version="v42"}} 1.0' in text


@given(st.floats(min_value=1e-9, max_value=1e12, allow_nan=False) | st.sampled_from([*LOSS_BUCKETS, 10, 100]))
def test_le_label_formats_like_prometheus_client(bound: float) -> None:
    assert le_label(bound) == floatToGoString(bound)


def test_catastrophic_ratio_reaches_the_judge() -> None:
    assert judge_config(spec()).catastrophic_ratio == 2.0
    assert judge_config(spec({"catastrophicRatio": 3.5})).catastrophic_ratio == 3.5


def test_validation_margin_reaches_the_health_gate() -> None:
    assert health_config(spec()).validation_margin == 0.02
    got = spec(analysis={**BASE["analysis"], "gradientHealth": {"validationMargin": 0.07}})
    assert health_config(got).validation_margin == 0.07


def test_training_runs_of_both_arms() -> None:
    # Given only the canary's run, then both runs
    canary_only = spec(canary={"trainingRun": "train-v42"})
    both = spec(canary={"trainingRun": "train-v42"}, baseline={"trainingRun": "train-v41"})
    # Then (canary run, baseline run)
    assert training_runs(spec()) == (None, None)
    assert training_runs(canary_only) == ("train-v42", None)
    assert training_runs(both) == ("train-v42", "train-v41")


def test_baseline_training_run_is_a_bounded_optional_string() -> None:
    with pytest.raises(ValueError, match="trainingRun"):
        spec(baseline={"trainingRun": ""})
    with pytest.raises(ValueError, match="trainingRun"):
        spec(baseline={"trainingRun": "r" * 254})


def test_canary_pods_ref_needs_the_canary_deployment() -> None:
    assert canary_pods_ref("ml-prod", spec()) is None
    got = canary_pods_ref("ml-prod", spec(canary={"deployment": "fraud-scorer-v42"}))
    assert got == CanaryPodsRef("ml-prod", "fraud-scorer-v42", "v42")


def test_tail_bucket_note_warns_when_the_guard_would_read_no_tail() -> None:
    # Given a default bound, or a tail query: nothing to say
    assert tail_bucket_note(spec()) is None
    assert tail_bucket_note(spec({"catastrophicThreshold": 7})) is None
    assert tail_bucket_note(spec({"queries": {**QUERIES, "tail": 't{version="{version}"}'}})) is None
    # When the threshold is not a bucket of lossgate's exporter, Then the note names the field and fixes
    note = tail_bucket_note(spec({"catastrophicThreshold": 6}))
    assert note is not None
    assert note.startswith("spec.analysis.loss.catastrophicThreshold 6 is not a bucket")
    assert "LossRecorder(buckets=...)" in note
    # And user queries without a tail query are told to add one
    note = tail_bucket_note(spec({"queries": QUERIES}))
    assert note is not None
    assert "add queries.tail" in note


def test_catastrophic_constant_is_the_exporters_bucket() -> None:
    assert CATASTROPHIC_LOSS_NATS in LOSS_BUCKETS
    assert le_label(CATASTROPHIC_LOSS_NATS) == CATASTROPHIC_LE
