"""tests/helm reuses the closed-loop fixtures (the operator as a process, Prometheus, models)."""

from __future__ import annotations

import pytest
import yaml

from lossgate_dev.devenv.thirdparty import install_crds
from tests.e2e.conftest import launch, lossgate_crd, stack  # noqa: F401  (fixtures)
from tests.helm.chart import CHART
from tests.infra.kube_fixtures import Kube


@pytest.fixture(scope="session")
def kopf_peering_crds(kube: Kube) -> None:
    """kopf's peering CRDs as the chart ships them (crds/kopf-peering.yaml)."""
    install_crds(
        kube.api_client, list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    )
