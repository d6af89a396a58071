"""The routers' read cache fed by the operator's real watches (kopf in-process, one namespace) on a
real API server: reads cost no GET, hand edits are seen through the watch, writes still go to the
API, deletions are RouteNotFound. GETs are counted on the operator's own client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client

from lossgate.adapters.routers import (
    DEPLOYMENT,
    HTTPROUTE,
    VIRTUALSERVICE,
    GatewayRouteRef,
    IstioRouteRef,
    ReplicaRef,
    make_router,
)
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind
from lossgate.reconcile.deps import Deps
from lossgate_dev.devenv.procs import wait_until
from tests.infra.kube_fixtures import Kube
from tests.kube.operator_thread import Requests, counting_client, operator_deps, operator_running

GW = ("gateway.networking.k8s.io", "v1", "httproutes")
VS = ("networking.istio.io", "v1", "virtualservices")
ROUTE_GET = "/httproutes/scorer"
JSON_PATCH = "application/json-patch+json"


def http_route(baseline: int, canary: int) -> dict[str, Any]:
    backends = [{"name": "scorer-v41", "port": 80, "weight": baseline},
                {"name": "scorer-v42", "port": 80, "weight": canary}]  # fmt: skip
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "scorer"},
        "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": backends}]},
    }


def gw_ref(namespace: str) -> GatewayRouteRef:
    return GatewayRouteRef(namespace, "scorer", 0, "scorer-v41", "scorer-v42")


def set_route_weights(objs: client.CustomObjectsApi, ns: str, baseline: int, canary: int) -> None:
    """A human's edit of both weights (a JSON patch from another client)."""
    ops = [{"op": "replace", "path": f"/spec/rules/0/backendRefs/{i}/weight", "value": w}
           for i, w in enumerate((baseline, canary))]  # fmt: skip
    objs.patch_namespaced_custom_object(*GW[:2], ns, GW[2], "scorer", ops, _content_type=JSON_PATCH)


def route_weights(objs: client.CustomObjectsApi, ns: str) -> list[int]:
    got = cast(dict[str, Any], objs.get_namespaced_custom_object(*GW[:2], ns, GW[2], "scorer"))
    return [b["weight"] for b in got["spec"]["rules"][0]["backendRefs"]]


def cached(deps: Deps, kind: str, ns: str, name: str, timeout: float = 10) -> None:
    wait_until(lambda: deps.routes.lookup(kind, ns, name) is not None, timeout, f"{kind} {ns}/{name} cached")


def seen_within(check: Any, timeout: float) -> float:
    """Seconds until check() is true (polled every 50 ms); fails after `timeout`."""
    t0 = time.monotonic()
    wait_until(check, timeout, "the cached read to change", interval=0.05)
    return time.monotonic() - t0


@pytest.fixture
def operator(kube: Kube, namespace: str) -> Iterator[tuple[Deps, Requests]]:
    """The operator's handlers watching the test's namespace, with a Deps whose requests are counted."""
    p = kube.plane
    api, requests = counting_client(p.server_url, p.ca_cert, p.admin_token)
    deps = operator_deps(api, [namespace])
    with operator_running(deps, p.server_url, p.ca_cert, p.admin_token, [namespace]):
        yield deps, requests


