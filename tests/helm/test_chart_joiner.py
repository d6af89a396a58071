"""The chart's optional label joiner (joiner.enabled): off by default; with SQLite one replica and a
PersistentVolumeClaim; with Redis any number of replicas and the URL from a Secret; never selected
by the operator's own Deployment, Service or monitors."""

from __future__ import annotations

from typing import Any

import pytest
from helm_python.errors import HelmValuesError

from tests.helm.chart import by_kind, lint_report, render, validate

SQLITE: dict[str, Any] = {"joiner": {"enabled": True, "ttl": "21d", "capacity": 500000}}
REDIS: dict[str, Any] = {
    "joiner": {
        "enabled": True, "store": "redis", "replicas": 3,
        "redis": {"existingSecret": "joiner-redis", "prefix": "{fraud}"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
    }
}  # fmt: skip


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def test_off_by_default() -> None:
    # Given the default values; Then nothing of the joiner is rendered
    assert not [d for d in render() if "joiner" in d["metadata"]["name"]]


@pytest.mark.parametrize("values", [SQLITE, REDIS], ids=["sqlite", "redis"])
def test_lint_strict_passes(values: dict[str, Any]) -> None:
    report = lint_report(values)
    assert report["errors"] == [], report
    assert report["messages"] == [], report


def test_sqlite_joiner_one_replica_on_a_claim() -> None:
    # Given the joiner with its default SQLite store
    docs = render(SQLITE)
    dep = _named(docs, "Deployment", "lossgate-joiner")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # Then it runs `lossgate joiner` on the file of a PersistentVolumeClaim, one replica, Recreate
    assert c["args"][:1] == ["joiner"]
    assert "--sqlite=/var/lib/lossgate-joiner/joiner.db" in c["args"]
    assert "--ttl=21d" in c["args"]
    assert "--capacity=500000" in c["args"]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pvc = _named(docs, "PersistentVolumeClaim", "lossgate-joiner")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "lossgate-joiner"}} in pod["volumes"]
    # And it is hardened like the operator (non-root, read-only root, no token)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    # And its Service exposes the API and /metrics on the port the container listens on
    svc = _named(docs, "Service", "lossgate-joiner")
    assert svc["spec"]["ports"][0]["port"] == 8095
    assert "--port=8095" in c["args"]


def test_operator_selectors_never_match_joiner_pods() -> None:
    # Given the joiner next to the operator with its Service and monitors
    docs = render(
        SQLITE | {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}
    )
    joiner_pod = _named(docs, "Deployment", "lossgate-joiner")["spec"]["template"]["metadata"]["labels"]
    operator = _named(docs, "Deployment", "lossgate")
    selectors = [
        operator["spec"]["selector"]["matchLabels"],
        _named(docs, "Service", "lossgate-metrics")["spec"]["selector"],
        by_kind(docs, "ServiceMonitor")[0]["spec"]["selector"]["matchLabels"],
        by_kind(docs, "PodMonitor")[0]["spec"]["selector"]["matchLabels"],
    ]
    # Then no operator selector matches the joiner's pods, and the joiner's matches no operator pod
    for sel in selectors:
        assert not set(sel.items()) <= set(joiner_pod.items()), sel
    joiner_sel = _named(docs, "Deployment", "lossgate-joiner")["spec"]["selector"]["matchLabels"]
    assert not set(joiner_sel.items()) <= set(operator["spec"]["template"]["metadata"]["labels"].items())


def test_redis_joiner_replicas_and_url_from_a_secret() -> None:
    # Given the joiner on Redis with 3 replicas and the URL in a Secret
    docs = render(REDIS)
    dep = _named(docs, "Deployment", "lossgate-joiner")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    # Then there are 3 replicas rolling, no claim, and the URL reaches the container from the Secret
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not by_kind(docs, "PersistentVolumeClaim")
    env = {e["name"]: e for e in c["env"]}
    assert env["LOSSGATE_JOINER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "joiner-redis",
        "key": "url",
    }
    assert "--redis-prefix={fraud}" in c["args"]
    assert not any(a.startswith("--sqlite") for a in c["args"])
    # And a ServiceMonitor scrapes every replica's http port
    sm = _named(docs, "ServiceMonitor", "lossgate-joiner")
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["metadata"]["labels"]["release"] == "kps"


def test_refusals() -> None:
    # SQLite with two replicas: two writers of one file
    with pytest.raises(Exception, match=r"joiner.replicas > 1 needs joiner.store=redis"):
        render({"joiner": {"enabled": True, "replicas": 2}})
    # Redis without a URL
    with pytest.raises(Exception, match=r"joiner.redis.url or joiner.redis.existingSecret"):
        render({"joiner": {"enabled": True, "store": "redis"}})
    # Unknown store, malformed TTL, unknown key: the schema refuses them
    for bad in ({"store": "mysql"}, {"ttl": "two weeks"}, {"replica": 2}, {"redis": {"url": "http://x"}}):
        with pytest.raises(HelmValuesError):
            validate({"joiner": bad})
