"""Which version the canary serves, read from its Deployment's Ready pods on a real API server.

There is no kubelet: pods are created directly and made Ready by patching their status subresource.
The Deployment has 0 replicas, so kube-controller-manager adds no pods of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client

from lossgate.adapters.kube import CanaryPodVersions
from lossgate.adapters.kube.versions import label_selector, seen_version
from lossgate.core.evidence import Problem
from lossgate.ports import CanaryPodsRef, RouterErrorKind
from lossgate_dev.devenv.procs import wait_until
from tests.infra.kube_fixtures import Kube

SELECTOR = {"app": "scorer", "track": "canary"}
HOLD = "lossgate.test/hold"  # keeps a deleted pod in Terminating until the test lets it go
CONTAINERS = [client.V1Container(name="m", image="registry.invalid/m:1")]


def deployment(name: str) -> client.V1Deployment:
    """A Deployment selecting app=scorer,track=canary with 0 replicas (so no pods of its own)."""
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels=SELECTOR),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=SELECTOR), spec=client.V1PodSpec(containers=CONTAINERS)
            ),
        ),
    )


@pytest.fixture
def core(kube: Kube, namespace: str) -> Any:
    api: Any = client.CoreV1Api(kube.api_client)
    # Pods are refused until kube-controller-manager has made the namespace's default ServiceAccount.
    wait_until(
        lambda: any(
            sa.metadata.name == "default" for sa in api.list_namespaced_service_account(namespace).items
        ),
        60,
        "the default ServiceAccount",
    )
    return api


@pytest.fixture
def canary(kube: Kube, namespace: str, core: Any) -> Iterator[CanaryPodVersions]:
    """Deployment scorer-v42 selecting app=scorer,track=canary (0 replicas), and its version source."""
    client.AppsV1Api(kube.api_client).create_namespaced_deployment(namespace, deployment("scorer-v42"))
    yield CanaryPodVersions(CanaryPodsRef(namespace, "scorer-v42", "v42"), kube.api_client)
    for pod in core.list_namespaced_pod(namespace).items:  # let held pods go, so the namespace can
        if pod.metadata.finalizers:
            core.patch_namespaced_pod(pod.metadata.name, namespace, {"metadata": {"finalizers": None}})


def pod(core: Any, namespace: str, name: str, labels: dict[str, str], *, ready: bool = True) -> None:
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels, finalizers=[HOLD]),
        spec=client.V1PodSpec(containers=CONTAINERS),
    ))  # fmt: skip
    status = "True" if ready else "False"
    core.patch_namespaced_pod_status(
        name, namespace, {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}}
    )


def test_ready_pods_say_which_version_the_canary_serves(
    kube: Kube, namespace: str, core: Any, canary: CanaryPodVersions
) -> None:
    # Given the canary Deployment with no pods yet (0 replicas before the start): unknown, never a block
    assert canary.canary_version() is None
    # And pods that are not Ready yet, one of them on the old version: still unknown
    pod(core, namespace, "new-1", {**SELECTOR, "version": "v42"}, ready=False)
    pod(core, namespace, "old-1", {**SELECTOR, "version": "v41"}, ready=False)
    assert canary.canary_version() is None
    # When the new pod becomes Ready, Then the canary serves v42 (the unready old pod does not count)
    core.patch_namespaced_pod_status("new-1", namespace, {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}})  # fmt: skip
    assert canary.canary_version() == "v42"
    # When the old pod is Ready too (a rolling update half done), Then v41 is seen: the rollout holds
    core.patch_namespaced_pod_status("old-1", namespace, {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}})  # fmt: skip
    assert canary.canary_version() == "v41"
    # When the old pod is terminating (still Ready, deletionTimestamp set), Then it no longer counts
    core.delete_namespaced_pod("old-1", namespace)
    wait_until(
        lambda: core.read_namespaced_pod("old-1", namespace).metadata.deletion_timestamp is not None,
        30,
        "old-1 terminating",
    )
    assert canary.canary_version() == "v42"


def test_label_fallback_and_pods_outside_the_selector(
    kube: Kube, namespace: str, core: Any, canary: CanaryPodVersions
) -> None:
    # Given a Ready canary pod without any version label: unknown (it says nothing)
    pod(core, namespace, "plain", dict(SELECTOR))
    assert canary.canary_version() is None
    # And a Ready pod of the baseline (not selected by the canary Deployment) on v41: not the canary's
    pod(core, namespace, "baseline-1", {"app": "scorer", "track": "baseline", "version": "v41"})
    assert canary.canary_version() is None
    # When a Ready canary pod has only app.kubernetes.io/version, Then that label is read
    pod(core, namespace, "recommended", {**SELECTOR, "app.kubernetes.io/version": "v40"})
    assert canary.canary_version() == "v40"
    # When `version` and app.kubernetes.io/version differ on one pod, Then `version` wins
    core.delete_namespaced_pod("recommended", namespace)
    pod(core, namespace, "both", {**SELECTOR, "version": "v42", "app.kubernetes.io/version": "v40"})
    wait_until(lambda: canary.canary_version() == "v42", 30, "the terminating v40 pod left out")
    # And with two Ready pods on v42 and one on v40, Then v40 is seen: any other version holds
    pod(core, namespace, "both-2", {**SELECTOR, "version": "v42"})
    pod(core, namespace, "late", {**SELECTOR, "app.kubernetes.io/version": "v40"})
    assert canary.canary_version() == "v40"


def test_errors_are_classified_problems(kube: Kube, namespace: str, core: Any) -> None:
    # Given no Deployment by that name: NotFound, naming it and the field
    missing = CanaryPodVersions(CanaryPodsRef(namespace, "scorer-v43", "v43"), kube.api_client)
    got = missing.canary_version()
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.NOT_FOUND
    assert got.message.startswith(
        f"Deployment {namespace}/scorer-v43 (spec.canary.deployment) does not exist"
    )
    # Given a user who may read the Deployment but not list pods: Forbidden, saying what to grant
    client.AppsV1Api(kube.api_client).create_namespaced_deployment(namespace, deployment("scorer-v43"))
    rbac: Any = client.RbacAuthorizationV1Api(kube.api_client)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "read-deployments"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
    })  # fmt: skip
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "nobody-reads-deployments"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-deployments"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nobody"}],
    })  # fmt: skip
    nobody = kube.client_for_token(kube.plane.tokens["nobody"])
    try:
        source = CanaryPodVersions(CanaryPodsRef(namespace, "scorer-v43", "v43"), nobody)
        got = wait_for_problem(source, RouterErrorKind.FORBIDDEN)
        assert got.message.startswith(
            f"the operator may not access pods of Deployment {namespace}/scorer-v43 "
            "(list, labelSelector app=scorer,track=canary): grant it in the RBAC"
        )
        assert 'User "nobody" cannot list resource "pods"' in got.message
    finally:
        cast(Any, nobody).close()


def wait_for_problem(source: CanaryPodVersions, kind: RouterErrorKind) -> Problem:
    """The RBAC authorizer's cache picks up a new RoleBinding within moments; wait for the pods refusal."""
    seen: list[Any] = []

    def check() -> bool:
        seen.append(source.canary_version())
        return isinstance(seen[-1], Problem) and seen[-1].kind == kind

    wait_until(check, 30, f"a {kind} problem")
    return cast(Problem, seen[-1])


def test_selector_and_choice_rules() -> None:
    # matchLabels and matchExpressions become one labelSelector query
    sel = client.V1LabelSelector(
        match_labels={"track": "canary", "app": "scorer"},
        match_expressions=[
            client.V1LabelSelectorRequirement(key="tier", operator="In", values=["b", "a"]),
            client.V1LabelSelectorRequirement(key="zone", operator="NotIn", values=["x"]),
            client.V1LabelSelectorRequirement(key="gpu", operator="Exists"),
            client.V1LabelSelectorRequirement(key="legacy", operator="DoesNotExist"),
        ],
    )
    assert label_selector(sel) == "app=scorer,track=canary,tier in (a,b),zone notin (x),gpu,!legacy"
    assert label_selector(None) == ""
    # The wanted version when no labelled Ready pod says otherwise; else the most common other, ties by name
    assert seen_version([], "v42") is None
    assert seen_version([None, None], "v42") is None
    assert seen_version(["v42", None, "v42"], "v42") == "v42"
    assert seen_version(["v42", "v41", "v40", "v41"], "v42") == "v41"
    assert seen_version(["v40", "v41"], "v42") == "v40"
