"""Session fixture: a real kube-apiserver + etcd + kube-controller-manager on loopback.

Never skips: a missing binary fails the run with the command that builds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from lossgate_dev.devenv.kube import ControlPlane


@dataclass
class Kube:
    plane: ControlPlane
    api_client: client.ApiClient

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def kubectl(self, *args: str, input: str | None = None, kubeconfig: Path | None = None):
        return self.plane.kubectl(*args, input=input, kubeconfig=kubeconfig)

    def client_for_token(self, token: str) -> client.ApiClient:
        cfg = client.Configuration()
        cfg.host = self.plane.server_url
        cfg.ssl_ca_cert = str(self.plane.ca_cert)
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("kube"))
    try:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        yield Kube(plane, api)
        api.close()
    finally:
        plane.stop()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (kube-controller-manager finalizes it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube.api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
