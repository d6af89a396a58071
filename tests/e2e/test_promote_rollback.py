"""Real rollouts end to end: model servers with real cross-entropy, Prometheus, the operator, the
HTTPRoute it writes, and a driver that sends traffic by those weights."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from lossgate_dev.demo.stack import SCRAPE_LAG_S, Stack
from lossgate_dev.devenv.procs import wait_until
from tests.cli.conftest import run
from tests.e2e.conftest import TERMINAL, Launch, history


def test_good_canary_is_promoted(stack: Stack, namespace: str, launch: Launch) -> None:
    # Given a baseline and a better canary (less regularised) serving real predictions, healthy training
    launch("good")
    # When the rollout runs: while it progresses, the operator exports the judge's numbers
    wait_until(
        lambda: _operator_metrics(stack).get(("lossgate_judge_samples", "canary"), 0) > 0,
        120,
        "the judge's canary samples on the operator's /metrics",
        stack.operator,
    )
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=240)
    trail = history(stack, namespace)
    print(trail)
    # Then it is promoted and the route sends everything to the canary
    status = got["status"]
    assert status["phase"] == "Promoted", trail
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 0, "digits-v2": 100}
    # And it went through every step, each started with its own weight
    assert [s["weight"] for s in status["stepStarts"]] == [10, 25, 50]
    # And the judge saw real labelled samples on both arms, the canary's loss below the baseline's
    a = status["analysis"]
    assert a["canary"]["n"] >= 600
    assert a["baseline"]["n"] > a["canary"]["n"]
    assert a["delta"] < 0
    assert a["canary"]["mean"] < a["baseline"]["mean"]
    # And status.calibration reports both arms from the joiner's reliability counters: the less
    # regularised canary is the better calibrated (held out: Brier 0.065 vs 0.094, ECE 0.06 vs 0.12)
    cal = status["calibration"]
    assert cal["bins"] == 15
    assert cal["canary"]["n"] >= 600
    assert cal["baseline"]["n"] > cal["canary"]["n"]
    assert 0 < cal["canary"]["brier"] < cal["baseline"]["brier"]
    assert cal["canary"]["ece"] >= 0
    assert cal["baseline"]["ece"] <= cal["baseline"]["mce"]
    assert sum(b["count"] for b in cal["canary"]["bins"]) == cal["canary"]["n"]
    # And the operator's own metrics count the decisions it took
    metrics = _operator_metrics(stack)
    assert metrics[("lossgate_decisions_total", "Start")] == 1
    assert metrics[("lossgate_decisions_total", "Advance")] == 2
    assert metrics[("lossgate_decisions_total", "Promote")] == 1
    assert metrics[("lossgate_rollouts", "Promoted")] == 1
    # And a finished rollout keeps only the time of its last tick, not stale judge numbers
    assert ("lossgate_judge_delta_nats", "") not in metrics
    assert metrics[("lossgate_last_analysis_timestamp_seconds", "")] > 0
    # And `lossgate replay digits` (the state machine over the same Prometheus history, on a virtual
    # clock) takes the operator's decisions
    replay = replayed(stack, namespace)
    assert [m["kind"] for m in replay["moves"]] == ["Start", "Advance", "Advance", "Promote"], replay


def test_worse_canary_is_rolled_back_with_the_numbers(stack: Stack, namespace: str, launch: Launch) -> None:
    # Given a canary trained on 30% noisy labels (held-out loss 0.69 vs 0.24 nats)
    launch("bad")
    # When the rollout runs
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=240)
    trail = history(stack, namespace)
    print(trail)
    # Then it is rolled back at the first step, and the route gives the canary 0%
    status = got["status"]
    assert status["phase"] == "RolledBack", trail
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}
    assert [s["weight"] for s in status["stepStarts"]] == [10]
    # And the decision is a significant regression, with its numbers in status
    a = status["analysis"]
    assert a["verdict"] == "Regression"
    assert a["canary"]["n"] >= 150  # minSamplesBeforeRollback
    assert a["csLow"] > a["margin"] > 0  # the whole confidence sequence is above the margin
    assert a["pRegression"] < 0.01
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
    assert rolled["status"] == "True"
    assert rolled["reason"] == "LossRegression"
    # And a Warning Event on the ModelRollout carries the same decision
    events = client.CoreV1Api(stack.api).list_namespaced_event(namespace).items
    mine = [e for e in events if e.involved_object.kind == "ModelRollout" and e.reason == "LossRegression"]
    assert len(mine) == 1
    assert mine[0].type == "Warning"
    assert "rolled back v2 to 0%" in mine[0].message
    # And `lossgate replay digits` takes the same decisions as the operator, at the same looks
    replay = replayed(stack, namespace)
    assert [(m["kind"], m["reason"]) for m in replay["moves"]] == [
        ("Start", "Started"),
        ("Rollback", "LossRegression"),
    ]


def test_nonfinite_training_run_blocks_before_traffic_moves(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given a canary whose training run's gradients went NaN at step 300 of 400
    launch("good", nan_at=300)
    # When the rollout is applied
    got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=120)
    trail = history(stack, namespace)
    # Then it fails before any traffic moves: the canary never had a weight above 0
    status = got["status"]
    assert status["phase"] == "Failed", trail
    assert status.get("stepStarts", []) == []
    assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}
    health = status["trainingHealth"]
    assert health["verdict"] == "Fail"
    assert health["nonFiniteSteps"] >= 100
    assert "Start" not in trail


def replayed(stack: Stack, namespace: str) -> dict[str, Any]:
    """`lossgate replay digits -o json` against the stack's API server and Prometheus, with the
    operator's scrape lag; asserts that it reproduced the operator's traffic moves."""
    r = run("replay", "digits", "-n", namespace, "--kubeconfig", str(stack.plane.kubeconfig),
            "--scrape-lag", f"{SCRAPE_LAG_S}s", "-o", "json")  # fmt: skip
    assert r.rc == 0, r.err
    doc: dict[str, Any] = r.json()
    print(json.dumps({k: doc[k] for k in ("moves", "recorded", "differences", "outcome")}, indent=1))
    # The same moves at the same steps, within the tolerance in time, with the same reasons; except
    # that a final promotion may rest on "no regression" in one and on "non-inferior" in the other:
    # the two clocks tick a few seconds apart, and both end the last step on the same evidence.
    moves, rec = doc["moves"], doc["recorded"]
    steps = [(m["kind"], m["step"]) for m in moves]
    assert steps == [(m["kind"], m["step"]) for m in rec], doc["differences"]
    last_promote = 1 if moves and moves[-1]["kind"] == "Promote" else 0
    same = len(moves) - last_promote
    assert [m["reason"] for m in moves[:same]] == [m["reason"] for m in rec[:same]], doc["differences"]
    assert not [d for d in doc["differences"] if "replay at" in d], doc["differences"]
    return doc


def _operator_metrics(stack: Stack) -> dict[tuple[str, str], float]:
    """The operator's /metrics, keyed by (sample name, decision kind, phase or arm), summed over the rest."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.operator_metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, s.labels.get("kind") or s.labels.get("phase") or s.labels.get("arm") or "")
            out[key] = out.get(key, 0.0) + s.value
    return out
