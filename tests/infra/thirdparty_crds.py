"""Third-party parts fetched at test time from their published Go modules: the real Gateway API and
Istio CRDs, and gojq (the jq engine Argo CD evaluates `ignoreDifferences.jqPathExpressions` with).

`go mod download` / `go install` go through the Go module proxy (GOPROXY) into the Go module and build
caches, the only caches; nothing is copied into this repository. Versions are pinned here, only here.

Fixtures (session scope, registered in the root conftest): `gateway_api_crds` installs the
standard-channel Gateway API CRDs, `istio_crds` installs Istio's networking.istio.io CRDs, `gojq` is
the path of a gojq binary, `pytorchjob_crd` installs Kubeflow's PyTorchJob CRD.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lossgate_dev.devenv.thirdparty import (
    GO_ENV,
    Manifest,
    go_binary,
    install_crds,
    load_gateway_api_crds,
    load_istio_crds,
    load_prometheus_operator_crds,
    load_pytorchjob_crd,
)
from tests.infra.kube_fixtures import Kube

GOJQ_PACKAGE, GOJQ_VERSION = "github.com/itchyny/gojq/cmd/gojq", "v0.12.19"  # as in Argo CD v3.6's go.mod


def build_gojq(bin_dir: Path) -> Path:
    """gojq built from its module into bin_dir (a minute the first time, then from the build cache)."""
    go = go_binary(f"{GOJQ_PACKAGE}@{GOJQ_VERSION}")
    out = subprocess.run(
        [go, "install", f"{GOJQ_PACKAGE}@{GOJQ_VERSION}"],
        cwd=bin_dir,
        env={**os.environ, **GO_ENV, "GOBIN": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"go install {GOJQ_PACKAGE}@{GOJQ_VERSION} failed: {out.stderr.strip()}")
    return bin_dir / "gojq"


@pytest.fixture(scope="session")
def gojq(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gojq(tmp_path_factory.mktemp("gojq"))


@pytest.fixture(scope="session")
def gateway_api_crds(kube: Kube) -> list[Manifest]:
    crds = load_gateway_api_crds()
    install_crds(kube.api_client, crds)
    return crds


@pytest.fixture(scope="session")
def istio_crds(kube: Kube) -> list[Manifest]:
    crds = load_istio_crds()
    install_crds(kube.api_client, crds)
    return crds


@pytest.fixture(scope="session")
def pytorchjob_crd(kube: Kube) -> list[Manifest]:
    """Kubeflow's PyTorchJob CRD, installed in the session's API server."""
    crds = load_pytorchjob_crd()
    install_crds(kube.api_client, crds)
    return crds


@pytest.fixture(scope="session")
def prometheus_operator_crds(kube: Kube) -> list[Manifest]:
    """The Prometheus Operator's PrometheusRule, ServiceMonitor and PodMonitor CRDs, installed."""
    crds = load_prometheus_operator_crds()
    install_crds(kube.api_client, crds)
    return crds
