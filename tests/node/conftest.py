"""The node tier: one real node (containerd, kubelet, kube-proxy, scheduler) joined to its own control
plane on a host-only address, Traefik as the Gateway API data plane, and Prometheus discovering pods
through the API server. Started once per session; everything is stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config

from lossgate_dev.devenv.node_stack import NodeStack


@pytest.fixture(scope="session")
def node_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeStack]:
    stack = NodeStack.start(tmp_path_factory.mktemp("node"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def node_api(node_stack: NodeStack) -> Iterator[client.ApiClient]:
    assert node_stack.plane is not None
    api = config.new_client_from_config(config_file=str(node_stack.plane.kubeconfig))
    yield api
    api.close()
