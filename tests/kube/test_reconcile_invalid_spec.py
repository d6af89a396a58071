"""The reconciler's answer to a spec it cannot act on (e.g. a CRD older than the operator lets through
what the operator refuses): one field-named condition on the real object, one Event, no crash."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from lossgate.core.actions import EmitEvent
from lossgate.model.crdgen import crd
from lossgate.reconcile.deps import Deps, OperatorConfig
from lossgate.reconcile.rollout import INVALID_SPEC_RECHECK, tick
from lossgate_dev.devenv.thirdparty import install_crds
from tests.infra.kube_fixtures import Kube

GROUP, VERSION, PLURAL = "lossgate.io", "v1alpha1", "modelrollouts"
SPEC: dict[str, Any] = {
    "model": "m",
    "baseline": {"version": "v1", "service": "m-v1"},
    "canary": {"version": "v2", "service": "m-v2"},
    "trafficRouting": {"gatewayAPI": {"httpRoute": "m"}},
    "steps": [{"weight": 10}, {"weight": 100}],
    "analysis": {"prometheus": {"address": "http://127.0.0.1:1"}, "loss": {"margin": 0.01}},
}


@pytest.fixture(scope="module")
def rollout_crd(kube: Kube) -> None:
    install_crds(kube.api_client, [crd()])


def test_invalid_spec_is_a_condition_and_one_event(kube: Kube, rollout_crd: None, namespace: str) -> None:
    from kubernetes import client

    api = client.CustomObjectsApi(kube.api_client)
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": "m"},
        "spec": SPEC,
    }
    body = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    # Given the object as an older CRD would have let it through: weights not increasing
    bad = copy.deepcopy(body)
    bad["spec"]["steps"] = [{"weight": 50}, {"weight": 10}, {"weight": 100}]
    deps = Deps(api_client=kube.api_client, settings=OperatorConfig(metrics_port=0))
    events: list[EmitEvent] = []
    # When the reconciler ticks twice on it
    first = asyncio.run(tick(deps, bad, events.append))
    bad["status"] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m")["status"]
    asyncio.run(tick(deps, bad, events.append))
    # Then status says SpecValid=False, naming the object, the field and the fix
    status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m")["status"]
    cond = next(c for c in status["conditions"] if c["type"] == "SpecValid")
    assert cond["status"] == "False"
    assert cond["reason"] == "InvalidSpec"
    assert f"ModelRollout {namespace}/m" in cond["message"]
    assert "spec.steps" in cond["message"]
    # And nothing else moved: no phase change, no weight
    assert status.get("canaryWeight", 0) == 0
    assert status.get("phase", "Pending") == "Pending"
    # And exactly one Warning event was asked for, and the next look is a slow recheck, not a retry storm
    assert [(e.type.value, e.reason) for e in events] == [("Warning", "InvalidSpec")]
    assert first == INVALID_SPEC_RECHECK
