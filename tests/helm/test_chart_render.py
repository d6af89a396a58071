"""helm/lossgate with a real Helm engine: strict lint, default and variant renders, the hardened
Deployment, the values schema, the CRDs identical to crds/, appVersion from the package."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from helm_python.errors import HelmValuesError

import lossgate
from lossgate.model import crdgen
from tests.helm.chart import CHART, ROOT, by_kind, lint_report, one, render, validate

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["ml-prod", "ml-staging"]},
    "ha-cluster-wide": {"replicas": 2, "peering": {"enabled": True, "name": "lossgate"}},
    "ha-namespaced": {"replicas": 3, "peering": {"enabled": True}, "watchNamespaces": ["ml-prod"]},
    "monitors-and-netpol": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "podMonitor": {"enabled": True},
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        },
    },
    "secrets-by-name": {"prometheus": {"authSecretNames": ["prom-token"]}},
    "secrets-in-namespaces": {
        "prometheus": {"authSecretNames": ["prom-token"], "authSecretNamespaces": ["ml-prod"]}
    },
    "debug-and-tuning": {
        "operator": {
            "logLevel": "DEBUG",
            "maxConcurrentPerPrometheus": 2,
            "scrapeLagSeconds": 5,
            "extraEnv": [{"name": "FOO", "value": "bar"}],
        },
        "image": {"repository": "registry.example.com/lossgate", "tag": "dev"},
        "serviceAccount": {"create": False, "name": "byo"},
        "rbac": {"create": False},
    },
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_lint_strict_passes(name: str) -> None:
    # Given the chart and a set of values; When it is linted in strict mode (warnings are errors)
    report = lint_report(VARIANTS[name])
    # Then there is no finding at all
    assert report["errors"] == [], report
    assert report["messages"] == [], report
    assert report["total_charts_linted"] == 1


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_renders_every_variant(name: str) -> None:
    # When the variant renders; Then there is exactly one Deployment running `lossgate operator`
    docs = render(VARIANTS[name])
    dep = one(docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][0] == "operator"
    # And every object is labelled as part of this release
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "lossgate", d["kind"]


def test_default_deployment_is_hardened() -> None:
    # Given the default values
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # Then the pod runs as a non-root user with the RuntimeDefault seccomp profile
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # And the container has a read-only root, no privilege escalation, every capability dropped
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # And /tmp is a small emptyDir (the operator's temporary CA files)
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    # And requests and limits are set
    assert set(c["resources"]) == {"requests", "limits"}
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}
    # And the liveness probe hits kopf's /healthz on the port the operator is told to serve it on
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8090, "healthz": 8080}
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert "--metrics-port=8090" in c["args"]
    # And the image is the package's version; one replica, replaced (not rolled) without peering
    assert c["image"] == f"ghcr.io/lossgate/lossgate:{lossgate.__version__}"
    dep = one(docs, "Deployment")["spec"]
    assert dep["replicas"] == 1
    assert dep["strategy"] == {"type": "Recreate"}
    # And the metrics Service exposes the metrics port; no monitors or NetworkPolicy by default
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not by_kind(docs, "ServiceMonitor") + by_kind(docs, "PodMonitor") + by_kind(docs, "NetworkPolicy")


def test_operator_settings_become_flags_and_environment() -> None:
    # Given namespaces, peering, a log level and the analysis concurrency as values
    docs = render(
        {
            **VARIANTS["ha-namespaced"],
            "operator": {"logLevel": "DEBUG", "maxConcurrentPerPrometheus": 3, "maxConcurrentTicks": 8},
        }
    )
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # Then the operator gets them as its documented flags and LOSSGATE_* variables
    assert "--namespace=ml-prod" in c["args"]
    assert "--peering=lossgate" in c["args"]
    assert env["LOSSGATE_LOG_LEVEL"] == "DEBUG"
    assert env["LOSSGATE_MAX_CONCURRENT_PER_PROMETHEUS"] == "3"
    assert env["LOSSGATE_MAX_CONCURRENT_TICKS"] == "8"
    assert one(docs, "Deployment")["spec"]["replicas"] == 3


def test_monitors_and_network_policy_when_enabled() -> None:
    docs = render(VARIANTS["monitors-and-netpol"])
    sm, pm, np = one(docs, "ServiceMonitor"), one(docs, "PodMonitor"), one(docs, "NetworkPolicy")
    # Then both monitors scrape the metrics port by name, with the extra labels
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # And the NetworkPolicy admits only the metrics port, and lets out DNS, the API server and Prometheus
    assert [p["port"] for r in np["spec"]["ingress"] for p in r["ports"]] == [8090]
    egress = sorted({p["port"] for r in np["spec"]["egress"] for p in r["ports"]})
    assert egress == [53, 443, 6443, 9090]


def test_rbac_shape_cluster_wide_vs_namespaced() -> None:
    # Cluster-wide: one ClusterRole with the operator's rules, bound cluster-wide, and no Secrets at all
    wide = render()
    names = {d["metadata"]["name"] for d in by_kind(wide, "ClusterRole")}
    assert names == {"lossgate", "lossgate-observer"}
    assert not by_kind(wide, "Role")
    assert not by_kind(wide, "RoleBinding")
    assert all("secrets" not in r["resources"] for d in by_kind(wide, "ClusterRole") for r in d["rules"])
    # Namespaced: a Role + RoleBinding per namespace (Secrets get included); cluster-wide only CRD and
    # namespace reads (kopf lists namespaces when given namespaces)
    ns = render(VARIANTS["namespaced"])
    assert sorted(d["metadata"]["namespace"] for d in by_kind(ns, "Role")) == ["ml-prod", "ml-staging"]
    assert sorted(d["metadata"]["namespace"] for d in by_kind(ns, "RoleBinding")) == ["ml-prod", "ml-staging"]
    (cr,) = by_kind(ns, "ClusterRole")
    assert cr["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    # No rule anywhere grants a wildcard, list/watch on Secrets, create/delete/update of workloads
    for d in by_kind(wide + ns, "ClusterRole") + by_kind(ns, "Role"):
        for r in d["rules"]:
            assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"], r
            if "secrets" in r["resources"]:
                assert r["verbs"] == ["get"]
            assert not {"create", "delete", "update", "deletecollection"} & set(r["verbs"]) or r[
                "resources"
            ] in (["events"], ["modelrollouts/finalizers"]), r


def test_crds_are_byte_identical_to_the_repository_crds() -> None:
    # The generator writes both ModelRollout CRDs; the chart ships the same bytes Helm installs from crds/
    repo, chart = (ROOT / p for p in crdgen.OUTPUTS)
    assert chart.parent == CHART / "crds"
    assert chart.read_bytes() == repo.read_bytes()
    assert yaml.safe_load(chart.read_text())["spec"]["names"]["kind"] == "ModelRollout"
    # And the chart's crds/ holds exactly the repository's crds/ (kopf's peering CRDs included)
    ours = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")} == ours
    assert set(ours) == {"modelrollout.yaml", "kopf-peering.yaml"}


def test_ha_creates_the_peering_object_the_replicas_meet_in() -> None:
    # Cluster-wide: one ClusterKopfPeering; namespaced: a KopfPeering per watched namespace
    (cluster,) = by_kind(render(VARIANTS["ha-cluster-wide"]), "ClusterKopfPeering")
    assert cluster["metadata"]["name"] == "lossgate"
    assert cluster["apiVersion"] == "kopf.dev/v1"
    (ns,) = by_kind(render(VARIANTS["ha-namespaced"]), "KopfPeering")
    assert (ns["metadata"]["namespace"], ns["metadata"]["name"]) == ("ml-prod", "lossgate")
    assert not [d for d in render() if "Peering" in d["kind"]]


def test_app_version_is_the_package_version() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == lossgate.__version__


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown top-level key": ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
    "replicas as a string": ({"replicas": "1"}, "at '/replicas': got string, want integer"),
    "namespaces as a string": (
        {"watchNamespaces": "ml-prod"},
        "at '/watchNamespaces': got string, want array",
    ),
    "bad namespace name": ({"watchNamespaces": ["ML_Prod"]}, "/watchNamespaces/0"),
    "unknown log level": ({"operator": {"logLevel": "TRACE"}}, "/operator/logLevel"),
    "zero concurrency": (
        {"operator": {"maxConcurrentPerPrometheus": 0}},
        "/operator/maxConcurrentPerPrometheus",
    ),
    "port out of range": ({"metrics": {"port": 70000}}, "/metrics/port"),
    "monitor flag as a string": (
        {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
        "/metrics/serviceMonitor/enabled",
    ),
    "prometheus without scheme": ({"prometheus": {"address": "prometheus:9090"}}, "/prometheus/address"),
    "unknown nested key": (
        {"rbac": {"create": True, "clusterWide": True}},
        "additional properties 'clusterWide'",
    ),
    "replicas > 1 without peering": ({"replicas": 2}, "at '/peering/enabled': value must be true"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_refuses_bad_values(case: str) -> None:
    values, message = BAD_VALUES[case]
    # When the values are validated against values.schema.json (as install and template do)
    with pytest.raises(HelmValuesError) as err:
        validate(values)
    # Then they are refused with a message naming the field
    assert message in str(err.value)
    # And rendering refuses them too
    with pytest.raises(HelmValuesError):
        render(values)


def test_schema_accepts_every_variant() -> None:
    for values in VARIANTS.values():
        validate(values)
