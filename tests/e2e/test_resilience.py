"""The loop under failure: Prometheus down (hold, then act), rollout deleted. The operator killed
mid-step (its pod deleted with no grace period) is the node tier's: tests/node/test_node_rollouts.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.adapters.spec_refs import judge_config, loss_ref
from lossgate.core.judge import evaluate
from lossgate.core.judge_codec import decode
from lossgate.core.judge_fold import conclude
from lossgate.core.timeline import weight_timeline, with_weights
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
from lossgate_dev.demo.stack import Stack
from lossgate_dev.devenv.procs import wait_until
from tests.e2e.conftest import TERMINAL, Launch, condition, history

STAY_IN_STEP_1 = {"stepDefaults": {"minSamples": 1_000_000, "minDuration": "1h"}}


def _wait_progressing_at(stack: Stack, namespace: str, weight: int) -> None:
    def at() -> bool:
        st = stack.rollout(namespace, "digits").get("status") or {}
        return st.get("phase") == "Progressing" and st.get("canaryWeight") == weight

    wait_until(at, 120, f"Progressing at {weight}%", stack.operator)
    wait_until(lambda: stack.route_weights(namespace, "digits")["digits-v2"] == weight, 30, "route weight")


def _metrics_available(stack: Stack, namespace: str) -> str:
    return str(condition(stack.rollout(namespace, "digits"), "MetricsAvailable").get("status"))


def test_prometheus_down_holds_the_weight_then_rolls_back(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given a rollout on its first step that rolls back after 12 s without metrics
    manifest = launch("good", apply=False).manifest(stack.prom.url, **STAY_IN_STEP_1)
    manifest["spec"]["analysis"]["onMetricsUnavailable"] = {"action": "Rollback", "after": "12s"}
    stack.apply_rollout(namespace, manifest)
    _wait_progressing_at(stack, namespace, 10)
    # When Prometheus stops
    stack.prom.stop()
    # Then the operator says so and holds the weight (unavailable metrics are not a regression)
    wait_until(lambda: _metrics_available(stack, namespace) == "False", 30, "MetricsAvailable=False")
    assert stack.route_weights(namespace, "digits")["digits-v2"] == 10
    assert stack.rollout(namespace, "digits")["status"]["phase"] == "Progressing"
    # And after onMetricsUnavailable.after it rolls back, canary at 0%
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=60)
    assert got["status"]["phase"] == "RolledBack", history(stack, namespace)
    assert condition(got, "RolledBack")["reason"] == "MetricsUnavailable"
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}


def test_prometheus_back_in_time_and_the_rollout_continues(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given a rollout that holds (not rolls back) while metrics are unavailable
    launch("good")
    _wait_progressing_at(stack, namespace, 10)
    # When Prometheus is down for a while
    stack.prom.stop()
    wait_until(lambda: _metrics_available(stack, namespace) == "False", 30, "MetricsAvailable=False")
    held = stack.rollout(namespace, "digits")["status"]
    assert held["phase"] == "Progressing"
    assert held["canaryWeight"] == 10
    # And comes back on the same port with its data
    stack.prom.restart()
    # Then metrics are available again and the rollout goes on to promotion
    wait_until(lambda: _metrics_available(stack, namespace) == "True", 60, "MetricsAvailable=True")
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=240)
    assert got["status"]["phase"] == "Promoted", history(stack, namespace)


def test_deleting_a_rollout_mid_way_restores_the_baseline(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given a rollout with the canary at 10%
    launch("good", **STAY_IN_STEP_1)
    _wait_progressing_at(stack, namespace, 10)
    # When the ModelRollout is deleted
    stack.custom.delete_namespaced_custom_object(
        "lossgate.io", "v1alpha1", namespace, "modelrollouts", "digits"
    )

    def gone() -> bool:
        try:
            stack.rollout(namespace, "digits")
        except ApiException as err:
            return err.status == 404
        return False

    # Then the finalizer sends all traffic back to the baseline before the object goes away
    wait_until(gone, 60, "ModelRollout deleted", stack.operator)
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}


def assert_state_is_the_full_recompute(obj: dict[str, Any], prometheus_url: str, namespace: str) -> None:
    """The judge state a rollout carries in status equals the full recompute over every interval since
    its origin, read back from Prometheus now (used after an operator restart)."""
    status, spec = (
        ModelRolloutStatus.model_validate(obj["status"]),
        ModelRolloutSpec.model_validate(obj["spec"]),
    )
    state = status.judge_state
    assert state is not None
    config = judge_config(spec)
    metrics = PrometheusMetrics(PrometheusConfig(prometheus_url))
    at = lambda ms: datetime.fromtimestamp(ms / 1000, tz=UTC)  # noqa: E731
    read = metrics.loss_intervals(loss_ref(namespace, spec), at(state.origin_ms), at(state.through_ms),
                                  state.interval_ms / 1000)  # fmt: skip
    assert isinstance(read, list)
    assert len(read) == state.looks
    full = evaluate(with_weights(read, weight_timeline(status)), config)
    assert conclude(decode(state.numbers), config) == full
    metrics.close()
