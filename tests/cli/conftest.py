"""CLI fixtures: the ModelRollout CRD on the real API server, rollouts with statuses written by
decide() (as the operator would write them), and a way to run `lossgate ...` in-process."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from lossgate.cli.main import main
from lossgate.core.machine import decide
from lossgate.core.observation import HealthEvidence, LossEvidence, Observation
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
from lossgate.model.crdgen import crd
from lossgate_dev.devenv.thirdparty import install_crds
from tests.infra.kube_fixtures import Kube

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PASS = HealthEvidence(HealthVerdict.PASS)


@pytest.fixture(scope="session")
def cli_crd(kube: Kube) -> None:
    install_crds(kube.api_client, [crd()])


def manifest(name: str, prometheus: str = "http://prometheus.monitoring:9090", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "fraud-scorer",
        "baseline": {"version": "v41", "service": "fraud-scorer-v41"},
        "canary": {"version": "v42", "service": "fraud-scorer-v42"},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud-scorer"}},
        "steps": [{"weight": 5}, {"weight": 25}, {"weight": 50}, {"weight": 100}],
        "analysis": {
            "interval": "30s",
            "prometheus": {"address": prometheus},
            "loss": {"margin": 0.02, "minSamplesBeforeRollback": 1000, "minSamplesBeforePromotion": 2000},
        },
    }
    body.update(spec)
    return {"apiVersion": "lossgate.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": name},
            "spec": body}  # fmt: skip


def loss(verdict: LossVerdict, **kw: Any) -> LossEvidence:
    values: dict[str, Any] = dict(
        n_baseline=40_000, n_canary=6120, mean_baseline=0.409, mean_canary=0.412, delta=0.003,
        cs_low=-0.004, cs_high=0.010, cs_level=0.95, margin=0.02, p_regression=0.62, p_not_worse=0.21,
        samples_needed=1880,
    )  # fmt: skip
    values.update(kw)
    return LossEvidence(verdict, **values)


def progressing(spec: ModelRolloutSpec, t0: datetime = T0) -> ModelRolloutStatus:
    """Started at t0, advanced to step 2/4 at t0+11m, one more look at t0+12m (Undecided)."""
    o = Observation(generation=1, loss=loss(LossVerdict.UNDECIDED), health=PASS, canary_samples_in_step=6120)
    s = decide(spec, ModelRolloutStatus(), o, t0).status
    s = decide(spec, s, o, t0 + timedelta(minutes=11)).status
    return decide(spec, s, o, t0 + timedelta(minutes=12)).status


def rolled_back(spec: ModelRolloutSpec, t0: datetime = T0, after: timedelta = timedelta(minutes=15)) -> Any:
    """Started at t0; a regression with enough samples at t0+after rolls it back."""
    o = Observation(generation=1, loss=loss(LossVerdict.UNDECIDED), health=PASS, canary_samples_in_step=500)
    s = decide(spec, ModelRolloutStatus(), o, t0).status
    bad = loss(LossVerdict.REGRESSION, mean_canary=0.47, delta=0.07, cs_low=0.031, cs_high=0.109,
               n_canary=2400, p_regression=0.004)  # fmt: skip
    o = Observation(generation=1, loss=bad, health=PASS, canary_samples_in_step=2400)
    return decide(spec, s, o, t0 + after).status


Create = Callable[..., dict[str, Any]]


@pytest.fixture
def create(kube: Kube, cli_crd: None, namespace: str) -> Create:
    """Create a ModelRollout in the test's namespace and write `status(spec)` through the status
    subresource; returns the stored object."""
    custom = client.CustomObjectsApi(kube.api_client)

    def make(
        name: str, status: Callable[[ModelRolloutSpec], ModelRolloutStatus] | None, **kw: Any
    ) -> dict[str, Any]:
        body = manifest(name, **kw)
        custom.create_namespaced_custom_object("lossgate.io", "v1alpha1", namespace, "modelrollouts", body)
        if status is not None:
            wire = status(ModelRolloutSpec.model_validate(body["spec"])).to_wire()
            custom.patch_namespaced_custom_object_status(
                "lossgate.io", "v1alpha1", namespace, "modelrollouts", name, {"status": wire}
            )
        got: dict[str, Any] = custom.get_namespaced_custom_object(
            "lossgate.io", "v1alpha1", namespace, "modelrollouts", name
        )
        return got

    return make


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(*argv: str) -> Result:
    """`lossgate ARGV...` in-process, stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return Result(rc, out.getvalue(), err.getvalue())
