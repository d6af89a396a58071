"""Put the chart's rendered manifests into the real API server and act as its ServiceAccount."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from tests.helm.chart import Manifest, render
from tests.infra.kube_fixtures import Kube

# Kinds whose CRDs (Prometheus Operator) the test control plane does not have: checked by render only.
NOT_APPLIED = {"ServiceMonitor", "PodMonitor"}
# Applied with a server-side dry run: no kubelet runs pods here.
DRY_RUN = {"Deployment"}


@dataclass
class Installed:
    kube: Kube
    release: str
    namespace: str  # the release's namespace (the ServiceAccount's)
    docs: list[Manifest]
    token: str

    @property
    def service_account(self) -> str:
        (sa,) = [d for d in self.docs if d["kind"] == "ServiceAccount"]
        return str(sa["metadata"]["name"])

    def can(
        self, verb: str, resource: str, namespace: str = "", group: str = "", sub: str = "", name: str = ""
    ) -> bool:
        """SelfSubjectAccessReview sent WITH the ServiceAccount's token: the RBAC authorizer's answer."""
        api = self.kube.client_for_token(self.token)
        try:
            review = client.AuthorizationV1Api(api).create_self_subject_access_review(
                client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(
                        resource_attributes=client.V1ResourceAttributes(
                            verb=verb,
                            resource=resource,
                            group=group,
                            subresource=sub or None,
                            namespace=namespace or None,
                            name=name or None,
                        )
                    )
                )
            )
        finally:
            api.close()
        return bool(review.status.allowed)


def apply(kube: Kube, docs: list[Manifest]) -> None:
    """Server-side apply of every object (Deployment: server-side dry run); fails with kubectl's words."""
    for d in docs:
        if d["kind"] in NOT_APPLIED:
            continue
        args = ["apply", "--server-side", "--field-manager=helm-test", "-f", "-"]
        if d["kind"] in DRY_RUN:
            args.append("--dry-run=server")
        out = kube.kubectl(*args, input=json.dumps(d))
        assert out.returncode == 0, f"{d['kind']} {d['metadata']['name']} refused: {out.stderr}"


def delete(kube: Kube, docs: list[Manifest]) -> None:
    for d in docs:
        if d["kind"] not in NOT_APPLIED | DRY_RUN:
            kube.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=json.dumps(d))


def sa_token(kube: Kube, namespace: str, name: str, seconds: int = 3600) -> str:
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    got = client.CoreV1Api(kube.api_client).create_namespaced_service_account_token(name, namespace, req)
    return str(got.status.token)


def create_namespace(kube: Kube, prefix: str = "w") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube.api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )
    return name


@contextmanager
def installed(kube: Kube, namespace: str, values: dict[str, Any]) -> Iterator[Installed]:
    """The chart rendered with `values` as release lg-<random> in `namespace`, applied; removed after."""
    release = f"lg-{uuid.uuid4().hex[:6]}"
    docs = render(values, release=release, namespace=namespace)
    try:
        apply(kube, docs)
        sa = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
        yield Installed(kube, release, namespace, docs, sa_token(kube, namespace, sa))
    finally:
        delete(kube, docs)
