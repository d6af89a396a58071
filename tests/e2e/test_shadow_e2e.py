"""The shadow phase end to end: the operator writes a RequestMirror filter into the HTTPRoute, the
driver copies the baseline's requests to the canary as a gateway would, both model servers log their
predictions to a real `lossgate joiner` under the same request id, Prometheus scrapes the paired
counters, and the paired judge decides before (bad) or instead of (good) any user seeing the canary."""

from __future__ import annotations

from typing import Any

from lossgate_dev.demo.stack import SCRAPE_LAG_S, Stack
from lossgate_dev.devenv.procs import wait_until
from tests.cli.conftest import run
from tests.e2e.conftest import TERMINAL, Launch, history
from tests.e2e.test_promote_rollback import replayed

SHADOW_STEPS: list[dict[str, Any]] = [
    {"shadow": {"mirrorPercent": 100}},
    {"weight": 10},
    {"weight": 50},
    {"weight": 100},
]


def _mirror(stack: Stack, namespace: str) -> list[dict[str, Any]]:
    route = stack.custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "digits"
    )
    return [f for f in route["spec"]["rules"][0].get("filters") or [] if f.get("type") == "RequestMirror"]


def test_a_bad_canary_is_rolled_back_in_shadow_having_served_no_user(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given the joiner, and a canary trained on noisy labels, behind a shadow step mirroring 100%
    stack.start_joiner()
    sc = launch("bad", steps=SHADOW_STEPS)
    assert sc.driver is not None
    # When the rollout runs: first the route mirrors to the canary
    wait_until(lambda: bool(_mirror(stack, namespace)), 60, "the RequestMirror filter", stack.operator)
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=240)
    trail = history(stack, namespace)
    print(trail)
    # Then it rolled back in the shadow step, with the paired test at Regression. The canary's own
    # loss series (from the mirrored copies) feed the unpaired judge too: when both cross on the same
    # tick, the condition names the unpaired one (LossRegression); the paired verdict is checked below
    status = got["status"]
    assert status["phase"] == "RolledBack", trail
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
    assert rolled["reason"] in ("PairedRegression", "LossRegression"), trail
    assert [s["weight"] for s in status["stepStarts"]] == [0]
    # And no user request was served by the canary; it saw only mirrored copies
    assert sc.driver.sent["digits-v2"] == 0
    assert sc.driver.mirrored["digits-v2"] >= 150
    # And the mirror is gone from the route, the canary still at 0%
    wait_until(lambda: not _mirror(stack, namespace), 30, "the mirror removed", stack.operator)
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}
    # And status keeps the paired numbers the decision was taken on
    p = status["paired"]
    assert p["verdict"] == "Regression"
    assert p["n"] >= 150  # minSamplesBeforeRollback pairs
    assert p["csLow"] > p["margin"] > 0
    # And `lossgate replay` (the state machine over the recorded paired and loss history) agrees
    assert [m["kind"] for m in replayed(stack, namespace)["moves"]] == ["Start", "Rollback"]


def test_a_good_canary_advances_from_shadow_on_paired_evidence(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given the joiner and a better canary behind a shadow step mirroring 100%
    stack.start_joiner()
    sc = launch("good", steps=SHADOW_STEPS)
    assert sc.driver is not None
    # When the rollout runs
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=300)
    trail = history(stack, namespace)
    print(trail)
    # Then it left the shadow step on paired non-inferiority, went live and was promoted
    status = got["status"]
    assert status["phase"] == "Promoted", trail
    assert [s["weight"] for s in status["stepStarts"]][:2] == [0, 10]
    assert any(h["reason"] == "ShadowPassed" for h in status["history"]), trail
    p = status["paired"]
    assert p["verdict"] == "NotWorse"
    assert p["n"] >= 150  # the shadow step's minSamples counts pairs
    assert not _mirror(stack, namespace)
    # And `lossgate replay` (the state machine over the recorded paired and loss history) takes the
    # same decisions, leaving shadow on the paired evidence at the operator's time. (Later moves may be
    # a few seconds apart: labels of requests mirrored just before the switch count in the first live
    # step's samples, and whether their interval starts before or after the step's start differs by
    # one tick between the two clocks; for the same reason the final promotion may rest on "no
    # regression" in one and on "non-inferior" in the other: the same move, shown by its kind.)
    r = run("replay", "digits", "-n", namespace, "--kubeconfig", str(stack.plane.kubeconfig),
            "--scrape-lag", f"{SCRAPE_LAG_S}s", "-o", "json")  # fmt: skip
    assert r.rc == 0, r.err
    doc = r.json()
    moves = [(m["kind"], m["reason"]) for m in doc["moves"]]
    recorded = [(m["kind"], m["reason"]) for m in doc["recorded"]]
    assert moves[:2] == recorded[:2], doc
    assert [k for k, _ in moves] == [k for k, _ in recorded], doc
    assert moves[1] == ("Advance", "ShadowPassed")
    assert not any(d.startswith(("decision 1 ", "decision 2 ")) for d in doc["differences"]), doc
