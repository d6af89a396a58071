"""The ModelRollout spec models: examples parse, defaults, cross-field rules, field-named errors."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from lossgate.adapters.spec_refs import judge_config
from lossgate.model import (
    DEFAULT_LOSS_METRIC,
    MaxDurationAction,
    ModelRollout,
    ModelRolloutSpec,
    PromotionPolicy,
    RouterKind,
    UnavailableAction,
    validation_messages,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BAD = sorted((ROOT / "tests/kube/bad_manifests").glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "model": "m",
    "baseline": {"version": "v1", "service": "m-v1"},
    "canary": {"version": "v2", "service": "m-v2"},
    "trafficRouting": {"gatewayAPI": {"httpRoute": "m"}},
    "steps": [{"weight": 10}, {"weight": 100}],
    "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "loss": {"margin": 0.01}},
}


def rollouts_in(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ModelRollout"]


def expected_field(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# field: "):
            return line.removeprefix("# field: ").strip()
    raise AssertionError(f"{path} has no '# field:' header")


def spec_with(**over: Any) -> dict[str, Any]:
    out = copy.deepcopy(MINIMAL)
    out.update(over)
    return out


def test_there_are_examples_for_every_router() -> None:
    kinds = {
        ModelRollout.model_validate(d).spec.traffic_routing.kind for p in EXAMPLES for d in rollouts_in(p)
    }
    assert kinds == set(RouterKind)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_parse_and_round_trip(path: Path) -> None:
    for doc in rollouts_in(path):
        mro = ModelRollout.model_validate(doc)
        assert mro.name
        assert mro.spec.steps[-1].weight == 100
        again = ModelRolloutSpec.model_validate(mro.spec.to_wire())
        assert again == mro.spec


def test_defaults_follow_statistics_md() -> None:
    spec = ModelRolloutSpec.model_validate(MINIMAL)
    loss = spec.analysis.loss
    assert (loss.alpha_rollback, loss.alpha_promote, loss.alpha_catastrophic) == (0.01, 0.05, 0.001)
    assert (loss.min_samples_before_rollback, loss.min_samples_before_promotion) == (1000, 5000)
    assert loss.promotion_policy is PromotionPolicy.NO_REGRESSION
    assert loss.effective_metric == DEFAULT_LOSS_METRIC
    assert loss.catastrophic_threshold == 4.6
    assert spec.analysis.interval == timedelta(seconds=30)
    assert spec.analysis.on_metrics_unavailable.action is UnavailableAction.ROLLBACK
    assert spec.analysis.on_metrics_unavailable.after == timedelta(minutes=10)
    assert spec.analysis.prometheus.timeout == timedelta(seconds=10)
    assert spec.step_defaults.on_max_duration is MaxDurationAction.ROLLBACK
    assert not spec.rollback.scale_down_canary
    assert not spec.paused
    gh = spec.analysis.gradient_health
    assert (
        gh.allow_non_finite,
        gh.grad_norm_spike_z,
        gh.max_spikes_per_1000_steps,
        gh.rank_divergence_z,
    ) == (
        False,
        6.0,
        3.0,
        3.0,
    )
    assert (gh.max_consecutive_skipped_steps, gh.loss_scale_drop_factor) == (10, 256.0)


def test_camel_case_on_the_wire_snake_case_in_python() -> None:
    spec = ModelRolloutSpec(**ModelRolloutSpec.model_validate(MINIMAL).model_dump())
    wire = spec.to_wire()
    assert wire["trafficRouting"] == {"gatewayAPI": {"httpRoute": "m", "ruleIndex": 0}}
    assert wire["analysis"]["onMetricsUnavailable"] == {"action": "Rollback", "after": "10m"}
    assert wire["stepDefaults"] == {"minSamples": 1000, "minDuration": "5m", "onMaxDuration": "Rollback"}
    assert "alphaRollback" in wire["analysis"]["loss"]
    assert spec.traffic_routing.gateway_api is not None
    assert spec.traffic_routing.gateway_api.http_route == "m"


def test_step_quotas_fall_back_to_step_defaults() -> None:
    raw = spec_with(
        steps=[{"weight": 5, "minSamples": 2000, "maxDuration": "1h"}, {"weight": 50}, {"weight": 100}],
        stepDefaults={"minSamples": 300, "minDuration": "2m"},
    )
    spec = ModelRolloutSpec.model_validate(raw)
    q0, q1 = spec.quota(0), spec.quota(1)
    assert (q0.min_samples, q0.min_duration, q0.max_duration) == (
        2000,
        timedelta(minutes=2),
        timedelta(hours=1),
    )
    assert (q1.min_samples, q1.min_duration, q1.max_duration) == (300, timedelta(minutes=2), None)


def test_relative_margin() -> None:
    raw = spec_with(analysis={"prometheus": {"address": "http://p:9090"}, "loss": {"relativeMargin": 0.02}})
    loss = ModelRolloutSpec.model_validate(raw).analysis.loss
    assert loss.margin_for(0.5) == pytest.approx(0.01)
    assert loss.margin_for(None) is None
    assert ModelRolloutSpec.model_validate(MINIMAL).analysis.loss.margin_for(None) == 0.01


def test_health_gate_needs_a_training_run() -> None:
    assert not ModelRolloutSpec.model_validate(MINIMAL).health_gated
    gated = spec_with(canary={"version": "v2", "service": "m-v2", "trainingRun": "train-v2"})
    assert ModelRolloutSpec.model_validate(gated).health_gated


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_manifests_are_refused_naming_the_field(path: Path) -> None:
    """The same manifests the API server refuses (tests/kube/test_crd_api.py) are refused here too."""
    field = expected_field(path)
    (doc,) = rollouts_in(path)
    with pytest.raises(ValidationError) as err:
        ModelRollout.model_validate(doc)
    lines = validation_messages(err.value, root="", model=ModelRollout)
    assert any(line.startswith(f"{field}:") for line in lines), lines
    assert all("(fix: " in line for line in lines if line.startswith(f"{field}:")), lines


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        (
            {"steps": [{"weight": 5}, {"weight": 150}, {"weight": 100}]},
            "spec.steps[1].weight: Input should be less than or equal to 100, got 150 "
            "(fix: use a canary percent in 1..100)",
        ),
        (
            {"canary": {"version": "v1", "service": "m-v2"}},
            "spec.canary.version: equals baseline.version ('v1') "
            "(fix: give the canary the version label of the new model)",
        ),
        (
            {"trafficRouting": {}},
            "spec.trafficRouting: 0 routers are set (fix: set exactly one of gatewayAPI, istio or replicas)",
        ),
        (
            {"stepz": []},
            "spec.stepz: Extra inputs are not permitted (fix: remove it, or did you mean steps?)",
        ),
        (
            {"steps": [{"weight": 5, "minDuration": 300}, {"weight": 100}]},
            "spec.steps[0].minDuration: durations are strings with a unit, not bare numbers: write 300s "
            "(seconds) or e.g. 5m (fix: use a duration string such as 30s, 5m or 1h30m (at least 1s for "
            "intervals and timeouts))",
        ),
    ],
)
def test_validation_messages(over: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        ModelRolloutSpec.model_validate(spec_with(**over))
    assert expected in validation_messages(err.value, model=ModelRolloutSpec)


def test_validation_messages_name_the_object() -> None:
    with pytest.raises(ValidationError) as err:
        ModelRolloutSpec.model_validate(spec_with(model=""))
    (line,) = validation_messages(err.value, obj="ModelRollout ml-prod/fraud-scorer")
    assert line.startswith("ModelRollout ml-prod/fraud-scorer: spec.model: ")


def test_unknown_nested_field_suggests_the_allowed_ones() -> None:
    raw = spec_with(analysis={"prometheus": {"address": "http://p:9090"}, "loss": {"margin": 0.01, "zzz": 1}})
    with pytest.raises(ValidationError) as err:
        ModelRolloutSpec.model_validate(raw)
    (line,) = validation_messages(err.value, model=ModelRolloutSpec)
    assert line.startswith(
        "spec.analysis.loss.zzz: Extra inputs are not permitted (fix: remove it; allowed here: "
    )
    assert "alphaRollback" in line
    assert "relativeMargin" in line


def test_models_are_frozen() -> None:
    spec = ModelRolloutSpec.model_validate(MINIMAL)
    with pytest.raises(ValidationError):
        spec.paused = True  # type: ignore[misc]


def test_resource_tolerates_kopf_status_and_missing_status() -> None:
    doc = {"apiVersion": "lossgate.io/v1alpha1", "kind": "ModelRollout", "spec": MINIMAL}
    doc["metadata"] = {"name": "m", "namespace": "ns", "generation": 3}
    assert ModelRollout.model_validate(doc).status.phase == "Pending"
    doc["status"] = {"phase": "Progressing", "kopf": {"progress": {}}}
    mro = ModelRollout.model_validate(doc)
    assert mro.status.phase == "Progressing"
    assert mro.generation == 3
    assert mro.ref == "ModelRollout ns/m"
    with pytest.raises(ValidationError):
        ModelRollout.model_validate({**doc, "kind": "Rollout"})


def test_the_api_version_is_one_string_everywhere() -> None:
    # The resource model's apiVersion literal and the constants the operator and the CRD use agree
    from lossgate.model import API_GROUP, API_VERSION, API_VERSION_STRING, ModelRollout

    assert f"{API_GROUP}/{API_VERSION}" == API_VERSION_STRING
    assert ModelRollout.model_fields["api_version"].default == API_VERSION_STRING


def test_a_shadow_step_parses_and_joins_the_alpha_family() -> None:
    # Given the shadow example
    (doc,) = rollouts_in(ROOT / "examples" / "modelrollout-shadow.yaml")
    spec = ModelRollout.model_validate(doc).spec
    # Then its first step is the shadow, at weight 0, and the rest are live
    assert spec.shadow is not None
    assert spec.shadow.mirror_percent == 50
    assert [s.traffic for s in spec.steps] == [0, 5, 50, 100]
    assert spec.in_shadow(0)
    assert not spec.in_shadow(1)
    # And the paired test is one more check sharing alphaRollback (shadow + live <= alphaRollback)
    live_only = ModelRolloutSpec.model_validate({**doc["spec"], "steps": doc["spec"]["steps"][1:]})
    assert spec.family_checks == live_only.family_checks + 1
    alpha = spec.analysis.loss.alpha_rollback
    assert judge_config(spec).alpha_rollback == pytest.approx(alpha / spec.family_checks)
    assert judge_config(live_only).alpha_rollback == pytest.approx(alpha / live_only.family_checks)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (
            [{"weight": 5}, {"shadow": {"mirrorPercent": 50}}, {"weight": 100}],
            "spec.steps: only the first step may be a shadow step (fix: move it first or drop it)",
        ),
        (
            [{"shadow": {"mirrorPercent": 50}}, {"weight": 100}],
            "spec.steps: a shadow step needs a live step below 100 after it",
        ),
        (
            [{"weight": 5, "shadow": {"mirrorPercent": 50}}, {"weight": 100}],
            "spec.steps[0]: a step sets either weight or shadow",
        ),
        (
            [{"shadow": {"mirrorPercent": 101}}, {"weight": 5}, {"weight": 100}],
            "spec.steps[0].shadow.mirrorPercent: Input should be less than or equal to 100, got 101 "
            "(fix: use a percent of requests to mirror in 1..100)",
        ),
    ],
)
def test_bad_shadow_steps_name_the_field(steps: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        ModelRolloutSpec.model_validate(spec_with(steps=steps))
    assert any(expected in line for line in validation_messages(err.value, model=ModelRolloutSpec))
