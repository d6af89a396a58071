"""Closed-loop fixtures: the operator as a real process, against the real API server and Prometheus."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lossgate.model.crdgen import crd
from lossgate_dev.demo.scenario import Scenario
from lossgate_dev.demo.stack import Stack
from lossgate_dev.devenv.prom import Prometheus
from lossgate_dev.devenv.thirdparty import install_crds
from tests.infra.kube_fixtures import Kube

TERMINAL = {"Promoted", "RolledBack", "Failed"}


@pytest.fixture(scope="session")
def lossgate_crd(kube: Kube, gateway_api_crds: list[dict[str, Any]]) -> None:
    install_crds(kube.api_client, [crd()])


@pytest.fixture
def stack(kube: Kube, prometheus: Prometheus, lossgate_crd: None, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(kube.plane, prometheus, tmp_path / "stack")
    yield s
    s.stop()


Launch = Callable[..., Scenario]


@pytest.fixture
def launch(stack: Stack, namespace: str) -> Iterator[Launch]:
    """Start one scenario in the test's namespace: models, route, training run, traffic, operator,
    and the ModelRollout (spec overrides as keyword arguments). Stops the traffic at the end."""
    started: list[Scenario] = []

    def start(
        canary: str = "good",
        nan_at: int | None = None,
        apply: bool = True,
        rate: float = 60.0,
        operator_env: dict[str, str] | None = None,
        **spec: Any,
    ) -> Scenario:
        sc = Scenario("digits", canary, nan_at=nan_at, rate=rate)
        sc.prepare(stack, namespace)
        stack.backfill_training({sc.run: nan_at})
        assert sc.driver is not None
        sc.driver.start()
        started.append(sc)
        stack.start_operator([namespace], extra_env=operator_env)
        if apply:
            stack.apply_rollout(namespace, sc.manifest(stack.prom.url, **spec))
        return sc

    yield start
    for sc in started:
        if sc.driver is not None:
            sc.driver.stop()


def history(stack: Stack, namespace: str, name: str = "digits") -> str:
    """The decision trail of a rollout, one line per decision (pytest shows it on failure)."""
    status = (stack.rollout(namespace, name).get("status")) or {}
    return "\n".join(
        f"{h['time']} {h['decision']:<8} w={h['canaryWeight']:>3} {h['message']}"
        for h in status.get("history", [])
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})
