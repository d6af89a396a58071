"""The reconciler's status and Secret traffic on the real API server: a steady tick sends no PATCH
(resourceVersion unchanged), an unreadable status gets only a condition (the rest kept, traffic
untouched) until it is fixed or cleared, and a rotated Prometheus token is picked up without a
Secret GET per tick."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from lossgate.adapters.kube import RolloutObjects
from lossgate.core.actions import EmitEvent
from lossgate.core.evidence import Problem
from lossgate.model.analysis import PrometheusSource
from lossgate.model.crdgen import crd
from lossgate.ports import LossSeriesRef
from lossgate.reconcile.deps import Deps, OperatorConfig
from lossgate.reconcile.limits import LimitedMetrics
from lossgate.reconcile.rollout import tick
from lossgate_dev.devenv.thirdparty import install_crds
from tests.infra.kube_fixtures import Kube
from tests.unit.reconcile_fakes import (
    SPEC,
    T0,
    FakeClock,
    FakeDeps,
    FakeMetrics,
    FakeRouter,
    counting,
    interval,
)

GROUP, VERSION, PLURAL = "lossgate.io", "v1alpha1", "modelrollouts"


@pytest.fixture(scope="module")
def rollout_crd(kube: Kube) -> None:
    install_crds(kube.api_client, [crd()])


@pytest.fixture
def api(kube: Kube, rollout_crd: None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


def _create(api: client.CustomObjectsApi, namespace: str, spec: dict[str, Any] = SPEC) -> None:
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout", "metadata": {"name": "m"}}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {**manifest, "spec": spec})


def _get(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    return dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m"))


def _deps(
    kube: Kube, router: FakeRouter, metrics: FakeMetrics, clock: FakeClock
) -> tuple[FakeDeps, list[str]]:
    """Fake router and Prometheus; the real RolloutObjects, its status PATCHes counted."""
    objects = RolloutObjects(kube.api_client)
    calls: list[str] = []
    objects.write_status = counting(objects.write_status, calls, "PATCH status")  # type: ignore[method-assign]
    return FakeDeps(objects, router, metrics, clock, api_client=kube.api_client), calls


def test_a_steady_tick_leaves_the_object_untouched(
    kube: Kube, api: client.CustomObjectsApi, namespace: str
) -> None:
    # Given a rollout on the real API server, started and with its first evidence written
    _create(api, namespace)
    clock = FakeClock()
    metrics = FakeMetrics([interval(T0), interval(T0 + timedelta(seconds=30))])
    deps, calls = _deps(kube, FakeRouter(), metrics, clock)
    events: list[EmitEvent] = []
    asyncio.run(tick(deps, _get(api, namespace), events.append))
    clock.advance(70)
    asyncio.run(tick(deps, _get(api, namespace), events.append))
    before = _get(api, namespace)
    assert before["status"]["phase"] == "Progressing"
    assert calls == ["PATCH status"] * 2
    # When it ticks again with nothing new
    clock.advance(30)
    asyncio.run(tick(deps, before, events.append))
    # Then no PATCH was sent and the object's resourceVersion did not move
    after = _get(api, namespace)
    assert calls == ["PATCH status"] * 2
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_unreadable_status_gets_a_condition_until_cleared(
    kube: Kube, api: client.CustomObjectsApi, namespace: str
) -> None:
    # Given a live rollout at 25% whose status holds a duration the CRD accepts but no timedelta can hold
    steps = [{"weight": 10}, {"weight": 25}, {"weight": 100}]
    _create(api, namespace, {**SPEC, "steps": steps})
    live = {
        "phase": "Progressing",
        "canaryWeight": 25,
        "stepIndex": 1,
        "baselineVersion": "v1",
        "canaryVersion": "v2",
        "stepPaused": "99999999999h",
    }
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "m", {"status": live})
    router, clock = FakeRouter(canary=25), FakeClock()
    deps, calls = _deps(kube, router, FakeMetrics(), clock)
    events: list[EmitEvent] = []
    # When the reconciler ticks twice
    asyncio.run(tick(deps, _get(api, namespace), events.append))
    asyncio.run(tick(deps, _get(api, namespace), events.append))
    # Then the server holds Reconciled=False naming the field, and the status otherwise as it was
    status = _get(api, namespace)["status"]
    cond = next(c for c in status["conditions"] if c["type"] == "Reconciled")
    assert (cond["status"], cond["reason"]) == ("False", "StatusUnreadable")
    assert "status.stepPaused" in cond["message"]
    assert {k: status[k] for k in live} == live
    # And the router was not touched, one PATCH and one Warning Event were sent
    assert (router.gets, router.sets) == (0, 0)
    assert calls == ["PATCH status"]
    assert [(e.type.value, e.reason) for e in events] == [("Warning", "StatusUnreadable")]
    # When a human clears the status, as the message says
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "m", {"status": None})
    asyncio.run(tick(deps, _get(api, namespace), events.append))
    # Then the rollout starts again from step 1, and Reconciled is True
    status = _get(api, namespace)["status"]
    cond = next(c for c in status["conditions"] if c["type"] == "Reconciled")
    assert (cond["status"], cond["reason"]) == ("True", "TickOK")
    assert (status["phase"], status["canaryWeight"]) == ("Progressing", 10)


class _TokenPrometheus(BaseHTTPRequestHandler):
    """Answers the Prometheus API with empty results when the bearer token is `accept`, else 401."""

    accept = ""
    seen: list[str] = []  # noqa: RUF012 (one server per test; reset by the fixture)

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        type(self).seen.append(auth)
        ok = auth == f"Bearer {type(self).accept}"
        kind = "matrix" if "query_range" in self.path else "vector"
        body = {"status": "success", "data": {"resultType": kind, "result": []}} if ok else {"error": "no"}
        raw = json.dumps(body).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_POST = do_GET

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def token_prometheus() -> Iterator[str]:
    _TokenPrometheus.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_rotated_token_is_used_without_a_get_per_tick(
    kube: Kube, namespace: str, token_prometheus: str
) -> None:
    core = client.CoreV1Api(kube.api_client)

    def put_token(token: str) -> None:
        data = {"token": base64.b64encode(token.encode()).decode()}
        body = client.V1Secret(metadata=client.V1ObjectMeta(name="prom"), data=data)
        if token == "old":
            core.create_namespaced_secret(namespace, body)
        else:
            core.replace_namespaced_secret("prom", namespace, body)

    # Given a Prometheus that takes the token in Secret prom, and a refresh period of an hour
    put_token("old")
    _TokenPrometheus.accept = "old"
    source = PrometheusSource.model_validate(
        {"address": token_prometheus, "bearerTokenSecretRef": {"name": "prom", "key": "token"}}
    )
    deps = Deps(api_client=kube.api_client, settings=OperatorConfig(secret_refresh=timedelta(hours=1)))
    reads: list[str] = []
    deps.objects.read_secret = counting(deps.objects.read_secret, reads, "GET secret")  # type: ignore[method-assign]
    ref = LossSeriesRef(namespace, "m", "v1", "v2")

    async def one_tick() -> object:
        metrics = await deps.metrics(namespace, source)
        assert isinstance(metrics, LimitedMetrics), metrics
        return await metrics.loss_intervals_async(ref, T0, T0 + timedelta(minutes=1), 30.0)

    # When five ticks read Prometheus
    for _ in range(5):
        got = asyncio.run(one_tick())
        assert not (isinstance(got, Problem) and got.details.get("reason") == "Unauthorized"), got
    # Then the Secret was read once
    assert reads == ["GET secret"]
    assert set(_TokenPrometheus.seen) == {"Bearer old"}
    # When the token is rotated in the Secret and in Prometheus
    put_token("new")
    _TokenPrometheus.accept = "new"
    refused = asyncio.run(one_tick())  # the cached token is refused once ...
    assert isinstance(refused, Problem)
    assert refused.details.get("reason") == "Unauthorized"
    got = asyncio.run(one_tick())  # ... and the next tick reads the Secret again
    # Then the new token is used, after one more GET
    assert not (isinstance(got, Problem) and got.details.get("reason") == "Unauthorized"), got
    assert _TokenPrometheus.seen[-1] == "Bearer new"
    assert reads == ["GET secret"] * 2
