"""examples/argocd/health.lua run in a real Lua 5.1 runtime (Argo CD's gopher-lua speaks 5.1), the way
Argo CD runs a health check: the live object as the global `obj`, the script's returned table read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from lossgate.model.status import Phase

ARGOCD = Path(__file__).resolve().parents[2] / "examples" / "argocd"
SCRIPT = (ARGOCD / "health.lua").read_text()


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    out = lua.execute(SCRIPT)
    return {k: out[k] for k in ("status", "message")}


def rollout(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "lossgate.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "fraud-scorer", "namespace": "ml-prod", "generation": generation},
        "spec": {"model": "fraud-scorer"},
    }
    if status is not None:
        obj["status"] = status
    return obj


MSG = "step 2/4: canary loss 0.412 vs 0.409 (+0.003, 95% CS [-0.004, 0.010]), 6120/8000 samples"
CASES = {
    "Promoted": ("Healthy", "promoted v42 at 100%"),
    # the post-promotion watch: promoted, the baseline holding 5% while late labels arrive
    "Watching": ("Healthy", "watching after the promotion (baseline holdback 5%; ...), until ..."),
    "Paused": ("Suspended", "paused at step 2/4"),
    "RolledBack": ("Degraded", "rolled back v42 to 0%: loss regression +0.021 (95% CS [0.012, 0.030])"),
    "Failed": ("Degraded", "training run fraud-scorer-train-v42: 3 non-finite steps"),
    "Progressing": ("Progressing", MSG),
    "Pending": ("Progressing", "waiting for the canary's training health"),
}


def test_every_phase_of_the_api_has_a_case() -> None:
    assert set(CASES) == {p.value for p in Phase}


@pytest.mark.parametrize("phase", sorted(CASES))
def test_phase_maps_to_argo_health_with_the_operators_message(phase: str) -> None:
    expected, message = CASES[phase]
    # Given a rollout whose status is current (observedGeneration == generation)
    obj = rollout(3, {"phase": phase, "observedGeneration": 3, "message": message, "canaryWeight": 25})
    # When Argo CD evaluates the health check; Then the phase maps, and status.message is the message
    assert health(obj) == {"status": expected, "message": message}


@pytest.mark.parametrize("observed", [None, 2])
def test_a_status_behind_the_spec_is_progressing_whatever_its_phase(observed: int | None) -> None:
    # Given a rollout that was Promoted at generation 2 (or never observed), then edited (generation 3)
    status: dict[str, Any] = {"phase": "Promoted", "message": "promoted v42 at 100%"}
    if observed is not None:
        status["observedGeneration"] = observed
    # Then the observedGeneration check comes first: Progressing, not the stale Healthy
    got = health(rollout(3, status))
    assert got == {
        "status": "Progressing",
        "message": "Waiting for the lossgate operator to observe generation 3",
    }


def test_no_status_yet_is_progressing() -> None:
    got = health(rollout(1, None))
    assert got == {
        "status": "Progressing",
        "message": "Waiting for the lossgate operator to pick up the rollout",
    }


def test_a_phase_without_message_says_the_phase() -> None:
    assert health(rollout(1, {"phase": "RolledBack", "observedGeneration": 1})) == {
        "status": "Degraded",
        "message": "phase RolledBack",
    }


def test_the_argocd_cm_snippet_installs_exactly_this_script() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == (
        "ConfigMap",
        "argocd-cm",
        "argocd",
    )
    # The key Argo CD reads for group lossgate.io, kind ModelRollout; the value is health.lua verbatim
    assert cm["data"] == {"resource.customizations.health.lossgate.io_ModelRollout": SCRIPT}
