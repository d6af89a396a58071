"""Replica-ratio router: the split rule (pure, table + properties), then real Deployments on a real
API server, with kube-controller-manager making the ReplicaSets."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from lossgate.adapters.routers import (
    TOTAL_ANNOTATION,
    ReplicaRatioRouter,
    ReplicaRef,
    canary_replicas,
    make_router,
)
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind
from lossgate_dev.devenv.procs import wait_until
from tests.infra.kube_fixtures import Kube


@pytest.mark.parametrize(
    ("total", "weight", "canary"),
    [
        (10, 0, 0), (10, 1, 1), (10, 5, 1), (10, 14, 1), (10, 15, 2), (10, 25, 3), (10, 50, 5),
        (10, 94, 9), (10, 95, 9), (10, 99, 9), (10, 100, 10),
        (1, 0, 0), (1, 5, 1), (1, 100, 1), (2, 5, 1), (2, 95, 1), (3, 50, 2), (8, 25, 2), (0, 50, 0),
    ],
)  # fmt: skip
def test_canary_replicas_table(total: int, weight: int, canary: int) -> None:
    # round half up (25% of 10 = 2.5 -> 3), at least 1 while weight > 0, at least 1 baseline while < 100
    assert canary_replicas(total, weight) == canary


@given(st.integers(1, 500), st.integers(0, 100), st.integers(0, 100))
def test_canary_replicas_properties(total: int, w1: int, w2: int) -> None:
    c = canary_replicas(total, w1)
    assert 0 <= c <= total
    assert (c > 0) == (w1 > 0)
    if total >= 2:
        assert (total - c > 0) == (w1 < 100)
    lo, hi = sorted((w1, w2))
    assert canary_replicas(total, lo) <= canary_replicas(total, hi)


def deployment(name: str, version: str, replicas: int) -> client.V1Deployment:
    labels = {"app": "scorer", "version": version}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "scorer"}),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="model", image="registry.invalid/m:1")]
                ),
            ),
        ),
    )


@pytest.fixture
def apps(kube: Kube, namespace: str) -> Any:
    """baseline scorer-v41 at 10 replicas and canary scorer-v42 at 0, behind one Service (app=scorer)."""
    api: Any = client.AppsV1Api(kube.api_client)
    api.create_namespaced_deployment(namespace, deployment("scorer-v41", "v41", 10))
    api.create_namespaced_deployment(namespace, deployment("scorer-v42", "v42", 0))
    client.CoreV1Api(kube.api_client).create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="scorer"),
        spec=client.V1ServiceSpec(selector={"app": "scorer"}, ports=[client.V1ServicePort(port=80)]),
    ))  # fmt: skip
    return api


def ref(namespace: str) -> ReplicaRef:
    return ReplicaRef(namespace, baseline_deployment="scorer-v41", canary_deployment="scorer-v42")


def replicas(apps: Any, namespace: str) -> tuple[int, int]:
    b, c = (
        apps.read_namespaced_deployment_scale(n, namespace).spec.replicas
        for n in ("scorer-v41", "scorer-v42")
    )
    return b or 0, c or 0


def replicaset_replicas(apps: Any, namespace: str) -> dict[str, int]:
    """spec.replicas of each Deployment's ReplicaSet, by owner (made by kube-controller-manager)."""
    return {
        rs.metadata.owner_references[0].name: rs.spec.replicas or 0
        for rs in apps.list_namespaced_replica_set(namespace).items
    }


def settle(apps: Any, namespace: str, baseline: int, canary: int) -> None:
    """Wait until kube-controller-manager has carried the counts into the ReplicaSets."""
    want = {"scorer-v41": baseline, "scorer-v42": canary}
    wait_until(
        lambda: replicaset_replicas(apps, namespace) == want, 60, f"ReplicaSets at {baseline}/{canary}"
    )


def test_factory_picks_the_replica_router(kube: Kube, namespace: str) -> None:
    assert isinstance(make_router(ref(namespace), kube.api_client), ReplicaRatioRouter)


def test_steps_scale_both_deployments_keeping_the_total_then_roll_back(
    kube: Kube, namespace: str, apps: Any
) -> None:
    router = make_router(ref(namespace), kube.api_client)
    # Given 10 baseline replicas and 0 canary: the total is 10
    assert router.get_weights() == Weights(100, 0)
    # When the rollout steps through 5/25/50/100 %, Then canary = round(10 x w / 100), at least 1
    expected = {5: (9, 1), 25: (7, 3), 50: (5, 5), 100: (0, 10)}
    for weight, (b, c) in expected.items():
        got = router.set_weights(Weights(100 - weight, weight))
        # the split in force is the replica ratio (5% of 10 replicas is 1 replica = 10%)
        assert got == Weights(10 * b, 10 * c)
        assert router.get_weights() == got
        assert replicas(apps, namespace) == (b, c)
        if weight == 5:  # both written through the scale subresource, under field manager "lossgate"
            for name in ("scorer-v41", "scorer-v42"):
                fields = apps.read_namespaced_deployment(name, namespace).metadata.managed_fields
                assert ("lossgate", "scale") in {(m.manager, m.subresource) for m in fields}
        # And the deployment controller carries the counts into the ReplicaSets
        settle(apps, namespace, b, c)
    # And the total is recorded on the baseline Deployment
    base = apps.read_namespaced_deployment("scorer-v41", namespace)
    assert base.metadata.annotations[TOTAL_ANNOTATION] == "10"
    # When the rollout rolls back, Then the canary is scaled to 0 and the baseline back to the total
    assert router.set_weights(Weights(100, 0)) == Weights(100, 0)
    assert replicas(apps, namespace) == (10, 0)
    settle(apps, namespace, 10, 0)


