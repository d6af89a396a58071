"""The chart in the real API server: every rendered object is accepted, and with the chart's
ServiceAccount token the RBAC authorizer allows exactly what the operator does and refuses a sample
of what it must not (SelfSubjectAccessReview sent with that token), cluster-wide and namespace-scoped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from lossgate.adapters.routers import DEPLOYMENT, HTTPROUTE, VIRTUALSERVICE, ReplicaRef
from lossgate.core.evidence import Weights
from lossgate.reconcile import route_cache
from lossgate_dev.devenv.procs import wait_until
from tests.helm.install import DRY_RUN, NOT_APPLIED, Installed, create_namespace, installed
from tests.infra.kube_fixtures import Kube
from tests.kube.operator_thread import counting_client, operator_deps, operator_running
from tests.kube.test_route_cache import GW as GW_ROUTE
from tests.kube.test_route_cache import cached, deployment, gw_ref, http_route

pytestmark = pytest.mark.usefixtures("kopf_peering_crds")

LG, GW, ISTIO, APPS, CRD = (
    "lossgate.io",
    "gateway.networking.k8s.io",
    "networking.istio.io",
    "apps",
    "apiextensions.k8s.io",
)

# (verb, resource, group, subresource): what the operator does in a namespace it watches.
NEEDED = [
    ("get", "modelrollouts", LG, ""),
    ("list", "modelrollouts", LG, ""),
    ("watch", "modelrollouts", LG, ""),
    ("patch", "modelrollouts", LG, ""),  # kopf's finalizer + annotations; removing handled annotations
    ("patch", "modelrollouts", LG, "status"),  # the one status write per tick
    ("update", "modelrollouts", LG, "finalizers"),
    ("create", "events", "", ""),  # kopf.event for every decision
    ("get", "httproutes", GW, ""),
    ("patch", "httproutes", GW, ""),
    ("list", "httproutes", GW, ""),  # the routers' read cache: kopf watches the route kinds
    ("watch", "httproutes", GW, ""),
    ("get", "virtualservices", ISTIO, ""),
    ("patch", "virtualservices", ISTIO, ""),
    ("list", "virtualservices", ISTIO, ""),
    ("watch", "virtualservices", ISTIO, ""),
    ("get", "deployments", APPS, ""),
    ("patch", "deployments", APPS, ""),
    ("list", "deployments", APPS, ""),  # the replica router's read cache
    ("watch", "deployments", APPS, ""),
    ("get", "deployments", APPS, "scale"),
    ("patch", "deployments", APPS, "scale"),
    ("get", "services", "", ""),
    ("list", "pods", "", ""),  # the canary Deployment's Ready pods: which version they serve
]
# A sample of what it must never do in those namespaces.
FORBIDDEN = [
    ("create", "modelrollouts", LG, ""),
    ("delete", "modelrollouts", LG, ""),
    ("update", "modelrollouts", LG, ""),
    ("list", "secrets", "", ""),
    ("watch", "secrets", "", ""),
    ("create", "secrets", "", ""),
    ("create", "deployments", APPS, ""),
    ("delete", "deployments", APPS, ""),
    ("update", "deployments", APPS, ""),
    ("create", "httproutes", GW, ""),
    ("delete", "httproutes", GW, ""),
    ("update", "httproutes", GW, ""),
    ("delete", "virtualservices", ISTIO, ""),
    ("create", "virtualservices", ISTIO, ""),
    ("update", "virtualservices", ISTIO, ""),
    ("list", "deployments", APPS, "scale"),  # watching the Deployments is enough: /scale is not listed
    ("list", "replicasets", APPS, ""),
    ("watch", "services", "", ""),
    ("patch", "services", "", ""),
    ("delete", "services", "", ""),
    ("create", "pods", "", ""),
    ("get", "pods", "", ""),
    ("watch", "pods", "", ""),
    ("patch", "pods", "", ""),
    ("delete", "pods", "", ""),
    ("create", "pods", "", "exec"),
    ("get", "configmaps", "", ""),
    ("patch", "events", "", ""),
    ("delete", "events", "", ""),
    ("create", "rolebindings", "rbac.authorization.k8s.io", ""),
    ("create", "serviceaccounts", "", "token"),
]
CLUSTER_FORBIDDEN = [
    ("patch", "customresourcedefinitions", CRD, ""),
    ("delete", "customresourcedefinitions", CRD, ""),
    ("list", "namespaces", "", ""),
    ("create", "clusterrolebindings", "rbac.authorization.k8s.io", ""),
    ("escalate", "clusterroles", "rbac.authorization.k8s.io", ""),
    ("impersonate", "users", "", ""),
    ("list", "nodes", "", ""),
    ("list", "secrets", "", ""),
]


def allowed(inst: Installed, checks: list[tuple[str, str, str, str]], namespace: str) -> dict[str, bool]:
    return {
        f"{verb} {res}{'/' + sub if sub else ''}.{grp or 'core'} in {namespace or '(cluster)'}": inst.can(
            verb, res, namespace, grp, sub
        )
        for verb, res, grp, sub in checks
    }


@pytest.fixture
def other_namespaces(kube: Kube) -> Iterator[list[str]]:
    names = [create_namespace(kube, p) for p in ("watched", "other")]
    yield names
    for n in names:
        client.CoreV1Api(kube.api_client).delete_namespace(n)


def test_every_rendered_object_is_accepted(kube: Kube, namespace: str, other_namespaces: list[str]) -> None:
    # Given the chart with every optional object on (namespace-scoped, HA, NetworkPolicy, Secrets by name)
    watched, _ = other_namespaces
    values = {
        "watchNamespaces": [watched],
        "replicas": 2,
        "peering": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "prometheus": {"authSecretNames": ["prom-token"]},
    }
    # When it is applied to the real API server (installed() asserts kubectl's success per object)
    with installed(kube, namespace, values) as inst:
        kinds = sorted({d["kind"] for d in inst.docs} - NOT_APPLIED - DRY_RUN)
        # Then each object is there as rendered
        for d in inst.docs:
            if d["kind"] in NOT_APPLIED | DRY_RUN:
                continue
            ns = ["-n", d["metadata"]["namespace"]] if "namespace" in d["metadata"] else []
            got = kube.kubectl("get", d["kind"], d["metadata"]["name"], *ns, "-o", "name")
            assert got.returncode == 0, got.stderr
        assert kinds == [
            "ClusterRole",
            "ClusterRoleBinding",
            "KopfPeering",
            "NetworkPolicy",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    # And the cluster-wide default values are accepted as well (its ClusterRole and bindings included)
    with installed(kube, namespace, {}) as inst:
        assert {d["kind"] for d in inst.docs} >= {
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
        }


@pytest.mark.usefixtures("gateway_api_crds", "istio_crds")
def test_cluster_wide_rbac_allows_what_the_operator_needs_and_nothing_else(
    kube: Kube, namespace: str, other_namespaces: list[str]
) -> None:
    # Given the chart installed with the default values (cluster-wide)
    with installed(kube, namespace, {}) as inst:
        for ns in other_namespaces:
            # Then in any namespace the ServiceAccount can do each thing the operator does
            can = allowed(inst, NEEDED, ns)
            assert all(can.values()), [k for k, v in can.items() if not v]
            # And none of the forbidden sample; and no Secret at all (no authSecretNames given)
            cannot = allowed(inst, [*FORBIDDEN, ("get", "secrets", "", "")], ns)
            assert not any(cannot.values()), [k for k, v in cannot.items() if v]
        # And cluster-wide it may list and watch CRDs (kopf's resource discovery) and nothing more
        assert inst.can("list", "customresourcedefinitions", group=CRD)
        assert inst.can("watch", "customresourcedefinitions", group=CRD)
        assert inst.can("list", "modelrollouts", group=LG)  # kopf's cluster-wide watch
        cannot = allowed(inst, CLUSTER_FORBIDDEN, "")
        assert not any(cannot.values()), [k for k, v in cannot.items() if v]
        # And no peering access without HA
        assert not inst.can("list", "clusterkopfpeerings", group="kopf.dev")


def test_cluster_wide_secrets_only_by_name(kube: Kube, namespace: str, other_namespaces: list[str]) -> None:
    watched, other = other_namespaces
    # Given Prometheus credentials named as values, in one namespace
    values = {"prometheus": {"authSecretNames": ["prom-token"], "authSecretNamespaces": [watched]}}
    with installed(kube, namespace, values) as inst:
        # Then the ServiceAccount may get that Secret there, and nothing else about Secrets
        assert inst.can("get", "secrets", watched, name="prom-token")
        assert not inst.can("get", "secrets", watched, name="db-password")
        assert not inst.can("get", "secrets", watched)  # unnamed get = any Secret
        assert not inst.can("list", "secrets", watched)
        assert not inst.can("get", "secrets", other, name="prom-token")
    # Given only the name: that name in every namespace, still nothing else
    with installed(kube, namespace, {"prometheus": {"authSecretNames": ["prom-token"]}}) as inst:
        assert inst.can("get", "secrets", other, name="prom-token")
        assert not inst.can("get", "secrets", other, name="db-password")
        assert not inst.can("list", "secrets", other)


def test_cluster_wide_ha_adds_cluster_peering(kube: Kube, namespace: str) -> None:
    with installed(kube, namespace, {"replicas": 2, "peering": {"enabled": True}}) as inst:
        for verb in ("get", "list", "watch", "patch"):
            assert inst.can(verb, "clusterkopfpeerings", group="kopf.dev"), verb
        assert not inst.can("delete", "clusterkopfpeerings", group="kopf.dev")
        assert not inst.can("list", "kopfpeerings", "default", group="kopf.dev")


@pytest.mark.usefixtures("gateway_api_crds", "istio_crds")
def test_namespace_scoped_rbac_stays_in_the_watched_namespaces(
    kube: Kube, namespace: str, other_namespaces: list[str]
) -> None:
    watched, other = other_namespaces
    # Given the chart installed watching one namespace, with HA
    values = {"watchNamespaces": [watched], "replicas": 2, "peering": {"enabled": True}}
    with installed(kube, namespace, values) as inst:
        # Then in the watched namespace it can do each thing the operator does, Secrets get included
        can = allowed(inst, [*NEEDED, ("get", "secrets", "", "")], watched)
        assert all(can.values()), [k for k, v in can.items() if not v]
        for verb in ("get", "list", "watch", "patch"):
            assert inst.can(verb, "kopfpeerings", watched, group="kopf.dev"), verb
        # And none of the forbidden sample there
        cannot = allowed(inst, FORBIDDEN, watched)
        assert not any(cannot.values()), [k for k, v in cannot.items() if v]
        # And nothing at all in another namespace, nor in its own release namespace
        for ns in (other, namespace):
            cannot = allowed(inst, [*NEEDED, ("get", "secrets", "", "")], ns)
            assert not any(cannot.values()), [k for k, v in cannot.items() if v]
        # And nothing cluster-wide but reading CRDs and namespaces (kopf's namespace observer):
        # no cluster-wide watch of rollouts, no peering there
        assert inst.can("watch", "customresourcedefinitions", group=CRD)
        assert inst.can("list", "namespaces")
        assert inst.can("watch", "namespaces")
        assert not inst.can("get", "namespaces", name=other)
        assert not inst.can("patch", "namespaces", name=other)
        assert not inst.can("list", "modelrollouts", group=LG)
        assert not inst.can("list", "clusterkopfpeerings", group="kopf.dev")
        cannot = allowed(inst, [c for c in CLUSTER_FORBIDDEN if c[1] != "namespaces"], "")
        assert not any(cannot.values()), [k for k, v in cannot.items() if v]


@pytest.mark.usefixtures("gateway_api_crds")
def test_the_route_cache_watches_with_the_charts_rbac_and_only_what_it_may_watch(
    kube: Kube, namespace: str, other_namespaces: list[str]
) -> None:
    watched, _ = other_namespaces
    objs = client.CustomObjectsApi(kube.api_client)
    objs.create_namespaced_custom_object(*GW_ROUTE[:2], watched, GW_ROUTE[2], http_route(90, 10))
    apps: Any = client.AppsV1Api(kube.api_client)
    apps.create_namespaced_deployment(watched, deployment("scorer-v41", "v41", 3))
    apps.create_namespaced_deployment(watched, deployment("scorer-v42", "v42", 1))
    server, ca = kube.plane.server_url, kube.plane.ca_cert
    # Given the chart watching one namespace, and the operator's handlers running as its ServiceAccount
    with installed(kube, namespace, {"watchNamespaces": [watched]}) as inst:
        api, requests = counting_client(server, ca, inst.token)
        assert route_cache.watchable(api, [watched]) == {HTTPROUTE, VIRTUALSERVICE, DEPLOYMENT}
        deps = operator_deps(api, [watched])
        with operator_running(deps, server, ca, inst.token, [watched]):
            # Then its watches fill the cache and the routers read it without a GET
            for kind, name in ((HTTPROUTE, "scorer"), (DEPLOYMENT, "scorer-v41"), (DEPLOYMENT, "scorer-v42")):
                cached(deps, kind, watched, name)
            replicas = ReplicaRef(watched, "scorer-v41", "scorer-v42")
            assert deps.router(gw_ref(watched)).get_weights() == Weights(90, 10)
            assert deps.router(replicas).get_weights() == Weights(75, 25)
            assert [r for r in requests.seen if "selfsubjectaccessreviews" not in r[1]] == []
            # And a write goes through with the chart's get + patch
            assert deps.router(gw_ref(watched)).set_weights(Weights(50, 50)) == Weights(50, 50)
        # Given RBAC without list/watch on HTTPRoutes (a chart from before the cache, or a custom Role)
        role: Any = client.RbacAuthorizationV1Api(kube.api_client)
        (name,) = [d["metadata"]["name"] for d in inst.docs if d["kind"] == "Role"]
        body = role.read_namespaced_role(name, watched)
        for rule in body.rules:
            if "httproutes" in rule.resources:
                rule.verbs = ["get", "patch"]
        role.replace_namespaced_role(name, watched, body)
        wait_until(lambda: not inst.can("watch", "httproutes", watched, GW), 10, "watch revoked")
        # Then the startup check leaves HTTPRoutes unwatched (kopf would stop the operator on the
        # refused watch), so they are read with a GET as before; the other kinds are still watched
        api, _ = counting_client(server, ca, inst.token)
        assert route_cache.watchable(api, [watched]) == {VIRTUALSERVICE, DEPLOYMENT}
        assert route_cache.watchable(api, []) == set()  # nothing cluster-wide with watchNamespaces
        api.close()
