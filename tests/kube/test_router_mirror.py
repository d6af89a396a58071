"""The shadow phase's request mirror against a real kube-apiserver with the real CRDs (Gateway API
v1.6.3 standard channel, Istio networking): written as the API accepts it, read back, only lossgate's
mirror touched, concurrent edits kept, the weights left as they were."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes import client

from lossgate.adapters.routers import GatewayAPIRouter, IstioRouter
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind
from tests.infra.kube_fixtures import Kube
from tests.kube import test_router_gateway as gw
from tests.kube import test_router_istio as ist

SVC = {"group": "", "kind": "Service"}  # what the API server defaults a backendRef to


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done: list[bool] = []

    def hook() -> None:
        if not done:
            done.append(True)
            action()

    return hook


@pytest.mark.usefixtures("gateway_api_crds")
def test_gateway_mirror_is_a_request_mirror_filter_with_percent(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given the model route (a header filter, the baseline, another backend at weight 0)
    gw.create(objs, namespace)
    router = GatewayAPIRouter(gw.ref(namespace), kube.api_client)
    assert router.get_mirror() == 0
    # When the shadow phase mirrors 20% to the canary
    assert router.set_mirror(20) == 20
    # Then the rule gains one RequestMirror filter to the canary Service on the baseline's port,
    # stored by the API server as sent, the header filter is untouched and no weight moved
    rule = gw.get(objs, namespace)["spec"]["rules"][1]
    assert rule["filters"][0]["type"] == "RequestHeaderModifier"
    assert rule["filters"][1] == {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {**SVC, "name": "scorer-v42", "port": 80}, "percent": 20},
    }
    assert [b["name"] for b in rule["backendRefs"]] == ["scorer-v41", "shadow"]
    assert router.get_weights() == Weights(100, 0)
    # ... a second call writes nothing, and another percent updates the same filter
    rv = gw.get(objs, namespace)["metadata"]["resourceVersion"]
    assert router.set_mirror(20) == 20
    assert gw.get(objs, namespace)["metadata"]["resourceVersion"] == rv
    assert router.set_mirror(100) == 100
    assert [
        f["requestMirror"]["percent"] for f in gw.get(objs, namespace)["spec"]["rules"][1]["filters"][1:]
    ] == [100]
    # When the shadow phase ends; Then only lossgate's filter is removed
    assert router.set_mirror(0) == 0
    assert [f["type"] for f in gw.get(objs, namespace)["spec"]["rules"][1]["filters"]] == [
        "RequestHeaderModifier"
    ]


@pytest.mark.usefixtures("gateway_api_crds")
def test_gateway_mirror_reads_fractions_and_keeps_other_mirrors_and_concurrent_edits(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given a rule already mirroring 1/4 to the canary (by hand, as a fraction) and all to an audit Service
    body = gw.route()
    body["spec"]["rules"][1]["filters"] = [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 80}}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "scorer-v42", "port": 80},
                                                    "fraction": {"numerator": 1, "denominator": 4}}},
    ]  # fmt: skip
    gw.create(objs, namespace, body)

    def edit() -> None:  # someone edits the rule's matches between lossgate's read and its write
        obj = gw.get(objs, namespace)
        obj["spec"]["rules"][1]["matches"][0]["path"]["value"] = "/v2/predict"
        objs.replace_namespaced_custom_object(gw.GROUP, gw.VERSION, namespace, gw.PLURAL, "scorer", obj)

    router = GatewayAPIRouter(gw.ref(namespace), kube.api_client, after_read=_once(edit))
    # When lossgate reads it, then sets 10%
    assert router.get_mirror() == 25
    assert router.set_mirror(10) == 10
    # Then the canary's mirror is rewritten as a percent, the audit mirror and the concurrent edit are kept
    rule = gw.get(objs, namespace)["spec"]["rules"][1]
    assert rule["matches"][0]["path"]["value"] == "/v2/predict"
    assert rule["filters"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {**SVC, "name": "audit", "port": 80}}},
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {**SVC, "name": "scorer-v42", "port": 80}, "percent": 10},
        },
    ]
    # ... and 0 removes the canary's mirror only
    assert router.set_mirror(0) == 0
    assert [
        f["requestMirror"]["backendRef"]["name"]
        for f in gw.get(objs, namespace)["spec"]["rules"][1]["filters"]
    ] == ["audit"]


@pytest.mark.usefixtures("istio_crds")
def test_istio_mirror_and_mirror_percentage(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given the primary route to the scorer's v41 subset, port 80
    ist.create(objs, namespace)
    router = IstioRouter(ist.ref(namespace), kube.api_client)
    assert router.get_mirror() == 0
    # When 30% is mirrored to the canary subset
    assert router.set_mirror(30) == 30
    # Then the route mirrors to scorer subset v42 on port 80 at 30%, its retries and destinations kept
    route = ist.get(objs, namespace)["spec"]["http"][1]
    assert route["mirror"] == {"host": "scorer", "subset": "v42", "port": {"number": 80}}
    assert route["mirrorPercentage"] == {"value": 30.0}
    assert route["retries"] == {"attempts": 3}
    assert [r["destination"]["subset"] for r in route["route"]] == ["v41"]
    assert router.get_weights() == Weights(100, 0)
    # ... the unrelated route has no mirror, and 0 removes both keys
    assert "mirror" not in ist.get(objs, namespace)["spec"]["http"][0]
    assert router.set_mirror(0) == 0
    route = ist.get(objs, namespace)["spec"]["http"][1]
    assert "mirror" not in route
    assert "mirrorPercentage" not in route


@pytest.mark.usefixtures("istio_crds")
def test_istio_refuses_to_replace_someone_elses_mirror(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given the primary route already mirroring to an audit host
    body = ist.virtual_service()
    body["spec"]["http"][1]["mirror"] = {"host": "audit"}
    ist.create(objs, namespace, body)
    # When lossgate is asked to mirror to the canary
    got = IstioRouter(ist.ref(namespace), kube.api_client).set_mirror(50)
    # Then it refuses with an error naming the route's mirror and what to do, and writes nothing
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.INVALID
    assert "already mirrors to audit" in got.message
    assert ist.get(objs, namespace)["spec"]["http"][1]["mirror"] == {"host": "audit"}
