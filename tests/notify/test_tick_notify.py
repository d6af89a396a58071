"""A tick on the real API server notifies its decision after the status write, and a sink that
hangs does not hold the tick: the decision is on the server while the sink's request is unanswered."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from kubernetes import client

from lossgate.adapters.kube import RolloutObjects
from lossgate.adapters.notify import Notifications, NotificationSettings
from lossgate.core.actions import EmitEvent
from lossgate.model.crdgen import crd
from lossgate.reconcile.rollout import tick
from lossgate_dev.devenv.thirdparty import install_crds
from tests.infra.kube_fixtures import Kube
from tests.notify.receiver import Receiver
from tests.unit.reconcile_fakes import SPEC, T0, FakeClock, FakeDeps, FakeMetrics, FakeRouter, interval

GROUP, VERSION, PLURAL = "lossgate.io", "v1alpha1", "modelrollouts"


@pytest.fixture(scope="module")
def rollout_crd(kube: Kube) -> None:
    install_crds(kube.api_client, [crd()])


def _get(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    return dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m"))


def test_a_hanging_sink_does_not_hold_the_decision(
    kube: Kube, rollout_crd: None, namespace: str, rx: Receiver, rx2: Receiver
) -> None:
    # Given a rollout subscribed to a sink that hangs and to one that answers
    api = client.CustomObjectsApi(kube.api_client)
    meta = {"name": "m", "annotations": {"lossgate.io/notify": "stuck,fine"}}
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout", "metadata": meta, "spec": SPEC}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    rx.hang = threading.Event()
    sinks = [
        {"name": "stuck", "type": "webhook", "url": rx.url, "timeoutSeconds": 30},
        {"name": "fine", "type": "cloudevents", "url": rx2.url},
    ]
    deps = FakeDeps(
        RolloutObjects(kube.api_client),
        FakeRouter(),
        FakeMetrics([interval(T0)]),
        FakeClock(),
        api_client=kube.api_client,
    )
    deps.notifier = Notifications(NotificationSettings.model_validate({"sinks": sinks}))
    deps.notifier.start()
    try:
        # When the operator ticks and starts the rollout
        events: list[EmitEvent] = []
        asyncio.run(tick(deps, _get(api, namespace), events.append))
        # Then the healthy sink gets the start, keyed by the object's uid and the decision's time
        (got,) = rx2.wait_for(1)
        obj = _get(api, namespace)
        uid = obj["metadata"]["uid"]
        assert got.headers["ce-id"] == f"{uid}/{round(T0.timestamp() * 1000)}/start"
        assert got.body["decision"]["kind"] == "Start"
        # And the hanging sink has the request, unanswered, while the decision is already on the server
        rx.wait_hung(1)
        assert rx.requests == []
        assert obj["status"]["phase"] == "Progressing"
        assert obj["status"]["history"][-1]["decision"] == "Start"
        # When the sink answers at last
        rx.hang.set()
        # Then it got the same notice
        (late,) = rx.wait_for(1)
        assert late.body["id"] == got.headers["ce-id"]
    finally:
        rx.hang.set()
        deps.notifier.close()
