"""Delivery to real HTTP receivers (127.0.0.1, free ports): the webhook schema, Slack blocks,
CloudEvents in both modes, retries with one idempotency key, filters, and a hanging sink that holds
up neither submit() nor the other sinks."""

from __future__ import annotations

import threading
import time
from typing import Any

from lossgate.adapters.notify import Notifications, NotificationSettings
from lossgate.core.machine import decide
from lossgate.core.notify import Envelope, envelope
from lossgate.core.verdicts import LossVerdict
from tests.notify.receiver import Receiver
from tests.unit.test_machine_rules import FRESH, T0, at_step, loss, make_spec, obs

FAST_RETRY = {"attempts": 4, "initialBackoffSeconds": 0.02, "maxBackoffSeconds": 0.05}


def _rollback() -> Envelope:
    spec = make_spec()
    bad = loss(LossVerdict.REGRESSION, delta=0.05, cs_low=0.03, cs_high=0.07)
    d = decide(spec, at_step(spec, 0), obs(loss=bad), T0)
    return _env(d.notices[0], d.status.analysis, {"oncall"})


def _start() -> Envelope:
    d = decide(make_spec(), FRESH, obs(), T0)
    return _env(d.notices[0], d.status.analysis, {"oncall"})


def _env(notice: Any, analysis: Any, subs: set[str]) -> Envelope:
    return envelope(
        notice,
        namespace="ml",
        name="fraud",
        uid="uid-7",
        model="fraud-scorer",
        versions=("v41", "v42"),
        analysis=analysis,
        subscriptions=frozenset(subs),
    )


def _notifier(sinks: list[dict[str, Any]], outcomes: list[tuple[str, str]] | None = None) -> Notifications:
    settings = NotificationSettings.model_validate({"sinks": sinks, "retry": FAST_RETRY})
    rec = (lambda s, o: outcomes.append((s, o))) if outcomes is not None else None
    n = Notifications(settings, record=rec)
    n.start()
    return n


def test_webhook_gets_the_documented_json_with_the_judges_numbers(rx: Receiver) -> None:
    # Given a webhook sink the rollout subscribes to
    n = _notifier([{"name": "oncall", "type": "webhook", "url": rx.url + "/hook"}])
    try:
        # When a rollback is submitted
        env = _rollback()
        n.submit(env)
        # Then the receiver gets one POST with the schema, the key and the numbers
        (got,) = rx.wait_for(1)
    finally:
        n.close()
    body = got.body
    assert got.path == "/hook"
    assert got.headers["idempotency-key"] == env.key == body["id"]
    assert body["schema"] == "lossgate.io/notification/v1"
    assert (body["event"], body["severity"]) == ("rollback", "critical")
    assert body["rollout"] == {
        "namespace": "ml",
        "name": "fraud",
        "uid": "uid-7",
        "model": "fraud-scorer",
        "baselineVersion": "v41",
        "canaryVersion": "v42",
    }
    assert (body["decision"]["kind"], body["decision"]["phase"]) == ("Rollback", "RolledBack")
    a = body["analysis"]
    assert (a["verdict"], a["delta"], a["csLow"], a["csHigh"], a["margin"]) == (
        "Regression",
        0.05,
        0.03,
        0.07,
        0.01,
    )


def test_slack_blocks_and_cloudevents_binary_and_structured(rx: Receiver) -> None:
    # Given a Slack sink and two CloudEvents sinks (binary, structured) on one receiver
    sinks = [
        {"name": "slack", "type": "slack", "url": rx.url + "/slack", "rollouts": "all"},
        {"name": "ce-bin", "type": "cloudevents", "url": rx.url + "/bin", "rollouts": "all"},
        {
            "name": "ce-doc",
            "type": "cloudevents",
            "mode": "structured",
            "url": rx.url + "/doc",
            "rollouts": "all",
        },
    ]
    n = _notifier(sinks)
    try:
        # When a rollback is submitted
        env = _rollback()
        n.submit(env)
        got = {r.path: r for r in rx.wait_for(3)}
    finally:
        n.close()
    # Then Slack gets blocks whose fields carry delta, CS and margin
    slack = got["/slack"].body
    fields = [f["text"] for b in slack["blocks"] if b["type"] == "section" for f in b.get("fields", [])]
    assert "*Delta (nats)*\n0.05" in fields
    assert "*CS*\n[0.03, 0.07]" in fields
    assert "*Margin*\n0.01" in fields
    assert slack["blocks"][0]["text"]["text"] == "Rollback: ml/fraud (v42)"
    # And a binary CloudEvent has its attributes in ce-* headers and the webhook JSON as data
    b = got["/bin"]
    assert (b.headers["ce-specversion"], b.headers["ce-id"]) == ("1.0", env.key)
    assert b.headers["ce-type"] == "io.lossgate.rollout.rollback"
    assert b.headers["ce-source"] == "/apis/lossgate.io/v1alpha1/namespaces/ml/modelrollouts/fraud"
    assert b.body["id"] == env.key
    # And a structured one is one application/cloudevents+json document
    d = got["/doc"]
    assert d.headers["content-type"] == "application/cloudevents+json"
    assert (d.body["id"], d.body["type"], d.body["data"]["event"]) == (
        env.key,
        "io.lossgate.rollout.rollback",
        "rollback",
    )


