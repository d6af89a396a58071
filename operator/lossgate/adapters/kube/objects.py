"""The ModelRollout's own object and the few others it names (Secrets, the canary Deployment).

Errors come back as `Problem`s, classified like the routers' (not found, forbidden, conflict,
unavailable), with messages that name the object and what to do.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from lossgate.adapters.routers.k8s import REQUEST_TIMEOUT
from lossgate.core.evidence import Problem
from lossgate.model import API_GROUP, API_VERSION, PLURAL
from lossgate.ports import RouterErrorKind

GROUP, VERSION = API_GROUP, API_VERSION
SCALED_FROM_ANNOTATION = f"{API_GROUP}/replicas-before-scale-down"


def classify_api_error(err: Exception, what: str, fix: str = "") -> Problem:
    """One Problem for an API call on `what` (e.g. 'Secret ml/prom-token')."""
    if isinstance(err, ApiException):
        try:
            detail = json.loads(err.body or "{}").get("message", "") if err.body else ""
        except ValueError:
            detail = str(err.body)[:200]
        detail = detail or err.reason or ""
        kind = {
            404: RouterErrorKind.NOT_FOUND,
            403: RouterErrorKind.FORBIDDEN,
            409: RouterErrorKind.CONFLICT,
        }.get(
            err.status or 0,
            RouterErrorKind.UNAVAILABLE if (err.status or 0) >= 500 else RouterErrorKind.INVALID,
        )
        hint = {
            RouterErrorKind.NOT_FOUND: f"{what} does not exist: create it or fix the reference in the spec",
            RouterErrorKind.FORBIDDEN: f"the operator may not access {what}: grant it in the RBAC",
        }.get(kind, f"{what}: {detail}")
        msg = (
            f"{hint} ({err.status}: {detail})"
            if kind in (RouterErrorKind.NOT_FOUND, RouterErrorKind.FORBIDDEN)
            else hint
        )
        return Problem(kind.value, f"{msg}{'; ' + fix if fix else ''}", {"status": str(err.status)})
    if isinstance(err, HTTPError | OSError):
        return Problem(
            RouterErrorKind.UNAVAILABLE.value, f"the API server could not be reached for {what}: {err}"
        )
    return Problem(RouterErrorKind.UNAVAILABLE.value, f"{what}: unexpected {type(err).__name__}: {err}")


class RolloutObjects:
    """Writes on one ModelRollout (and reads of what it references), through a kubernetes ApiClient.

    Blocking, and every call carries REQUEST_TIMEOUT (a hung API server is Unavailable, never a stuck
    tick): call it through a thread (reconcile/threads.py) from the event loop.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> Problem | None:
        """Replace status through the status subresource with one merge patch (None values delete)."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception as err:
            return classify_api_error(err, f"ModelRollout {namespace}/{name} status")
        return None

    def remove_annotations(self, namespace: str, name: str, keys: list[str]) -> Problem | None:
        if not keys:
            return None
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"metadata": {"annotations": dict.fromkeys(keys)}},
                _request_timeout=REQUEST_TIMEOUT,
            )
        except Exception as err:
            return classify_api_error(err, f"ModelRollout {namespace}/{name} annotations")
        return None

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | Problem:
        """All keys of a Secret, decoded (one GET; the reconciler caches it)."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        except Exception as err:
            return classify_api_error(err, f"Secret {namespace}/{name}")
        return {k: base64.b64decode(v).decode().strip() for k, v in (secret.data or {}).items()}

    def secret_value(self, namespace: str, name: str, key: str) -> str | Problem:
        data = self.read_secret(namespace, name)
        return data if isinstance(data, Problem) else secret_key(data, namespace, name, key)

    def scale_deployment(self, namespace: str, name: str, replicas: int | None) -> Problem | None:
        """replicas=0 scales down and remembers the count; None restores the remembered count."""
        what = f"Deployment {namespace}/{name}"
        try:
            dep = self.apps.read_namespaced_deployment(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            annotations = (dep.metadata.annotations if dep.metadata is not None else None) or {}
            current = int(dep.spec.replicas or 0)
            if replicas is None:
                target = int(annotations.get(SCALED_FROM_ANNOTATION, current or 1))
                note: dict[str, str | None] = {SCALED_FROM_ANNOTATION: None}
            else:
                target = replicas
                note = {SCALED_FROM_ANNOTATION: str(current)} if replicas == 0 and current > 0 else {}
            if note:
                self.apps.patch_namespaced_deployment(
                    name, namespace, {"metadata": {"annotations": note}}, _request_timeout=REQUEST_TIMEOUT
                )
            if current != target:
                self.apps.patch_namespaced_deployment_scale(
                    name, namespace, {"spec": {"replicas": target}}, _request_timeout=REQUEST_TIMEOUT
                )
        except Exception as err:
            return classify_api_error(err, what)
        return None


def secret_key(data: dict[str, str], namespace: str, name: str, key: str) -> str | Problem:
    """One key of a decoded Secret, or the Problem naming the missing key."""
    if key not in data:
        return Problem(
            RouterErrorKind.INVALID.value,
            f"Secret {namespace}/{name} has no key {key!r}: add it or fix the secret ref",
        )
    return data[key]
