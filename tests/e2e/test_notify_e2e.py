"""The operator as a real process notifies a real HTTP receiver of a rollout's start and rollback:
the numbers of the status history, one idempotency key per decision kept across a retry."""

from __future__ import annotations

from pathlib import Path

from lossgate_dev.demo.stack import Stack
from tests.e2e.conftest import TERMINAL, Launch, history
from tests.notify.receiver import receiver


def test_start_and_rollback_reach_the_webhook(
    stack: Stack, namespace: str, launch: Launch, tmp_path: Path
) -> None:
    with receiver() as rx:
        # Given a webhook sink for every rollout that refuses its first request (503)
        rx.fail_next = 1
        sinks = tmp_path / "notifications.yaml"
        sinks.write_text(
            "sinks:\n"
            f"- {{name: audit, type: webhook, url: '{rx.url}/hook', rollouts: all,\n"
            "   events: [start, rollback]}\n"
            "retry: {attempts: 5, initialBackoffSeconds: 0.2}\n"
        )
        # When a worse canary is rolled out by the operator with that file
        launch("bad", operator_env={"LOSSGATE_NOTIFICATIONS_FILE": str(sinks)})
        got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=240)
        trail = history(stack, namespace)
        assert got["status"]["phase"] == "RolledBack", trail
        # Then the receiver gets the start (twice: refused, then accepted, with one key) and the rollback
        received = rx.wait_for(3, within=30)
    uid = got["metadata"]["uid"]
    events = [(r.body["event"], r.headers["idempotency-key"]) for r in received]
    (start_key,) = {k for e, k in events if e == "start"}
    assert [e for e, _ in events] == ["start", "start", "rollback"], events
    assert start_key.startswith(f"{uid}/")
    # And the rollback carries the numbers the status history recorded for it
    rollback = received[-1].body
    entry = next(h for h in got["status"]["history"] if h["decision"] == "Rollback")
    assert rollback["rollout"]["namespace"] == namespace
    assert (rollback["decision"]["reason"], rollback["decision"]["message"]) == (
        entry["reason"],
        entry["message"],
    )
    assert rollback["analysis"]["verdict"] == "Regression"
    assert (rollback["analysis"]["delta"], rollback["analysis"]["csLow"]) == (entry["delta"], entry["csLow"])
    assert rollback["analysis"]["csLow"] > rollback["analysis"]["margin"] > 0
