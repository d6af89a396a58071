"""Every manifest docs/quickstart-kind.md and docs/helm.md point at exists, and the real API server
accepts it (server-side dry run, namespaced objects placed in the test's namespace; the Gateway API
and lossgate CRDs installed so their schemas and CEL rules are checked too)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import ROOT
from tests.infra.kube_fixtures import Kube

DOCS = [ROOT / "docs" / "quickstart-kind.md", ROOT / "docs" / "helm.md"]
PATH_RE = re.compile(r"(?<![\w/.-])((?:examples|helm|docs)/[\w./-]*[\w/]|kind-config\.yaml|Dockerfile)")
# Validated elsewhere: the chart (tests/helm/test_chart_*.py), kind-config.yaml (tests/unit/
# test_kind_config.py: kind's own format, no API server), the Argo CD Application (its CRD is Argo CD's;
# tests/kube/test_router_argocd.py), the Dockerfile (test_dockerfile.py).
ELSEWHERE = {"helm/lossgate", "kind-config.yaml", "examples/argocd/application.yaml", "Dockerfile"}


def referenced() -> set[str]:
    return {m.rstrip("/") for doc in DOCS for m in PATH_RE.findall(doc.read_text())}


def manifests() -> list[str]:
    return sorted(p for p in referenced() if p.endswith(".yaml") and p not in ELSEWHERE)


def test_every_referenced_path_exists() -> None:
    missing = sorted(p for p in referenced() if not (ROOT / p).exists())
    assert missing == []
    # And the quickstart names its steps' manifests (a regexp that found nothing would pass vacuously)
    quickstart = {f"examples/quickstart/{n}.yaml" for n in ("gateway", "prometheus", "digits")}
    assert quickstart | {"examples/argocd/argocd-cm.yaml"} <= set(manifests())


def placed(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Namespaced objects into the test's namespace (the ones the docs create may not exist here)."""
    if doc["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding", "GatewayClass"}:
        doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    if doc["kind"] == "ClusterRoleBinding":
        doc = {**doc, "subjects": [{**s, "namespace": namespace} for s in doc["subjects"]]}
    if doc["kind"] == "HTTPRoute":
        refs = [{**r, "namespace": namespace} for r in doc["spec"]["parentRefs"]]
        doc = {**doc, "spec": {**doc["spec"], "parentRefs": refs}}
    return doc


@pytest.mark.usefixtures("gateway_api_crds", "lossgate_crd")
@pytest.mark.parametrize("path", manifests())
def test_the_api_server_accepts_the_manifest(kube: Kube, namespace: str, path: str) -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]
    assert docs, path
    for doc in docs:
        out = kube.kubectl(
            "apply", "--dry-run=server", "--server-side", "--field-manager=docs-test", "--force-conflicts",
            "-f", "-",
            input=json.dumps(placed(doc, namespace)),  # JSON: no YAML 1.1 surprises ('n')
        )  # fmt: skip
        assert out.returncode == 0, f"{path}: {doc['kind']} {doc['metadata']['name']}: {out.stderr}"
        assert "(server dry run)" in out.stdout


def test_quickstart_rollout_points_at_the_quickstart_prometheus_and_route() -> None:
    qs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "examples/quickstart/digits.yaml").read_text())}
    prom = [d for d in yaml.safe_load_all((ROOT / "examples/quickstart/prometheus.yaml").read_text())]
    svc = next(d for d in prom if d["kind"] == "Service")
    spec = qs["ModelRollout"]["spec"]
    address = (
        f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}:{svc['spec']['ports'][0]['port']}"
    )
    assert spec["analysis"]["prometheus"]["address"] == address
    assert spec["trafficRouting"]["gatewayAPI"]["httpRoute"] == qs["HTTPRoute"]["metadata"]["name"]
    gw = next(d for d in yaml.safe_load_all((ROOT / "examples/quickstart/gateway.yaml").read_text())
              if d["kind"] == "Gateway")  # fmt: skip
    assert qs["HTTPRoute"]["spec"]["parentRefs"] == [{"name": gw["metadata"]["name"],
                                                      "namespace": gw["metadata"]["namespace"]}]  # fmt: skip


def test_docs_exist() -> None:
    for doc in DOCS:
        assert doc.exists()
        assert Path(doc).read_text().startswith("# ")
