"""Gateway API router against a real kube-apiserver with the real standard-channel HTTPRoute CRD."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes import client

from lossgate.adapters.routers import GatewayAPIRouter, GatewayRouteRef, make_router
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind, TrafficRouter
from lossgate_dev.devenv.procs import free_port, wait_until
from tests.infra.kube_fixtures import Kube

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
pytestmark = pytest.mark.usefixtures("gateway_api_crds")


def route(name: str = "scorer") -> dict[str, Any]:
    """Two rules: /admin (unrelated) and the model route (baseline + a shadow backend at weight 0)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": {"team": "ml"}, "annotations": {"owner": "alice"}},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": ["scorer.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "backendRefs": [{"name": "admin", "port": 8080, "weight": 3}],
                },
                {
                    "name": "predict",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1/predict"}}],
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"set": [{"name": "x-model", "value": "scorer"}]}}],
                    "backendRefs": [{"name": "scorer-v41", "port": 80},
                                    {"name": "shadow", "port": 80, "weight": 0}],
                },
            ],
        },
    }  # fmt: skip


def create(
    objs: client.CustomObjectsApi, namespace: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body or route()),
    )


def get(objs: client.CustomObjectsApi, namespace: str, name: str = "scorer") -> dict[str, Any]:
    return cast(dict[str, Any], objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def ref(namespace: str, **kw: Any) -> GatewayRouteRef:
    args: dict[str, Any] = dict(namespace=namespace, name="scorer", rule_index=1,
                                baseline_service="scorer-v41", canary_service="scorer-v42")  # fmt: skip
    return GatewayRouteRef(**{**args, **kw})


def weights_by_name(obj: dict[str, Any], rule: int = 1) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in obj["spec"]["rules"][rule]["backendRefs"]}


def test_factory_picks_the_gateway_router(kube: Kube, namespace: str) -> None:
    router: TrafficRouter = make_router(ref(namespace), kube.api_client)
    assert isinstance(router, GatewayAPIRouter)


def test_set_then_get_round_trips_and_adds_the_canary_at_weight_zero_first(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given a route whose rule has the baseline (weight omitted -> defaulted to 1) and no canary
    create(objs, namespace)
    seen: list[dict[str, int]] = []
    router = GatewayAPIRouter(ref(namespace), kube.api_client, after_read=lambda: seen.append(
        weights_by_name(get(objs, namespace))))  # fmt: skip
    assert router.get_weights() == Weights(100, 0)
    # When the canary gets 5%
    assert router.set_weights(Weights(95, 5)) == Weights(95, 5)
    # Then the canary backendRef was appended at weight 0 first, then weighted
    assert seen == [{"scorer-v41": 1, "shadow": 0}, {"scorer-v41": 1, "shadow": 0, "scorer-v42": 0}]
    got = get(objs, namespace)
    assert got["spec"]["rules"][1]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "scorer-v41", "port": 80, "weight": 95},
        {"group": "", "kind": "Service", "name": "shadow", "port": 80, "weight": 0},
        {"group": "", "kind": "Service", "name": "scorer-v42", "port": 80, "weight": 5},
    ]
    # And every step of a rollout, then the rollback, reads back as written
    for canary in (25, 50, 100, 0):
        assert router.set_weights(Weights(100 - canary, canary)) == Weights(100 - canary, canary)
        assert router.get_weights() == Weights(100 - canary, canary)
        assert weights_by_name(get(objs, namespace)) == {
            "scorer-v41": 100 - canary,
            "shadow": 0,
            "scorer-v42": canary,
        }


def test_only_the_two_weights_change(kube: Kube, namespace: str, objs: client.CustomObjectsApi) -> None:
    # Given a route that already has both backends
    body = route()
    body["spec"]["rules"][1]["backendRefs"].append({"name": "scorer-v42", "port": 80, "weight": 0})
    before = create(objs, namespace, body)
    # When lossgate sets 75/25
    assert make_router(ref(namespace), kube.api_client).set_weights(Weights(75, 25)) == Weights(75, 25)
    # Then the object equals the one before except for exactly those two weights
    after = get(objs, namespace)
    expected = copy.deepcopy(before["spec"])
    expected["rules"][1]["backendRefs"][0]["weight"] = 75
    expected["rules"][1]["backendRefs"][2]["weight"] = 25
    assert after["spec"] == expected
    assert after["metadata"]["labels"] == {"team": "ml"}
    assert after["metadata"]["annotations"] == {"owner": "alice"}
    assert after["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "admin", "port": 8080, "weight": 3}
    ]
    # And lossgate's write is attributed to field manager "lossgate"
    assert "lossgate" in {m["manager"] for m in after["metadata"]["managedFields"]}


