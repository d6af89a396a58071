"""The generated ModelRollout CRD against a real kube-apiserver (tests/infra/kube_fixtures.py).

Every example applies and reads back with exactly pydantic's defaults; every bad manifest is refused
with a message naming the field; `kubectl get mro` shows the printer columns; the status subresource
is separate from the spec and holds exactly what decide() writes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from lossgate.core.machine import decide
from lossgate.core.observation import HealthEvidence, LossEvidence, Observation
from lossgate.core.paired_step import PairedEvidence
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.model import ModelRollout, ModelRolloutStatus
from lossgate_dev.devenv.procs import wait_until
from tests.infra.kube_fixtures import Kube

pytestmark = [pytest.mark.kube, pytest.mark.usefixtures("modelrollout_crd")]

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modelrollout.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BAD = sorted((Path(__file__).parent / "bad_manifests").glob("*.yaml"))
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def modelrollout_crd(kube: Kube) -> None:
    out = kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    assert out.returncode == 0, out.stderr
    out = kube.kubectl(
        "wait", "--for=condition=Established", "crd/modelrollouts.lossgate.io", "--timeout=60s"
    )
    assert out.returncode == 0, out.stderr

    def served() -> bool:
        return kube.kubectl("get", "mro", "-A").returncode == 0

    wait_until(served, 30, "ModelRollout served by discovery")


def rollouts_in(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ModelRollout"]


def get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    out = kube.kubectl("get", "mro", name, "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    body: dict[str, Any] = json.loads(out.stdout)
    return body


def test_the_crd_is_accepted_and_established(kube: Kube) -> None:
    out = kube.kubectl("get", "crd", "modelrollouts.lossgate.io", "-o", "json")
    crd = json.loads(out.stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert crd["spec"]["names"]["shortNames"] == ["mro"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_applies_and_reads_back_with_pydantic_defaults(
    kube: Kube, namespace: str, path: Path
) -> None:
    docs = rollouts_in(path)
    assert docs, f"{path} holds no ModelRollout"
    out = kube.kubectl("apply", "-n", namespace, "-f", str(path))
    assert out.returncode == 0, out.stderr
    for doc in docs:
        stored = get(kube, namespace, doc["metadata"]["name"])
        # The API server's structural defaults are exactly the pydantic defaults...
        assert stored["spec"] == ModelRollout.model_validate(doc).spec.to_wire()
        # ...and what it stores parses back into the same model.
        assert ModelRollout.model_validate(stored).spec == ModelRollout.model_validate(doc).spec


def expected_field(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# field: "):
            return line.removeprefix("# field: ").strip()
    raise AssertionError(f"{path} has no '# field:' header")


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_manifests_are_refused_naming_the_field(kube: Kube, namespace: str, path: Path) -> None:
    field = expected_field(path)
    out = kube.kubectl("apply", "-n", namespace, "-f", str(path))
    assert out.returncode != 0, f"{path.name} was accepted"
    message = out.stderr
    assert field in message, message
    (doc,) = rollouts_in(path)
    assert kube.kubectl("get", "mro", doc["metadata"]["name"], "-n", namespace).returncode != 0


def status_from_decide(kube: Kube, namespace: str, name: str) -> ModelRolloutStatus:
    """A real status, as the operator would write it: two ticks of decide() on the stored spec."""
    spec = ModelRollout.model_validate(get(kube, namespace, name)).spec
    loss = LossEvidence(
        LossVerdict.UNDECIDED, n_baseline=40_000, n_canary=6120, mean_baseline=0.409, mean_canary=0.412,
        delta=0.003, cs_low=-0.004, cs_high=0.010, cs_level=0.95, samples_needed=1880,
    )  # fmt: skip
    o = Observation(
        generation=1, loss=loss, health=HealthEvidence(HealthVerdict.PASS), canary_samples_in_step=6120
    )
    s = decide(spec, ModelRolloutStatus(), o, T0).status
    s = decide(spec, s, o, T0 + timedelta(minutes=11)).status  # quotas met: step 2
    return decide(spec, s, o, T0 + timedelta(minutes=12)).status


def test_printer_columns_and_status_subresource(kube: Kube, namespace: str) -> None:
    path = ROOT / "examples" / "modelrollout-gateway-api.yaml"
    assert kube.kubectl("apply", "-n", namespace, "-f", str(path)).returncode == 0
    name = rollouts_in(path)[0]["metadata"]["name"]
    status = status_from_decide(kube, namespace, name)
    assert status.current_step == "2/4"
    assert status.canary_weight == 25

    patch = json.dumps({"status": status.to_wire()})
    out = kube.kubectl(
        "patch", "mro", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    assert out.returncode == 0, out.stderr
    stored = get(kube, namespace, name)
    assert stored["metadata"]["generation"] == 1, "a status write must not bump the generation"
    # What decide() wrote is exactly what the API server keeps (no pruned or reformatted field).
    assert ModelRolloutStatus.model_validate(stored["status"]) == status
    assert stored["status"] == status.to_wire()

    table = kube.kubectl("get", "mro", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "STEP", "WEIGHT", "DELTA", "AGE"]
    assert row.split()[:5] == [name, "Progressing", "2/4", "25", "0.003"]
    wide = kube.kubectl("get", "mro", "-n", namespace, "-o", "wide").stdout
    assert "VERDICT" in wide
    assert "MESSAGE" in wide
    assert "Undecided" in wide
    assert "canary loss 0.412 vs 0.409 (+0.003, 95% CS [-0.004, 0.010])" in wide
    # The category and the full names work too.
    assert name in kube.kubectl("get", "lossgate", "-n", namespace).stdout
    assert name in kube.kubectl("get", "modelrollouts.lossgate.io", "-n", namespace).stdout

    # A write to the main resource changes the spec and leaves the status alone.
    both = json.dumps({"spec": {"paused": True}, "status": {"phase": "Failed"}})
    out = kube.kubectl("patch", "mro", name, "-n", namespace, "--type=merge", "-p", both)
    assert out.returncode == 0, out.stderr
    stored = get(kube, namespace, name)
    assert stored["spec"]["paused"] is True
    assert stored["metadata"]["generation"] == 2
    assert stored["status"]["phase"] == "Progressing"
    # And a status write cannot change the spec.
    sneaky = json.dumps({"spec": {"paused": False}, "status": {"phase": "Paused"}})
    out = kube.kubectl(
        "patch", "mro", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", sneaky
    )
    assert out.returncode == 0, out.stderr
    stored = get(kube, namespace, name)
    assert stored["spec"]["paused"] is True
    assert stored["status"]["phase"] == "Paused"


def test_status_schema_refuses_a_bad_phase(kube: Kube, namespace: str) -> None:
    path = ROOT / "examples" / "modelrollout-replicas.yaml"
    assert kube.kubectl("apply", "-n", namespace, "-f", str(path)).returncode == 0
    name = rollouts_in(path)[0]["metadata"]["name"]
    patch = json.dumps({"status": {"phase": "Exploded"}})
    out = kube.kubectl(
        "patch", "mro", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    assert out.returncode != 0
    assert "status.phase" in out.stderr


def test_kubectl_explain_describes_fields(kube: Kube) -> None:
    out = kube.kubectl("explain", "mro.spec.canary.trainingRun")
    assert out.returncode == 0, out.stderr
    assert "gradient health gates the start and every step" in " ".join(out.stdout.split())


def test_a_shadow_rollouts_status_is_kept_exactly(kube: Kube, namespace: str) -> None:
    # Given the shadow example applied, and the status decide() writes in its shadow step
    path = ROOT / "examples" / "modelrollout-shadow.yaml"
    assert kube.kubectl("apply", "-n", namespace, "-f", str(path)).returncode == 0
    name = rollouts_in(path)[0]["metadata"]["name"]
    spec = ModelRollout.model_validate(get(kube, namespace, name)).spec
    paired = PairedEvidence(
        LossVerdict.UNDECIDED,
        n=1234,
        mean_baseline=0.41,
        delta=0.002,
        cs_low=-0.01,
        cs_high=0.02,
        margin=0.02,
    )
    o = Observation(generation=1, loss=LossEvidence(LossVerdict.INSUFFICIENT_DATA), paired=paired)
    s = decide(spec, ModelRolloutStatus(), o, T0).status
    status = decide(spec, s, o, T0 + timedelta(minutes=1)).status
    assert status.mirror_percent == 50
    assert status.canary_weight == 0
    assert status.paired is not None
    # When it is written through the status subresource
    patch = json.dumps({"status": status.to_wire()})
    out = kube.kubectl(
        "patch", "mro", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    assert out.returncode == 0, out.stderr
    # Then the API server keeps every paired number and the mirror percent (nothing pruned)
    stored = get(kube, namespace, name)
    assert stored["status"] == status.to_wire()
    assert stored["status"]["paired"]["n"] == 1234
    assert stored["status"]["mirrorPercent"] == 50
