"""examples/argocd/application.yaml ignores exactly what lossgate writes: its jqPathExpressions,
evaluated by gojq (Argo CD's jq engine, as Argo CD does: `del(expr)` on both sides before diffing),
against a real HTTPRoute before and after lossgate set the weights."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from lossgate.adapters.routers import GatewayRouteRef, make_router
from lossgate.core.evidence import Weights
from tests.infra.kube_fixtures import Kube

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "argocd" / "application.yaml"
GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
pytestmark = pytest.mark.usefixtures("gateway_api_crds")


def jq(gojq: Path, program: str, doc: Any) -> Any:
    out = subprocess.run(
        [str(gojq), "-c", program], input=json.dumps(doc), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def git_route() -> dict[str, Any]:
    """The HTTPRoute as the example's comment says to keep it in Git (+ an unrelated rule after it)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": "fraud-scorer"},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": "gateways"}],
            "rules": [
                {"backendRefs": [{"name": "fraud-scorer-v41", "port": 80, "weight": 100},
                                 {"name": "fraud-scorer-v42", "port": 80, "weight": 0}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/explain"}}],
                 "backendRefs": [{"name": "explainer", "port": 80, "weight": 1}]},
            ],
        },
    }  # fmt: skip


def test_the_example_ignores_exactly_the_weights_lossgate_writes(
    kube: Kube, namespace: str, gojq: Path
) -> None:
    app = yaml.safe_load(EXAMPLE.read_text())
    (route_rule,) = [d for d in app["spec"]["ignoreDifferences"] if d["kind"] == "HTTPRoute"]
    (expr,) = route_rule["jqPathExpressions"]
    # Given the Application's sync keeps ignored fields live
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert (route_rule["group"], route_rule["name"]) == (GROUP, "fraud-scorer")
    # And the route created from Git
    objs = client.CustomObjectsApi(kube.api_client)
    before = cast(
        dict[str, Any], objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, git_route())
    )
    # When lossgate moves the rollout to 75/25
    ref = GatewayRouteRef(namespace, "fraud-scorer", 0, "fraud-scorer-v41", "fraud-scorer-v42")
    assert make_router(ref, kube.api_client).set_weights(Weights(75, 25)) == Weights(75, 25)
    after = cast(
        dict[str, Any], objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fraud-scorer")
    )
    assert before["spec"] != after["spec"]
    # Then the expression selects exactly the two weights lossgate wrote, nothing else
    weights = [["spec", "rules", 0, "backendRefs", i, "weight"] for i in (0, 1)]
    assert jq(gojq, f"[path({expr})]", after) == weights
    # And with them deleted (Argo CD's normalization) the spec is the same as before: the app stays Synced
    assert jq(gojq, f"del({expr}) | .spec", after) == jq(gojq, f"del({expr}) | .spec", before)
    # And the commented JSON pointers are the same two fields
    assert (
        "jsonPointers: [/spec/rules/0/backendRefs/0/weight, /spec/rules/0/backendRefs/1/weight]"
        in EXAMPLE.read_text()
    )
