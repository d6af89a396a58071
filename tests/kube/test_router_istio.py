"""Istio router against a real kube-apiserver with Istio's real networking.istio.io CRDs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes import client

from lossgate.adapters.routers import IstioRouter, IstioRouteRef, make_router
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind, TrafficRouter
from tests.infra.kube_fixtures import Kube

GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
pytestmark = pytest.mark.usefixtures("istio_crds")


def virtual_service(primary_route: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An /admin route (unrelated) and the named `primary` route to the scorer's v41 subset."""
    primary = primary_route or [{"destination": {"host": "scorer", "subset": "v41", "port": {"number": 80}}}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualService",
        "metadata": {"name": "scorer", "labels": {"team": "ml"}, "annotations": {"owner": "alice"}},
        "spec": {
            "hosts": ["scorer.example.com"],
            "gateways": ["mesh"],
            "http": [
                {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
                 "route": [{"destination": {"host": "admin"}, "weight": 100}]},
                {"name": "primary", "retries": {"attempts": 3}, "route": primary},
            ],
        },
    }  # fmt: skip


def create(objs: client.CustomObjectsApi, ns: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        objs.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body or virtual_service()),
    )


def get(objs: client.CustomObjectsApi, ns: str, name: str = "scorer") -> dict[str, Any]:
    return cast(dict[str, Any], objs.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name))


def ref(namespace: str, **kw: Any) -> IstioRouteRef:
    args: dict[str, Any] = dict(namespace=namespace, name="scorer", route_name="primary",
                                baseline_host="scorer", canary_host="scorer",
                                baseline_subset="v41", canary_subset="v42")  # fmt: skip
    return IstioRouteRef(**{**args, **kw})


def split(obj: dict[str, Any], index: int = 1) -> dict[str, int | None]:
    route = obj["spec"]["http"][index]["route"]
    return {
        f"{d['destination']['host']}/{d['destination'].get('subset', '')}": d.get("weight") for d in route
    }


def once(action: Callable[[], None]) -> Callable[[], None]:
    calls: list[int] = []

    def hook() -> None:
        calls.append(1)
        if len(calls) == 1:
            action()

    hook.calls = calls  # type: ignore[attr-defined]
    return hook


def test_factory_picks_the_istio_router(kube: Kube, namespace: str) -> None:
    router: TrafficRouter = make_router(ref(namespace), kube.api_client)
    assert isinstance(router, IstioRouter)