def test_second_identical_set_writes_nothing(kube: Kube, namespace: str, apps: Any) -> None:
    router = make_router(ref(namespace), kube.api_client)
    assert router.set_weights(Weights(75, 25)) == Weights(70, 30)

    def writes() -> list[object]:
        # The deployment controller keeps writing status (so resourceVersion moves on its own); a spec or
        # scale write bumps metadata.generation and lossgate's managedFields entries carry its writes.
        out: list[object] = []
        for name in ("scorer-v41", "scorer-v42"):
            meta = apps.read_namespaced_deployment(name, namespace).metadata
            ours = [
                (m.subresource, m.time, str(m.fields_v1))
                for m in meta.managed_fields
                if m.manager == "lossgate"
            ]
            out += [meta.generation, ours]
        return out

    before = writes()
    # When the same weights are set again
    assert router.set_weights(Weights(75, 25)) == Weights(70, 30)
    # Then neither Deployment was written by lossgate
    assert writes() == before
    assert replicas(apps, namespace) == (7, 3)


def test_a_concurrent_rescale_is_not_lost(kube: Kube, namespace: str, apps: Any) -> None:
    other = kube.client_for_token(kube.plane.admin_token)
    calls: list[int] = []

    # Given someone scales the baseline to 12 right after lossgate read it (before the first step)
    def rescale() -> None:
        calls.append(1)
        if len(calls) == 1:
            client.AppsV1Api(other).patch_namespaced_deployment_scale(
                "scorer-v41", namespace, {"spec": {"replicas": 12}}
            )

    router = ReplicaRatioRouter(ref(namespace), kube.api_client, after_read=rescale)
    # When lossgate sets the first step
    got = router.set_weights(Weights(95, 5))
    # Then its stale write was refused, it re-read, and split the new total of 12: 11 + 1
    assert len(calls) == 2
    assert replicas(apps, namespace) == (11, 1)
    assert got == Weights(92, 8)
    assert (
        apps.read_namespaced_deployment("scorer-v41", namespace).metadata.annotations[TOTAL_ANNOTATION]
        == "12"
    )
    cast(Any, other).close()


def test_the_recorded_total_survives_a_half_done_step(kube: Kube, namespace: str, apps: Any) -> None:
    router = make_router(ref(namespace), kube.api_client)
    assert router.set_weights(Weights(75, 25)) == Weights(70, 30)
    # Given a step that scaled the canary up (3 -> 5) but not yet the baseline down (7): 12 replicas
    apps.patch_namespaced_deployment_scale("scorer-v42", namespace, {"spec": {"replicas": 5}})
    # When the step is retried, Then the recorded total (10) is kept, not the transient 12
    assert router.set_weights(Weights(50, 50)) == Weights(50, 50)
    assert replicas(apps, namespace) == (5, 5)


def test_error_classes(kube: Kube, namespace: str, apps: Any) -> None:
    # A missing canary Deployment is named
    missing = ReplicaRef(namespace, baseline_deployment="scorer-v41", canary_deployment="scorer-v43")
    got = make_router(missing, kube.api_client).set_weights(Weights(95, 5))
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.NOT_FOUND
    assert got.message.startswith(f"Deployment {namespace}/scorer-v43 not found")
    # Forbidden without RBAC
    nobody = kube.client_for_token(kube.plane.tokens["nobody"])
    got = make_router(ref(namespace), nobody).get_weights()
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.FORBIDDEN
    assert 'User "nobody" cannot get resource "deployments/scale"' in got.message
    cast(Any, nobody).close()
    # A bad recorded total is Invalid and names the annotation
    apps.patch_namespaced_deployment(
        "scorer-v41", namespace, {"metadata": {"annotations": {TOTAL_ANNOTATION: "x"}}}
    )
    apps.patch_namespaced_deployment_scale("scorer-v42", namespace, {"spec": {"replicas": 1}})
    got = make_router(ref(namespace), kube.api_client).set_weights(Weights(50, 50))
    assert isinstance(got, Problem)
    assert got.kind == RouterErrorKind.INVALID
    assert f"Deployment {namespace}/scorer-v41 has annotation {TOTAL_ANNOTATION}='x'" in got.message
    assert replicas(apps, namespace) == (10, 1)
