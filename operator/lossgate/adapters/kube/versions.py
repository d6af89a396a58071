"""Which version the canary's pods serve: the version label of the Ready pods its Deployment selects.

Read the Deployment, list the pods its selector matches, keep the Ready ones (condition Ready=True,
not terminating) and read `version`, else `app.kubernetes.io/version`. The answer feeds
Observation.canary_version_seen, which holds the rollout (CanaryNotReady) only when it names another
version; so everything uncertain is None (no Ready pod, no version label), never a block.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kubernetes import client

from lossgate.adapters.kube.objects import classify_api_error
from lossgate.adapters.routers.k8s import REQUEST_TIMEOUT
from lossgate.core.evidence import Problem
from lossgate.ports import CanaryPodsRef, RouterErrorKind

VERSION_LABELS = ("version", "app.kubernetes.io/version")  # first one present wins
_OPERATORS = {"In": "in", "NotIn": "notin"}


class CanaryPodVersions:
    """The `VersionSource` port over the canary Deployment's pods (blocking: call it in a thread)."""

    def __init__(self, ref: CanaryPodsRef, api_client: client.ApiClient) -> None:
        self.ref = ref
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def canary_version(self) -> str | Problem | None:
        ns, name = self.ref.namespace, self.ref.deployment
        what = f"Deployment {ns}/{name} (spec.canary.deployment)"
        try:
            deployment = self.apps.read_namespaced_deployment(name, ns, _request_timeout=REQUEST_TIMEOUT)
        except Exception as err:
            return classify_api_error(err, what)
        selector = label_selector(deployment.spec.selector if deployment.spec else None)
        if not selector:
            msg = f"{what} has an empty spec.selector, so its pods cannot be told apart; fix: select its pods"
            return Problem(RouterErrorKind.INVALID.value, msg)
        try:
            pods = self.core.list_namespaced_pod(
                ns, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception as err:
            return classify_api_error(err, f"pods of Deployment {ns}/{name} (list, labelSelector {selector})")
        return seen_version([pod_version(p) for p in pods.items or []], self.ref.version)


def label_selector(selector: Any) -> str:
    """A V1LabelSelector as the `labelSelector` query string ("" when it selects nothing in particular)."""
    if selector is None:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for e in selector.match_expressions or []:
        values = ",".join(sorted(e.values or []))
        if e.operator in _OPERATORS:
            terms.append(f"{e.key} {_OPERATORS[e.operator]} ({values})")
        elif e.operator == "Exists":
            terms.append(e.key)
        elif e.operator == "DoesNotExist":
            terms.append(f"!{e.key}")
    return ",".join(terms)


def pod_version(pod: Any) -> str | None:
    """The version label of a Ready, non-terminating pod; None for any other pod or without a label."""
    meta, status = pod.metadata, pod.status
    if meta is None or meta.deletion_timestamp is not None or status is None:
        return None
    if not any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
        return None
    labels = meta.labels or {}
    return next((labels[k] for k in VERSION_LABELS if labels.get(k)), None)


def seen_version(versions: list[str | None], wanted: str) -> str | None:
    """`wanted` if every labelled Ready pod serves it; else the most common other version; None if none."""
    known = [v for v in versions if v is not None]
    others = Counter(v for v in known if v != wanted)
    if others:
        # Deterministic: the most common other version, ties by name.
        return min(others.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return wanted if known else None