def test_set_then_get_round_trips_by_subset_and_adds_the_canary(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given a route whose only destination is the baseline subset, weight omitted (so 100)
    create(objs, namespace)
    seen: list[dict[str, int | None]] = []
    router = IstioRouter(
        ref(namespace), kube.api_client, after_read=lambda: seen.append(split(get(objs, namespace)))
    )
    assert router.get_weights() == Weights(100, 0)
    # When the canary gets 5%
    assert router.set_weights(Weights(95, 5)) == Weights(95, 5)
    # Then the canary destination was added at weight 0 first (baseline made explicit at 100), then weighted
    assert seen == [{"scorer/v41": None}, {"scorer/v41": 100, "scorer/v42": 0}]
    assert get(objs, namespace)["spec"]["http"][1]["route"] == [
        {"destination": {"host": "scorer", "subset": "v41", "port": {"number": 80}}, "weight": 95},
        {"destination": {"host": "scorer", "subset": "v42", "port": {"number": 80}}, "weight": 5},
    ]
    # And every later step and the rollback read back as written, through the v1 API
    for canary in (25, 50, 100, 0):
        assert router.set_weights(Weights(100 - canary, canary)) == Weights(100 - canary, canary)
        assert router.get_weights() == Weights(100 - canary, canary)
        assert split(get(objs, namespace)) == {"scorer/v41": 100 - canary, "scorer/v42": canary}
    assert router.version == "v1"


def test_hosts_match_short_and_fully_qualified_names(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given two Services as destinations, one written as a FQDN, routed by index instead of name
    fqdn = f"scorer-v41.{namespace}.svc.cluster.local"
    two = [
        {"destination": {"host": fqdn}, "weight": 90},
        {"destination": {"host": "scorer-v42"}, "weight": 10},
    ]
    create(objs, namespace, virtual_service(two))
    hosts = {"baseline_host": "scorer-v41", "canary_host": "scorer-v42"}
    by_host = ref(
        namespace, route_name=None, route_index=1, baseline_subset=None, canary_subset=None, **hosts
    )
    router = make_router(by_host, kube.api_client)
    # Then the short names in the reference find both
    assert router.get_weights() == Weights(90, 10)
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    assert split(get(objs, namespace)) == {f"{fqdn}/": 50, "scorer-v42/": 50}


def test_other_destinations_keep_their_weight_and_the_arms_split_the_rest(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given a route that also sends 10% to a third subset
    create(objs, namespace, virtual_service([
        {"destination": {"host": "scorer", "subset": "v41"}, "weight": 90},
        {"destination": {"host": "scorer", "subset": "legacy"}, "weight": 10}]))  # fmt: skip
    router = make_router(ref(namespace), kube.api_client)
    # When the split is 50/50
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    # Then the route still sums to 100 (Istio requires it): legacy keeps 10, the arms get 45 each
    assert split(get(objs, namespace)) == {"scorer/v41": 45, "scorer/legacy": 10, "scorer/v42": 45}
    # And at 95/5 the arms' 90 split 85/5 (90 x 5% = 4.5 rounds up); what is returned is the split
    # between the two arms actually in force: 5 of 90 is 5.6% -> 94/6
    assert router.set_weights(Weights(95, 5)) == Weights(94, 6)
    assert split(get(objs, namespace)) == {"scorer/v41": 85, "scorer/legacy": 10, "scorer/v42": 5}


def test_only_the_two_weights_change_and_a_second_set_writes_nothing(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    port = {"number": 80}
    before = create(objs, namespace, virtual_service([
        {"destination": {"host": "scorer", "subset": "v41", "port": port}, "weight": 100},
        {"destination": {"host": "scorer", "subset": "v42", "port": port}, "weight": 0}]))  # fmt: skip
    router = make_router(ref(namespace), kube.api_client)
    # When lossgate sets 75/25
    assert router.set_weights(Weights(75, 25)) == Weights(75, 25)
    # Then only those two weights differ from the object before
    after = get(objs, namespace)
    expected = copy.deepcopy(before["spec"])
    expected["http"][1]["route"][0]["weight"] = 75
    expected["http"][1]["route"][1]["weight"] = 25
    assert after["spec"] == expected
    assert (after["metadata"]["labels"], after["metadata"]["annotations"]) == (
        {"team": "ml"},
        {"owner": "alice"},
    )
    # And setting the same weights again leaves the resourceVersion unchanged
    rv = after["metadata"]["resourceVersion"]
    assert router.set_weights(Weights(75, 25)) == Weights(75, 25)
    assert get(objs, namespace)["metadata"]["resourceVersion"] == rv


def test_concurrent_edits_are_not_lost(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, other: client.CustomObjectsApi
) -> None:
    create(objs, namespace)

    # Given another client that, right after lossgate's first read, edits an unrelated route AND inserts
    # a new http route in front of `primary` (shifting its index from 1 to 2)
    def edit() -> None:
        mirror = {
            "name": "canary-header",
            "match": [{"headers": {"x-canary": {"exact": "1"}}}],
            "route": [{"destination": {"host": "scorer", "subset": "v42"}}],
        }
        other.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "scorer", [
            {"op": "replace", "path": "/spec/http/0/route/0/destination/host", "value": "admin-v2"},
            {"op": "add", "path": "/spec/http/1", "value": mirror}],
            _content_type="application/json-patch+json")  # fmt: skip

    hook = once(edit)
    router = IstioRouter(ref(namespace), kube.api_client, after_read=hook)
    # When lossgate sets 75/25
    assert router.set_weights(Weights(75, 25)) == Weights(75, 25)
    # Then its stale patch was refused, it re-read, and wrote `primary` where it now is
    assert len(hook.calls) == 3  # type: ignore[attr-defined]  # read, re-read (add canary), read (weigh)
    got = get(objs, namespace)
    assert [r["name"] for r in got["spec"]["http"]] == ["admin", "canary-header", "primary"]
    assert got["spec"]["http"][0]["route"][0]["destination"]["host"] == "admin-v2"
    assert split(got, 1) == {"scorer/v42": None}
    assert split(got, 2) == {"scorer/v41": 75, "scorer/v42": 25}


def test_error_classes(kube: Kube, namespace: str, objs: client.CustomObjectsApi) -> None:
    create(objs, namespace)
    # VirtualService missing
    got = make_router(ref(namespace, name="missing"), kube.api_client).set_weights(Weights(95, 5))
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.NOT_FOUND
    assert got.message.startswith(f"VirtualService {namespace}/missing not found")
    # Baseline destination missing from the route
    got = make_router(ref(namespace, baseline_subset="v40"), kube.api_client).get_weights()
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.BACKEND_NOT_FOUND
    assert (
        f"VirtualService {namespace}/scorer http[1] (primary) has no destination scorer subset v40"
        in got.message
    )
    assert "(destinations: scorer subset v41)" in got.message
    # Route name missing
    got = make_router(ref(namespace, route_name="nope"), kube.api_client).get_weights()
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.INVALID
    assert "has no http route named 'nope' ('admin', 'primary')" in got.message
    # Forbidden
    nobody = kube.client_for_token(kube.plane.tokens["nobody"])
    got = make_router(ref(namespace), nobody).set_weights(Weights(95, 5))
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.FORBIDDEN
    assert 'User "nobody" cannot get resource "virtualservices"' in got.message
    assert got.details["resource"] == "virtualservices.networking.istio.io/v1|v1beta1"
    cast(Any, nobody).close()
    # Nothing was written by any of these
    assert split(get(objs, namespace)) == {"scorer/v41": None}
