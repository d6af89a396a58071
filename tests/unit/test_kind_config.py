"""kind-config.yaml is what users feed `kind create cluster`: check its shape, not just that it parses."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_kind_config_is_a_two_node_cluster_with_gateway_ports() -> None:
    # Given the checked-in kind config
    doc = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    # Then it is a kind Cluster of the v1alpha4 API
    assert doc["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert doc["kind"] == "Cluster"
    # And it has exactly one control-plane node and one worker
    assert sorted(n["role"] for n in doc["nodes"]) == ["control-plane", "worker"]
    # And the control plane maps host ports to the gateway's NodePorts
    cp = next(n for n in doc["nodes"] if n["role"] == "control-plane")
    ports = {(m["hostPort"], m["containerPort"]) for m in cp["extraPortMappings"]}
    assert (8080, 30080) in ports