def test_second_identical_set_writes_nothing(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    create(objs, namespace)
    router = make_router(ref(namespace), kube.api_client)
    # Given weights already set
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    rv = get(objs, namespace)["metadata"]["resourceVersion"]
    # When the same weights are set again (twice)
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    # Then the object was not written: its resourceVersion is unchanged
    assert get(objs, namespace)["metadata"]["resourceVersion"] == rv


def once(action: Callable[[], None]) -> Callable[[], None]:
    calls: list[int] = []

    def hook() -> None:
        calls.append(1)
        if len(calls) == 1:
            action()

    hook.calls = calls  # type: ignore[attr-defined]
    return hook


def test_concurrent_edit_elsewhere_in_the_route_is_kept(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, other: client.CustomObjectsApi
) -> None:
    create(objs, namespace)

    # Given another client that, between lossgate's read and its write, relabels the route and
    # reweights the /admin rule
    def edit() -> None:
        other.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "scorer", [
            {"op": "add", "path": "/metadata/labels/tier", "value": "gold"},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 7}],
            _content_type="application/json-patch+json")  # fmt: skip

    hook = once(edit)
    router = GatewayAPIRouter(ref(namespace), kube.api_client, after_read=hook)
    # When lossgate sets 75/25 (adding the canary)
    assert router.set_weights(Weights(75, 25)) == Weights(75, 25)
    # Then both edits are in the route
    got = get(objs, namespace)
    assert got["metadata"]["labels"] == {"team": "ml", "tier": "gold"}
    assert got["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7
    assert weights_by_name(got) == {"scorer-v41": 75, "shadow": 0, "scorer-v42": 25}
    # And no retry was needed: the patch touched only lossgate's paths (2 passes: add canary, weigh it)
    assert len(hook.calls) == 2  # type: ignore[attr-defined]


def test_concurrent_edit_of_the_same_backends_is_retried_not_lost(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, other: client.CustomObjectsApi
) -> None:
    body = route()
    body["spec"]["rules"][1]["backendRefs"].append({"name": "scorer-v42", "port": 80, "weight": 0})
    create(objs, namespace, body)

    # Given another client that inserts a backend at the head of the same rule after lossgate read it
    # (so every index lossgate computed is now off by one)
    def edit() -> None:
        fallback = {"name": "fallback", "port": 80, "weight": 0}
        other.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "scorer", [
            {"op": "add", "path": "/spec/rules/1/backendRefs/0", "value": fallback}],
            _content_type="application/json-patch+json")  # fmt: skip

    hook = once(edit)
    router = GatewayAPIRouter(ref(namespace), kube.api_client, after_read=hook)
    # When lossgate sets 50/50
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    # Then its first patch failed its `test`, it re-read once and wrote the right backends
    assert len(hook.calls) == 2  # type: ignore[attr-defined]
    got = get(objs, namespace)
    assert [b["name"] for b in got["spec"]["rules"][1]["backendRefs"]] == [
        "fallback",
        "scorer-v41",
        "shadow",
        "scorer-v42",
    ]
    assert weights_by_name(got) == {"fallback": 0, "scorer-v41": 50, "shadow": 0, "scorer-v42": 50}


def test_a_route_that_keeps_changing_gives_conflict_after_bounded_retries(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi, other: client.CustomObjectsApi
) -> None:
    create(objs, namespace)
    flips: list[int] = []

    # Given another writer that changes the rule's backends after every read lossgate makes
    def always() -> None:
        flips.append(1)
        other.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "scorer", [
            {"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": len(flips)}],
            _content_type="application/json-patch+json")  # fmt: skip

    router = GatewayAPIRouter(ref(namespace), kube.api_client, after_read=always)
    # When lossgate sets weights
    got = router.set_weights(Weights(95, 5))
    # Then it gives up with Conflict after 3 refused patches (4 reads), naming the route
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.CONFLICT
    assert f"HTTPRoute {namespace}/scorer" in got.message
    assert "3 times" in got.message
    assert len(flips) == 4
    assert weights_by_name(get(objs, namespace)) == {"scorer-v41": 1, "shadow": 4}


def test_route_not_found(kube: Kube, namespace: str) -> None:
    router = make_router(ref(namespace, name="missing"), kube.api_client)
    for got in (router.get_weights(), router.set_weights(Weights(95, 5))):
        assert isinstance(got, Problem)
        assert got.kind == RouterErrorKind.NOT_FOUND
        assert got.message.startswith(f"HTTPRoute {namespace}/missing not found")
        assert got.details == {"kind": "HTTPRoute", "namespace": namespace, "name": "missing"}


