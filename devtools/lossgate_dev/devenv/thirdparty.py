"""Third-party CRDs fetched from their published Go modules: the real Gateway API and Istio CRDs.

`go mod download` goes through the Go module proxy (GOPROXY) into the Go module cache, the only
cache; nothing is copied into this repository. Versions are pinned here, only here. Used by the
tests' fixtures and by `make demo`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lossgate_dev.devenv.procs import wait_until

GATEWAY_API_MODULE, GATEWAY_API_VERSION = "sigs.k8s.io/gateway-api", "v1.6.3"
ISTIO_API_MODULE, ISTIO_API_VERSION = "istio.io/api", "v1.31.1"
# Kubeflow's training operator (PyTorchJob): examples/training/pytorchjob.yaml is dry-run against it.
KUBEFLOW_TRAINING_MODULE, KUBEFLOW_TRAINING_VERSION = "github.com/kubeflow/training-operator", "v1.9.3"

# The Prometheus Operator's CRDs (PrometheusRule, ServiceMonitor, PodMonitor): the chart's objects for it.
PROMETHEUS_OPERATOR_MODULE, PROMETHEUS_OPERATOR_VERSION = (
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
)

Manifest = dict[str, Any]


def go_binary(what: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(
            f"`go` is not on PATH: it is needed to fetch {what} through the Go module proxy. "
            "Install Go 1.22+ (https://go.dev/dl/) and re-run."
        )
    return go


# Run outside any go.mod, with the local toolchain only (no toolchain download).
GO_ENV = {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}


@cache
def go_module_dir(module: str, version: str) -> Path:
    """The extracted module in the Go module cache (downloaded through GOPROXY on first use)."""
    go = go_binary(f"{module}@{version}")
    env = {**os.environ, **GO_ENV}
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [go, "mod", "download", "-json", f"{module}@{version}"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    try:
        info = json.loads(out.stdout)
    except ValueError:
        info = {}
    if out.returncode != 0 or info.get("Error") or not info.get("Dir"):
        raise RuntimeError(
            f"go mod download {module}@{version} failed (rc {out.returncode}): "
            f"{info.get('Error') or out.stderr.strip() or out.stdout.strip()}. Check GOPROXY/network access."
        )
    return Path(info["Dir"])


def _crds_in(paths: list[Path]) -> list[Manifest]:
    docs: list[Manifest] = []
    for path in paths:
        docs += [
            d
            for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"
        ]
    return docs


def load_gateway_api_crds() -> list[Manifest]:
    """Standard-channel Gateway API CRDs (HTTPRoute, Gateway, GatewayClass, ...)."""
    crd_dir = go_module_dir(GATEWAY_API_MODULE, GATEWAY_API_VERSION) / "config" / "crd" / "standard"
    crds = _crds_in(sorted(crd_dir.glob("*.yaml")))
    if not any(c["spec"]["names"]["kind"] == "HTTPRoute" for c in crds):
        raise RuntimeError(f"no HTTPRoute CRD in {crd_dir}")
    return crds


def load_istio_crds(group: str = "networking.istio.io") -> list[Manifest]:
    """Istio's CRDs of one API group (VirtualService, DestinationRule, ...)."""
    path = (
        go_module_dir(ISTIO_API_MODULE, ISTIO_API_VERSION)
        / "kubernetes"
        / "customresourcedefinitions.gen.yaml"
    )
    crds = [c for c in _crds_in([path]) if c["spec"]["group"] == group]
    if not any(c["spec"]["names"]["kind"] == "VirtualService" for c in crds):
        raise RuntimeError(f"no VirtualService CRD in {path}")
    return crds


def load_pytorchjob_crd() -> list[Manifest]:
    """Kubeflow's PyTorchJob CRD (kubeflow.org/v1), from the training operator's module."""
    path = (
        go_module_dir(KUBEFLOW_TRAINING_MODULE, KUBEFLOW_TRAINING_VERSION)
        / "manifests"
        / "base"
        / "crds"
        / "kubeflow.org_pytorchjobs.yaml"
    )
    crds = _crds_in([path])
    if not any(c["spec"]["names"]["kind"] == "PyTorchJob" for c in crds):
        raise RuntimeError(f"no PyTorchJob CRD in {path}")
    return crds


def load_prometheus_operator_crds(
    plurals: tuple[str, ...] = ("prometheusrules", "servicemonitors", "podmonitors"),
) -> list[Manifest]:
    """monitoring.coreos.com CRDs from the Prometheus Operator's module (its example/ directory)."""
    crd_dir = (
        go_module_dir(PROMETHEUS_OPERATOR_MODULE, PROMETHEUS_OPERATOR_VERSION)
        / "example"
        / "prometheus-operator-crd"
    )
    crds = _crds_in([crd_dir / f"monitoring.coreos.com_{p}.yaml" for p in plurals])
    if {c["spec"]["names"]["plural"] for c in crds} != set(plurals):
        raise RuntimeError(f"missing Prometheus Operator CRDs in {crd_dir}")
    return crds


def install_crds(api_client: client.ApiClient, crds: list[Manifest], timeout: float = 90) -> None:
    """Create (or leave, if present) each CRD and wait until it is Established and served."""
    ext: Any = client.ApiextensionsV1Api(api_client)  # takes the CRDs as plain dicts
    for crd in crds:
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
    for crd in crds:
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            got = ext.read_custom_resource_definition(name)
            return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or [])

        wait_until(established, timeout, f"CRD {name} Established")
    # Established precedes discovery by a moment: wait until each served version lists the resource.
    for crd in crds:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for version in (v["name"] for v in crd["spec"]["versions"] if v.get("served")):

            def served(group: str = group, version: str = version, plural: str = plural) -> bool:
                resources = client.CustomObjectsApi(api_client).get_api_resources(group, version)
                return any(r.name == plural for r in resources.resources)

            wait_until(served, timeout, f"{plural}.{group}/{version} in discovery")
