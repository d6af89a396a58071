"""Reaction time with the operator running: a manual command on a rollout with a 5-minute analysis
interval is handled within seconds (the watch wakes the rollout's daemon), by exactly one tick."""

from __future__ import annotations

import re
import time
import urllib.request

from lossgate_dev.demo.stack import GROUP, PLURAL, VERSION, Stack
from lossgate_dev.devenv.procs import wait_until
from tests.e2e.conftest import Launch
from tests.e2e.test_resilience import STAY_IN_STEP_1, _wait_progressing_at

INTERVAL_S = 300


def _ticks(stack: Stack, namespace: str) -> float:
    """Completed ticks of the rollout: the sum of lossgate_decisions_total over its decision kinds."""
    url = f"http://127.0.0.1:{stack.operator_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    pattern = rf'^lossgate_decisions_total{{[^}}]*namespace="{namespace}"[^}}]*}} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _patch(stack: Stack, namespace: str, body: dict) -> None:
    stack.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits", body)


def test_pause_annotation_is_handled_within_seconds_not_at_the_next_interval(
    stack: Stack, namespace: str, launch: Launch
) -> None:
    # Given a progressing rollout whose analysis interval is then set to 5 minutes (a spec edit,
    # which itself wakes the daemon: observedGeneration follows at once)
    launch("good", **STAY_IN_STEP_1)
    _wait_progressing_at(stack, namespace, 10)
    _patch(stack, namespace, {"spec": {"analysis": {"interval": f"{INTERVAL_S}s"}}})
    generation = stack.rollout(namespace, "digits")["metadata"]["generation"]

    def edit_seen() -> bool:
        return (stack.rollout(namespace, "digits").get("status") or {}).get(
            "observedGeneration"
        ) == generation

    wait_until(edit_seen, 10, "the spec edit handled", stack.operator)
    # And no tick runs any more: the tick count holds still for 3 s (the old interval was 2 s)
    before = _quiet_ticks(stack, namespace)
    # When it is annotated with lossgate.io/pause
    t0 = time.monotonic()
    _patch(stack, namespace, {"metadata": {"annotations": {"lossgate.io/pause": "true"}}})

    def paused() -> bool:
        return (stack.rollout(namespace, "digits").get("status") or {}).get("phase") == "Paused"

    wait_until(paused, 15, "phase Paused", stack.operator, interval=0.05)
    latency = time.monotonic() - t0
    print(f"pause annotation -> status Paused in {latency:.2f} s (analysis interval {INTERVAL_S} s)")
    # Then the status shows Paused within seconds, far inside the 5-minute interval
    assert latency < 5.0
    assert latency < INTERVAL_S
    # And the annotation is consumed, by that one tick; its own writes (status, annotation removal)
    # wake nothing: the count then holds still again
    wait_until(lambda: "lossgate.io/pause" not in _annotations(stack, namespace), 5, "annotation removed")
    assert _quiet_ticks(stack, namespace) == before + 1


def _annotations(stack: Stack, namespace: str) -> dict[str, str]:
    return dict(stack.rollout(namespace, "digits")["metadata"].get("annotations") or {})


def _quiet_ticks(stack: Stack, namespace: str) -> float:
    """The tick count once it has not moved for 3 s (polled every 0.2 s)."""
    seen: list[float] = []

    def quiescent() -> bool:
        seen.append(_ticks(stack, namespace))
        return len(seen) >= 16 and len(set(seen[-16:])) == 1

    wait_until(quiescent, 30, "no tick between intervals", stack.operator)
    return seen[-1]
