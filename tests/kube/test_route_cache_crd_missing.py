"""The route cache's watches on a cluster without Gateway API or Istio (a bare control plane of its
own, as in test_router_crd_missing.py): the operator starts, caches Deployments, reports the missing
CRDs as today through the fallback GET, and starts caching HTTPRoutes once their CRD is installed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client, config

from lossgate.adapters.routers import DEPLOYMENT, HTTPROUTE, GatewayRouteRef, IstioRouteRef, ReplicaRef
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind
from lossgate_dev.devenv.kube import ControlPlane
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.thirdparty import install_crds, load_gateway_api_crds
from tests.kube.operator_thread import counting_client, operator_deps, operator_running
from tests.kube.test_route_cache import deployment, gw_ref, http_route

pytestmark = pytest.mark.realserver  # its own real API server, not the shared `kube` fixture


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(Path(tmp_path_factory.mktemp("bare-kube")), controller_manager=False)
    try:
        yield plane
    finally:
        plane.stop()


def test_operator_starts_without_the_crds_and_caches_routes_once_installed(bare: ControlPlane) -> None:
    # Given a cluster with neither Gateway API nor Istio, and two Deployments in a fresh namespace
    admin: Any = cast(Any, config).new_client_from_config(config_file=str(bare.kubeconfig))  # untyped
    ns = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    apps: Any = client.AppsV1Api(admin)
    apps.create_namespaced_deployment(ns, deployment("scorer-v41", "v41", 3))
    apps.create_namespaced_deployment(ns, deployment("scorer-v42", "v42", 1))
    api, requests = counting_client(bare.server_url, bare.ca_cert, bare.admin_token)
    deps = operator_deps(api, [ns])
    # When the operator starts watching that namespace
    with operator_running(deps, bare.server_url, bare.ca_cert, bare.admin_token, [ns]):
        # Then it runs: the Deployments are cached and the replica router reads them without a GET
        for name in ("scorer-v41", "scorer-v42"):
            wait_until(lambda n=name: deps.routes.lookup(DEPLOYMENT, ns, n) is not None, 10, f"{name} cached")
        assert deps.router(ReplicaRef(ns, "scorer-v41", "scorer-v42")).get_weights() == Weights(75, 25)
        assert requests.count("GET", "/scale") == 0
        # And the Gateway API and Istio routers say, as today, that their CRD is missing (by a GET)
        got = deps.router(gw_ref(ns)).get_weights()
        assert isinstance(got, Problem)
        assert got.kind == RouterErrorKind.CRD_MISSING
        needed = f"(needed for HTTPRoute {ns}/scorer)"
        assert f"does not serve httproutes.gateway.networking.k8s.io/v1 {needed}" in got.message
        assert requests.count("GET", "/httproutes/scorer") == 1
        istio = IstioRouteRef(ns, "scorer", "scorer", "scorer", baseline_subset="v41", canary_subset="v42")
        got = deps.router(istio).get_weights()
        assert isinstance(got, Problem)
        assert got.kind == RouterErrorKind.CRD_MISSING
        assert "virtualservices.networking.istio.io/v1|v1beta1" in got.message
        # When the Gateway API CRDs are installed while it runs, and a route is created
        install_crds(admin, load_gateway_api_crds())
        client.CustomObjectsApi(admin).create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", ns, "httproutes", http_route(90, 10)
        )
        # Then kopf notices the new CRD, the watch starts, and the route is read from the cache
        wait_until(lambda: deps.routes.lookup(HTTPROUTE, ns, "scorer") is not None, 30, "HTTPRoute cached")
        before = requests.count("GET", "/httproutes/scorer")
        assert deps.router(GatewayRouteRef(ns, "scorer", 0, "scorer-v41", "scorer-v42")).get_weights() == (
            Weights(90, 10)
        )
        assert requests.count("GET", "/httproutes/scorer") == before
    admin.close()