def test_retries_after_failures_with_the_same_idempotency_key(rx: Receiver) -> None:
    # Given a receiver that answers 503 twice, then 200
    rx.fail_next = 2
    outcomes: list[tuple[str, str]] = []
    n = _notifier([{"name": "oncall", "type": "webhook", "url": rx.url}], outcomes)
    try:
        # When one notice is submitted
        env = _rollback()
        n.submit(env)
        got = rx.wait_for(3)
    finally:
        n.close()
    # Then it was sent three times, each with the same key, and delivered once
    assert [r.headers["idempotency-key"] for r in got] == [env.key] * 3
    assert outcomes == [("oncall", "retried"), ("oncall", "retried"), ("oncall", "delivered")]


def test_filters_by_subscription_event_and_severity(rx: Receiver) -> None:
    # Given three sinks: subscribed only, rollbacks only, warnings and worse
    sinks = [
        {"name": "other", "type": "webhook", "url": rx.url + "/other"},
        {
            "name": "rollbacks",
            "type": "webhook",
            "url": rx.url + "/rb",
            "rollouts": "all",
            "events": ["rollback"],
        },
        {
            "name": "loud",
            "type": "webhook",
            "url": rx.url + "/loud",
            "rollouts": "all",
            "minSeverity": "warning",
        },
    ]
    n = _notifier(sinks)
    try:
        # When a start (info) and a rollback (critical) are submitted by a rollout subscribed to "oncall"
        n.submit(_start())
        n.submit(_rollback())
        got = rx.wait_for(2)
    finally:
        n.close()
    # Then only the rollback reached the two sinks that take it; "other" has no subscriber
    assert sorted((r.path, r.body["event"]) for r in got) == [("/loud", "rollback"), ("/rb", "rollback")]


def test_a_hanging_sink_holds_up_neither_submit_nor_the_other_sinks(rx: Receiver, rx2: Receiver) -> None:
    # Given a sink that hangs every request and a healthy one
    rx.hang = threading.Event()
    sinks = [
        {"name": "stuck", "type": "webhook", "url": rx.url, "rollouts": "all", "timeoutSeconds": 30},
        {"name": "fine", "type": "webhook", "url": rx2.url, "rollouts": "all"},
    ]
    outcomes: list[tuple[str, str]] = []
    settings = NotificationSettings.model_validate({"sinks": sinks, "retry": FAST_RETRY, "queueSize": 3})
    n = Notifications(settings, record=lambda s, o: outcomes.append((s, o)))
    n.start()
    try:
        # When five notices are submitted while the first request to the stuck sink hangs
        envs = [_start(), _rollback(), _start(), _rollback(), _start()]
        for i, e in enumerate(envs, start=1):
            n.submit(e)  # returns at once: a blocking put would hang this test
            rx2.wait_for(i)
            if i == 1:
                rx.wait_hung(1)
        # Then the healthy sink got all five while the stuck one still hangs on its first
        assert len(rx2.requests) == 5
        assert (rx.hung, rx.requests) == (1, [])
        # And the stuck sink's bounded queue dropped what did not fit (1 in flight, 3 queued)
        assert outcomes.count(("stuck", "dropped")) == 1
        # (the sender counts a delivery once the answer is read: poll for it)
        deadline = time.monotonic() + 10
        while outcomes.count(("fine", "delivered")) < 5:
            assert time.monotonic() < deadline, outcomes
            time.sleep(0.01)
    finally:
        rx.hang.set()
        n.close()
