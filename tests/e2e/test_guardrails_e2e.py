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


def test_canary_worse_on_one_class_is_rolled_back_by_the_per_class_judge(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given a canary better on the pool (0.225 vs 0.241 nats held out) but trained with half of the
    # digit-7 labels replaced at random (0.77 vs 0.12 nats on digit 7); each request carries its digit
    # as the `class` label, and every digit is judged once it has 40 labelled canary samples
    launch("classbad", rate=150.0)
    # When the rollout runs
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=300)
    trail = history(stack, namespace)
    print(trail)
    # Then it is rolled back by the judge of class 7, not by the pooled judge
    status = got["status"]
    assert status["phase"] == "RolledBack", trail
    rolled = condition(got, "RolledBack")
    assert rolled["reason"] == "CheckRegression"
    assert "classLoss check 7" in rolled["message"]
    assert status["analysis"]["verdict"] != "Regression"
    checks = {c["name"]: c for c in status["checks"]}
    seven = checks["7"]
    assert seven["verdict"] == "Regression"
    assert seven["judged"] is True
    assert seven["nCanary"] >= 40
    assert seven["csLow"] > seven["margin"] > 0
    assert seven["pRegression"] <= seven["alpha"] == 0.01 / 11  # pooled loss + 10 class slots
    # And no other digit regressed: the canary is better or equal on each
    assert [name for name, c in checks.items() if c["verdict"] == "Regression"] == ["7"]
