"""Clusters without Gateway API or Istio: a second, bare control plane (etcd + kube-apiserver) that no
other test installs CRDs into, so "not installed" is a fact of the cluster, not of test order."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client, config

from lossgate.adapters.routers import GatewayRouteRef, IstioRouter, IstioRouteRef, make_router
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind
from lossgate_dev.devenv.kube import ControlPlane
from lossgate_dev.devenv.thirdparty import install_crds, load_istio_crds

pytestmark = pytest.mark.realserver  # its own real API server, not the shared `kube` fixture


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.ApiClient]:
    plane = ControlPlane.start(Path(tmp_path_factory.mktemp("bare-kube")), controller_manager=False)
    try:
        api: Any = cast(Any, config).new_client_from_config(
            config_file=str(plane.kubeconfig)
        )  # untyped in the client
        yield api
        api.close()
    finally:
        plane.stop()


GATEWAY = GatewayRouteRef("default", "scorer", 0, "scorer-v41", "scorer-v42")
ISTIO = IstioRouteRef("default", "scorer", "scorer", "scorer", baseline_subset="v41", canary_subset="v42")


def test_gateway_api_not_installed(bare: client.ApiClient) -> None:
    # Given a cluster without the Gateway API CRDs
    router = make_router(GATEWAY, bare)
    # When lossgate reads or writes the route, Then it says the CRD is missing and what to install
    for got in (router.get_weights(), router.set_weights(Weights(95, 5))):
        assert isinstance(got, Problem)
        assert got.kind == RouterErrorKind.CRD_MISSING
        assert (
            "does not serve httproutes.gateway.networking.k8s.io/v1 (needed for HTTPRoute default/scorer)"
            in got.message
        )
        assert "Install the Gateway API standard-channel CRDs" in got.message


def test_istio_not_installed_then_installed_serving_only_v1beta1(bare: client.ApiClient) -> None:
    # Given a cluster without Istio, and a router made before Istio is installed
    router = IstioRouter(ISTIO, bare)
    got = router.set_weights(Weights(95, 5))
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.CRD_MISSING
    assert "virtualservices.networking.istio.io/v1|v1beta1" in got.message
    assert "Install Istio's networking CRDs" in got.message
    # When Istio's real VirtualService CRD is installed, but from an older release that serves no v1
    # (the same CRD with v1 switched off and v1beta1 the storage version)
    (vs,) = [c for c in load_istio_crds() if c["spec"]["names"]["kind"] == "VirtualService"]
    vs = copy.deepcopy(vs)
    for version in vs["spec"]["versions"]:
        version["served"] = version["name"] != "v1"
        version["storage"] = version["name"] == "v1beta1"
    install_crds(bare, [vs])
    baseline_only = {"route": [{"destination": {"host": "scorer", "subset": "v41"}}]}
    body = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "scorer"},
        "spec": {"hosts": ["scorer"], "http": [baseline_only]},
    }
    client.CustomObjectsApi(bare).create_namespaced_custom_object(
        "networking.istio.io", "v1beta1", "default", "virtualservices", body
    )
    # Then the same router instance falls back to v1beta1 and works
    assert router.set_weights(Weights(95, 5)) == Weights(95, 5)
    assert router.version == "v1beta1"
    got_vs: Any = client.CustomObjectsApi(bare).get_namespaced_custom_object(
        "networking.istio.io", "v1beta1", "default", "virtualservices", "scorer"
    )
    assert [(d["destination"]["subset"], d["weight"]) for d in got_vs["spec"]["http"][0]["route"]] == [
        ("v41", 95),
        ("v42", 5),
    ]
