"""Classify API failures into `Problem`s whose message names the object, says what is wrong and
what to do. Nothing here raises across the port: routers catch `RouterProblem` and return it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import urllib3
from kubernetes.client.exceptions import ApiException

from lossgate.core.evidence import Problem
from lossgate.ports import RouterErrorKind


@dataclass(frozen=True)
class Target:
    """The object a router reads and writes, for messages and details."""

    kind: str  # HTTPRoute, VirtualService, Deployment
    namespace: str
    name: str
    resource: str  # httproutes.gateway.networking.k8s.io, deployments.apps
    install_hint: str = ""  # what to install when the resource type is missing

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class RouterProblem(Exception):
    """Internal control flow: carries a classified Problem up to the port method."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def problem(kind: RouterErrorKind, target: Target, message: str, **details: str) -> Problem:
    return Problem(
        kind=kind.value,
        message=message,
        details={"kind": target.kind, "namespace": target.namespace, "name": target.name, **details},
    )


def fail(kind: RouterErrorKind, target: Target, message: str, **details: str) -> RouterProblem:
    return RouterProblem(problem(kind, target, message, **details))


def server_message(exc: ApiException) -> str:
    """The `message` of a Status body, else the raw body (trimmed), else the HTTP reason."""
    body = exc.body or ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return body.strip()[:300] or str(exc.reason or exc.status)


def is_object_not_found(exc: ApiException, name: str) -> bool:
    """404 naming the object (a Status with details.name) vs 404 on the path itself, which is what
    the API server answers when the resource type (group/version/plural) is not served at all."""
    if exc.status != 404:
        return False
    try:
        status = json.loads(exc.body or "")
    except ValueError:
        return False
    return isinstance(status, dict) and (status.get("details") or {}).get("name") == name


def classify(exc: BaseException, target: Target, verb: str) -> Problem:
    """Map an API or transport failure during `verb` (get, patch) on `target` to a Problem."""
    if isinstance(exc, RouterProblem):
        return exc.problem
    if isinstance(exc, ApiException):
        status, said = exc.status or 0, server_message(exc)
        if status == 404 and is_object_not_found(exc, target.name):
            return problem(
                RouterErrorKind.NOT_FOUND,
                target,
                f"{target} not found. Create it, or fix the name in spec.trafficRouting.",
            )
        if status == 404:
            return problem(
                RouterErrorKind.CRD_MISSING,
                target,
                f"the API server does not serve {target.resource} (needed for {target}): the CRD is "
                f"not installed. {target.install_hint or 'Install it'}, or choose another "
                "spec.trafficRouting.",
                resource=target.resource,
            )
        if status in (401, 403):
            return problem(
                RouterErrorKind.FORBIDDEN,
                target,
                f"forbidden to {verb} {target}: {said}. Grant the operator's ServiceAccount '{verb}' on "
                f"{target.resource} in namespace {target.namespace} (the Helm chart's RBAC does).",
                verb=verb,
                resource=target.resource,
            )
        if status == 409:
            return problem(
                RouterErrorKind.CONFLICT,
                target,
                f"{target} kept changing while lossgate wrote it: {said}. It will retry at the next "
                "reconcile; check for another controller writing the same fields.",
            )
        if status in (400, 422):
            return problem(
                RouterErrorKind.INVALID,
                target,
                f"the API server refused lossgate's {verb} of {target}: {said}. Fix the object so that "
                "it passes validation.",
            )
        return problem(
            RouterErrorKind.UNAVAILABLE,
            target,
            f"the API server failed to {verb} {target} (HTTP {status}): {said}. Retrying at the next "
            "reconcile.",
            status=str(status),
        )
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return problem(
            RouterErrorKind.UNAVAILABLE,
            target,
            f"the API server is unreachable ({type(exc).__name__}: {exc}) while trying to {verb} {target}. "
            "Retrying at the next reconcile.",
        )
    raise exc