@pytest.mark.usefixtures("gateway_api_crds")
def test_reads_come_from_the_watch_and_see_a_hand_edit_without_a_get(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, other: client.CustomObjectsApi,
    operator: tuple[Deps, Requests],
) -> None:  # fmt: skip
    deps, requests = operator
    objs.create_namespaced_custom_object(*GW[:2], namespace, GW[2], http_route(90, 10))
    # Given today's behaviour (a router without the cache): one GET per read
    uncached = make_router(gw_ref(namespace), deps.api_client)
    assert [uncached.get_weights() for _ in range(5)] == [Weights(90, 10)] * 5
    assert requests.count("GET", ROUTE_GET) == 5
    # When the operator's watch has the route
    cached(deps, HTTPROUTE, namespace, "scorer")
    router = deps.router(gw_ref(namespace))
    # Then five ticks' reads cost no GET at all
    assert [router.get_weights() for _ in range(5)] == [Weights(90, 10)] * 5
    assert requests.count("GET", ROUTE_GET) == 5
    # When someone else edits the weights by hand
    set_route_weights(other, namespace, 70, 30)
    # Then the cached read shows the edit within a few seconds, still without a GET
    took = seen_within(lambda: router.get_weights() == Weights(70, 30), timeout=5)
    assert took < 5
    assert requests.count("GET", ROUTE_GET) == 5
    print(f"hand edit seen through the watch after {took * 1000:.0f} ms; GETs: 5 uncached reads -> 5, "
          "then 5 cached reads + the edit -> 0 more")  # fmt: skip


@pytest.mark.usefixtures("gateway_api_crds")
def test_writes_still_read_the_api_and_update_the_cache(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, operator: tuple[Deps, Requests]
) -> None:
    deps, requests = operator
    objs.create_namespaced_custom_object(*GW[:2], namespace, GW[2], http_route(90, 10))
    cached(deps, HTTPROUTE, namespace, "scorer")
    # Given a cache that (wrongly) says the split is already 50/50
    stale = cast(dict[str, Any], objs.get_namespaced_custom_object(*GW[:2], namespace, GW[2], "scorer"))
    stale["metadata"]["resourceVersion"] = "opaque"  # not an integer: the next arrival replaces it
    for b in stale["spec"]["rules"][0]["backendRefs"]:
        b["weight"] = 50
    deps.routes.observe(HTTPROUTE, "MODIFIED", stale)
    router = deps.router(gw_ref(namespace))
    assert router.get_weights() == Weights(50, 50)
    before = requests.count("GET", ROUTE_GET)
    # When the rollout sets 50/50
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    # Then the write did not trust the cache: it read the route (one GET) and patched it (one PATCH)
    assert requests.count("GET", ROUTE_GET) == before + 1
    assert requests.count("PATCH", ROUTE_GET) == 1
    assert route_weights(objs, namespace) == [50, 50]
    # And what it wrote is what the cache serves now, without another GET
    got = deps.routes.lookup(HTTPROUTE, namespace, "scorer")
    assert got is not None
    assert got["metadata"]["resourceVersion"].isdigit()
    assert router.get_weights() == Weights(50, 50)
    assert requests.count("GET", ROUTE_GET) == before + 1


@pytest.mark.usefixtures("gateway_api_crds")
def test_a_deleted_route_is_route_not_found(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, operator: tuple[Deps, Requests]
) -> None:
    deps, requests = operator
    objs.create_namespaced_custom_object(*GW[:2], namespace, GW[2], http_route(90, 10))
    cached(deps, HTTPROUTE, namespace, "scorer")
    router = deps.router(gw_ref(namespace))
    assert router.get_weights() == Weights(90, 10)
    # When the route is deleted
    objs.delete_namespaced_custom_object(*GW[:2], namespace, GW[2], "scorer")
    # Then the watch's DELETED event empties the cache, and the fallback GET says RouteNotFound
    wait_until(lambda: deps.routes.lookup(HTTPROUTE, namespace, "scorer") is None, 5, "DELETED seen")
    before = requests.count("GET", ROUTE_GET)
    got = router.get_weights()
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.NOT_FOUND
    assert got.message == (
        f"HTTPRoute {namespace}/scorer not found. Create it, or fix the name in spec.trafficRouting."
    )
    assert requests.count("GET", ROUTE_GET) == before + 1