def test_baseline_backend_not_in_the_rule(kube: Kube, namespace: str, objs: client.CustomObjectsApi) -> None:
    create(objs, namespace)
    # Given a reference to rule 0 (/admin), which has no backend for the baseline
    router = make_router(ref(namespace, rule_index=0), kube.api_client)
    for got in (router.get_weights(), router.set_weights(Weights(95, 5))):
        assert isinstance(got, Problem)
        assert got.kind == RouterErrorKind.BACKEND_NOT_FOUND
        assert (
            f"HTTPRoute {namespace}/scorer rule 0 has no backendRef to the baseline Service scorer-v41"
            in got.message
        )
        assert "backendRefs: admin:8080" in got.message
    # And a port that no backendRef has is the same error
    got = make_router(ref(namespace, port=9000), kube.api_client).get_weights()
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.BACKEND_NOT_FOUND


def test_rule_index_out_of_range_is_invalid(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    create(objs, namespace)
    got = make_router(ref(namespace, rule_index=5), kube.api_client).set_weights(Weights(95, 5))
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.INVALID
    assert f"HTTPRoute {namespace}/scorer has 2 rule(s), so ruleIndex 5 is out of range" in got.message


def test_forbidden_without_rbac_then_patch_denied_with_read_only_rbac(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    create(objs, namespace)
    nobody = kube.client_for_token(kube.plane.tokens["nobody"])
    router = make_router(ref(namespace), nobody)
    # Given a user without any role: reading is forbidden
    got = router.get_weights()
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.FORBIDDEN
    assert f"forbidden to get HTTPRoute {namespace}/scorer" in got.message
    assert 'User "nobody" cannot get resource "httproutes"' in got.message
    assert got.details["verb"] == "get"
    # Given read-only access: reading works, writing is forbidden and says which verb to grant
    rbac: Any = client.RbacAuthorizationV1Api(kube.api_client)  # plain dict bodies
    role = {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "routes-ro"}, "rules": [role]})
    subject = {"kind": "User", "name": "nobody", "apiGroup": "rbac.authorization.k8s.io"}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "routes-ro"}
    rbac.create_namespaced_role_binding(
        namespace, {"metadata": {"name": "routes-ro"}, "roleRef": role_ref, "subjects": [subject]}
    )
    wait_until(lambda: router.get_weights() == Weights(100, 0), 10, "read-only grant")
    got = router.set_weights(Weights(95, 5))
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.FORBIDDEN
    assert "Grant the operator's ServiceAccount 'patch'" in got.message
    assert get(objs, namespace)["spec"]["rules"][1]["backendRefs"][0]["weight"] == 1
    cast(Any, nobody).close()


def test_a_write_the_api_server_refuses_is_invalid_not_conflict(
    kube: Kube, namespace: str, objs: client.CustomObjectsApi
) -> None:
    # Given a rule already at the CRD's limit of 16 backendRefs, none of them the canary
    body = route()
    body["spec"]["rules"][1]["backendRefs"] += [
        {"name": f"extra-{i}", "port": 80, "weight": 0} for i in range(14)
    ]
    create(objs, namespace, body)
    reads: list[int] = []
    router = GatewayAPIRouter(ref(namespace), kube.api_client, after_read=lambda: reads.append(1))
    # When lossgate must append the canary backendRef (a 17th)
    got = router.set_weights(Weights(95, 5))
    # Then the schema refuses it; the object did not change, so it is Invalid with the server's reason
    # (after one re-read, not 3 retries)
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.INVALID
    assert f"the API server refused lossgate's patch of HTTPRoute {namespace}/scorer" in got.message
    assert "must have at most 16 items" in got.message
    assert len(reads) == 1


def test_an_unreachable_api_server_is_unavailable(kube: Kube, namespace: str) -> None:
    # Given an API client pointed at a loopback port where nothing listens
    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{free_port()}"
    cfg.ssl_ca_cert = str(kube.plane.ca_cert)
    cfg.retries = 0
    api = client.ApiClient(cfg)
    # Then both port methods return Unavailable (never raise) naming the route
    for got in (
        make_router(ref(namespace), api).get_weights(),
        make_router(ref(namespace), api).set_weights(Weights(95, 5)),
    ):
        assert isinstance(got, Problem)
        assert got.kind == RouterErrorKind.UNAVAILABLE
        assert "the API server is unreachable" in got.message
        assert f"HTTPRoute {namespace}/scorer" in got.message
    cast(Any, api).close()
