"""The latency guardrail end to end: a canary with better loss that answers slower is rolled back by
the guardrail, named in the condition, the Event and status.checks (the demo's `slow` scenario)."""

from __future__ import annotations

from kubernetes import client

from lossgate_dev.demo.stack import Stack
from tests.e2e.conftest import TERMINAL, Launch, condition, history


def test_slow_canary_with_better_loss_is_rolled_back_by_the_latency_guardrail(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given the better (less regularised) model served behind a 60 ms delay, guardrails on latency
    # (at most 5 points more requests slower than 50 ms) and on errors
    launch("slow")
    # When the rollout runs
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=240)
    trail = history(stack, namespace)
    print(trail)
    # Then it is rolled back at the first step, and the route gives the canary 0%
    status = got["status"]
    assert status["phase"] == "RolledBack", trail
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}
    # And by the latency guardrail, named in the condition, while the loss judge saw no regression
    rolled = condition(got, "RolledBack")
    assert rolled["reason"] == "CheckRegression"
    assert "latency-50ms" in rolled["message"]
    assert (status.get("analysis") or {}).get("verdict") != "Regression"
    checks = {c["name"]: c for c in status["checks"]}
    latency = checks["latency-50ms"]
    assert latency["verdict"] == "Regression"
    assert latency["kind"] == "latency"
    assert latency["csLow"] > latency["margin"] == 0.05
    assert latency["pRegression"] <= latency["alpha"] == 0.01 / 3  # pooled loss + 2 guardrails
    assert latency["meanCanary"] > 0.9  # nearly every canary answer took longer than 50 ms
    assert latency["meanBaseline"] < 0.05
    assert checks["errors"]["verdict"] != "Regression"
    # And a Warning Event names the check
    events = client.CoreV1Api(stack.api).list_namespaced_event(namespace).items
    mine = [e for e in events if e.involved_object.kind == "ModelRollout" and e.reason == "CheckRegression"]
    assert len(mine) == 1
    assert "latency-50ms" in mine[0].message