@pytest.mark.usefixtures("gateway_api_crds")
def test_objects_outside_the_watched_namespaces_are_read_from_the_api(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, operator: tuple[Deps, Requests]
) -> None:
    deps, requests = operator
    core = client.CoreV1Api(kube.api_client)
    elsewhere = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=elsewhere)))
    try:
        # Given a route in a namespace the operator does not watch, and one in the one it does
        objs.create_namespaced_custom_object(*GW[:2], elsewhere, GW[2], http_route(80, 20))
        objs.create_namespaced_custom_object(*GW[:2], namespace, GW[2], http_route(90, 10))
        cached(deps, HTTPROUTE, namespace, "scorer")  # the watch is live and has listed
        # Then the other one is not cached, and each read of it is a GET with the right answer
        assert deps.routes.lookup(HTTPROUTE, elsewhere, "scorer") is None
        router = deps.router(gw_ref(elsewhere))
        assert [router.get_weights() for _ in range(3)] == [Weights(80, 20)] * 3
        assert requests.count("GET", f"/namespaces/{elsewhere}{ROUTE_GET}") == 3
        assert deps.routes.lookup(HTTPROUTE, elsewhere, "scorer") is None
    finally:
        core.delete_namespace(elsewhere)


def deployment(name: str, version: str, replicas: int) -> client.V1Deployment:
    labels = {"app": "scorer", "version": version}
    container = client.V1Container(name="model", image="registry.invalid/m:1")
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(containers=[container])
            ),
        ),
    )


def test_replica_reads_come_from_the_watched_deployments(
    kube: Kube, namespace: str, operator: tuple[Deps, Requests]
) -> None:
    deps, requests = operator
    apps: Any = client.AppsV1Api(kube.api_client)
    apps.create_namespaced_deployment(namespace, deployment("scorer-v41", "v41", 3))
    apps.create_namespaced_deployment(namespace, deployment("scorer-v42", "v42", 1))
    for name in ("scorer-v41", "scorer-v42"):
        cached(deps, DEPLOYMENT, namespace, name)
    router = deps.router(ReplicaRef(namespace, "scorer-v41", "scorer-v42"))
    # Then the split is the replica ratio, read without a GET
    assert router.get_weights() == Weights(75, 25)
    assert requests.count("GET", "/scale") == 0
    # When someone scales the canary to 3 by hand, Then the read shows 50/50 within seconds, no GET
    apps.patch_namespaced_deployment_scale("scorer-v42", namespace, {"spec": {"replicas": 3}})
    seen_within(lambda: router.get_weights() == Weights(50, 50), timeout=5)
    assert requests.count("GET", "/scale") == 0
    # And a write reads and writes the API (/scale), then the cache serves what it wrote
    assert router.set_weights(Weights(100, 0)) == Weights(100, 0)
    assert requests.count("GET", "/scale") == 2
    assert apps.read_namespaced_deployment("scorer-v42", namespace).spec.replicas == 0
    assert router.get_weights() == Weights(100, 0)
    assert requests.count("GET", "/scale") == 2


@pytest.mark.usefixtures("istio_crds")
def test_virtual_service_reads_come_from_the_watch(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, operator: tuple[Deps, Requests]
) -> None:
    deps, requests = operator
    arms = (("v41", 80), ("v42", 20))
    route = [{"destination": {"host": "scorer", "subset": s}, "weight": w} for s, w in arms]
    body = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "scorer"},
            "spec": {"hosts": ["scorer"], "http": [{"name": "primary", "route": route}]}}  # fmt: skip
    objs.create_namespaced_custom_object(*VS[:2], namespace, VS[2], body)
    cached(deps, VIRTUALSERVICE, namespace, "scorer")
    ref = IstioRouteRef(namespace, "scorer", "scorer", "scorer", route_name="primary",
                        baseline_subset="v41", canary_subset="v42")  # fmt: skip
    router = deps.router(ref)
    assert router.get_weights() == Weights(80, 20)
    # When the weights are edited by hand, Then the cached read follows, with no GET
    ops = [{"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 40},
           {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 60}]  # fmt: skip
    objs.patch_namespaced_custom_object(*VS[:2], namespace, VS[2], "scorer", ops, _content_type=JSON_PATCH)
    seen_within(lambda: router.get_weights() == Weights(60, 40), timeout=5)
    assert requests.count("GET", "/virtualservices/scorer") == 0
