"""Manual control and bad input: annotations, a route that does not exist, a spec the operator refuses."""

from __future__ import annotations

from lossgate_dev.demo.stack import GROUP, PLURAL, VERSION, Stack
from lossgate_dev.devenv.procs import wait_until
from tests.e2e.conftest import TERMINAL, Launch, condition, history
from tests.e2e.test_resilience import STAY_IN_STEP_1, _wait_progressing_at


def _annotate(stack: Stack, namespace: str, key: str) -> None:
    body = {"metadata": {"annotations": {key: "true"}}}
    stack.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits", body)


def _annotations(stack: Stack, namespace: str) -> dict[str, str]:
    return dict(stack.rollout(namespace, "digits")["metadata"].get("annotations") or {})


def test_abort_annotation_rolls_back_and_is_removed(stack: Stack, namespace: str, launch: Launch) -> None:
    # Given a healthy rollout on its first step
    launch("good", **STAY_IN_STEP_1)
    _wait_progressing_at(stack, namespace, 10)
    # When an operator of the service annotates it with lossgate.io/abort
    _annotate(stack, namespace, "lossgate.io/abort")
    # Then it rolls back at once, the canary at 0%, and the annotation is consumed
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=60)
    assert got["status"]["phase"] == "RolledBack", history(stack, namespace)
    assert condition(got, "RolledBack")["reason"] == "Aborted"
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}
    wait_until(lambda: "lossgate.io/abort" not in _annotations(stack, namespace), 30, "annotation removed")


def test_promote_annotation_skips_the_remaining_analysis(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given a rollout that would stay on its first step for an hour
    launch("good", **STAY_IN_STEP_1)
    _wait_progressing_at(stack, namespace, 10)
    # When it is annotated with lossgate.io/promote
    _annotate(stack, namespace, "lossgate.io/promote")
    # Then it is promoted now, the canary at 100%
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=60)
    assert got["status"]["phase"] == "Promoted", history(stack, namespace)
    assert condition(got, "Promoted")["reason"] == "PromotedManually"
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 0, "digits-v2": 100}
    wait_until(lambda: "lossgate.io/promote" not in _annotations(stack, namespace), 30, "annotation removed")


def test_missing_route_becomes_a_condition_not_a_crash_loop(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given the operator and a rollout whose HTTPRoute name is misspelt
    sc = launch("good", apply=False)
    manifest = sc.manifest(stack.prom.url, trafficRouting={"gatewayAPI": {"httpRoute": "digitz"}})
    stack.apply_rollout(namespace, manifest)

    # Then RouterReady=False names the route and what to do, and no traffic moved
    def router_condition() -> dict:
        return condition(stack.rollout(namespace, "digits"), "RouterReady")

    wait_until(lambda: router_condition().get("status") == "False", 60, "RouterReady=False", stack.operator)
    cond = router_condition()
    assert cond["reason"] == "RouteNotFound"
    assert "digitz" in cond["message"]
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}
    # And the operator keeps running (no crash loop) and picks up the fix at the next tick
    assert stack.operator is not None
    assert stack.operator.alive()
    fix = {"spec": {"trafficRouting": {"gatewayAPI": {"httpRoute": "digits"}}}}
    stack.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits", fix)
    wait_until(lambda: router_condition().get("status") == "True", 60, "RouterReady=True", stack.operator)
