"""examples/training/pytorchjob.yaml against the real kube-apiserver with Kubeflow's real PyTorchJob CRD
(from the training operator's published Go module): a server-side dry run validates it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.infra.kube_fixtures import Kube

MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "training" / "pytorchjob.yaml"


@pytest.mark.usefixtures("pytorchjob_crd")
def test_the_api_server_accepts_the_pytorchjob(kube: Kube, namespace: str) -> None:
    # Given the example PyTorchJob, placed in a fresh namespace
    doc = yaml.safe_load(MANIFEST.read_text())
    doc["metadata"]["namespace"] = namespace
    # When it is applied as a server-side dry run
    out = kube.kubectl("apply", "--dry-run=server", "--server-side", "--field-manager=docs-test", "-f", "-",
                       input=json.dumps(doc))  # fmt: skip
    # Then the API server validates it against the CRD's schema and accepts it
    assert out.returncode == 0, out.stderr
    assert "pytorchjob.kubeflow.org/fraud-scorer-train-v42 serverside-applied (server dry run)" in out.stdout
    # And both replicas run the example under torchrun with the same run label and metrics port
    for spec in doc["spec"]["pytorchReplicaSpecs"].values():
        container = spec["template"]["spec"]["containers"][0]
        assert container["command"][:2] == ["torchrun", "--nproc_per_node=1"]
        assert (
            container["command"][container["command"].index("--lossgate-run") + 1] == "fraud-scorer-train-v42"
        )
        assert container["ports"][0]["containerPort"] == 9100
