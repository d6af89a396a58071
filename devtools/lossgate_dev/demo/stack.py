"""The moving parts of a closed loop, on a given control plane and Prometheus: model servers,
Services and an HTTPRoute, a backfilled training run, the operator as a process, ModelRollouts.

Used by `make demo` and by the end-to-end tests, so the demo exercises exactly what is tested.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lossgate.adapters.kube import typed
from lossgate.model import API_GROUP, API_VERSION, PLURAL
from lossgate.model.crdgen import crd as build_crd
from lossgate_dev.demo.trainer import openmetrics, train
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.kube import ControlPlane
from lossgate_dev.devenv.procs import Server, free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus
from lossgate_dev.devenv.thirdparty import install_crds, load_gateway_api_crds

GROUP, VERSION = API_GROUP, API_VERSION
GW = ("gateway.networking.k8s.io", "v1", "httproutes")

SCRAPE_LAG_S = 1.5  # the operator's LOSSGATE_SCRAPE_LAG_S (`lossgate replay` tests replay with it)


@dataclass
class ModelProcess:
    service: str
    version: str
    url: str
    server: Server


@dataclass
class Stack:
    plane: ControlPlane
    prom: Prometheus
    workdir: Path
    models: list[ModelProcess] = field(default_factory=list)
    operator: Server | None = None
    operator_metrics_port: int = 0
    joiner: JoinerProcess | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = typed.new_client(config_file=str(self.plane.kubeconfig))
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    # Cluster-wide set-up ---------------------------------------------------------------------------
    def install_crds(self) -> None:
        """The ModelRollout CRD (generated from the models) and the real Gateway API CRDs."""
        install_crds(self.api, [build_crd(), *load_gateway_api_crds()])

    def namespace(self, name: str) -> str:
        with contextlib.suppress(ApiException):
            self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    # The label joiner ------------------------------------------------------------------------------
    def start_joiner(self) -> JoinerProcess:
        """One `lossgate joiner` (SQLite) for every scenario: model servers log predictions to it,
        drivers post labels to it, Prometheus scrapes it."""
        self.joiner = JoinerProcess.start(
            self.workdir / "joiner", "--sqlite", str(self.workdir / "joiner.db")
        )
        self.prom.add_target(self.joiner.address, {"service": "lossgate-joiner"})
        return self.joiner

    # Models, services, routes ----------------------------------------------------------------------
    def start_model(self, model: str, version: str, variant: str, service: str) -> ModelProcess:
        port = free_port()
        argv = [sys.executable, "-m", "lossgate_dev.demo.server", "--model", model, "--version", version,
                "--variant", variant, "--port", str(port)]  # fmt: skip
        if self.joiner is not None:
            argv += ["--joiner", self.joiner.url]
        srv = Server(f"model-{service}", argv, self.workdir / f"model-{service}.log")
        url = f"http://127.0.0.1:{port}"
        proc = ModelProcess(service, version, url, srv)
        self.models.append(proc)
        wait_until(lambda: _http_ok(url + "/healthz"), 60, f"model server {service}", srv)
        self.prom.add_target(f"127.0.0.1:{port}", {"service": service})
        return proc

    def create_service(self, namespace: str, name: str) -> None:
        svc = client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8080)], selector={"app": name}),
        )
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_service(namespace, svc)

    def create_route(self, namespace: str, name: str, baseline: str, canary: str | None = None) -> None:
        refs = [{"name": baseline, "port": 8080, "weight": 100}]
        if canary:
            refs.append({"name": canary, "port": 8080, "weight": 0})
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "demo-gateway"}], "rules": [{"backendRefs": refs}]},
        }
        self.custom.create_namespaced_custom_object(*GW[:2], namespace, GW[2], route)

    def route_weights(self, namespace: str, name: str) -> dict[str, int]:
        route = cast(
            dict[str, Any], self.custom.get_namespaced_custom_object(*GW[:2], namespace, GW[2], name)
        )
        return {r["name"]: int(r.get("weight", 1)) for r in route["spec"]["rules"][0]["backendRefs"]}

    def backfill_training(self, runs: dict[str, int | None], steps: int = 400) -> None:
        """Train each run (name -> NaN step or None) and load its history into Prometheus.
        Restarts Prometheus: do it before rollouts start."""
        end = time.time() - 30
        # One promtool call per run: promtool refuses ("out of order sample") a file holding several
        # runs over the same time range, even merged family by family; Prometheus merges the blocks.
        for run, nan in runs.items():
            text = openmetrics(train(run, steps=steps, nan_at=nan), end).replace("# EOF\n", "")
            self.prom.backfill(_merge_families(text))

    # Rollouts ----------------------------------------------------------------------------------------
    def apply_rollout(self, namespace: str, manifest: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)

    def rollout(self, namespace: str, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any], self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )

    def wait_phase(self, namespace: str, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
        got: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal got
            got = self.rollout(namespace, name)
            return (got.get("status") or {}).get("phase") in phases

        wait_until(
            reached, timeout, f"ModelRollout {namespace}/{name} phase in {sorted(phases)}", self.operator
        )
        return got

    # The operator ------------------------------------------------------------------------------------
    def start_operator(self, namespaces: list[str], extra_env: dict[str, str] | None = None) -> Server:
        self.operator_metrics_port, health = free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "lossgate.entry",
            "operator",
            "--metrics-port",
            str(self.operator_metrics_port),
            "--liveness",
            f"http://127.0.0.1:{health}/healthz",
        ]
        for ns in namespaces:
            argv += ["--namespace", ns]
        env = {
            "KUBECONFIG": str(self.plane.kubeconfig),
            "LOSSGATE_TRAINING_LOOKBACK_S": "3600",
            "LOSSGATE_SCRAPE_LAG_S": str(SCRAPE_LAG_S),
            "LOSSGATE_METRICS_ADDRESS": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.operator = Server("operator", argv, self.workdir / "operator.log", env=env)
        wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{health}/healthz"), 60, "operator liveness", self.operator
        )
        return self.operator

    def stop_operator(self, kill: bool = False) -> None:
        if self.operator is not None:
            if kill:
                self.operator.proc.kill()
                self.operator.proc.wait(10)
            self.operator.stop()
            self.operator = None

    def stop(self) -> None:
        self.stop_operator()
        for m in self.models:
            m.server.stop()
        self.models.clear()
        if self.joiner is not None:
            self.joiner.stop()
            self.joiner = None
        typed.close(self.api)


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)


def _merge_families(text: str) -> str:
    families: dict[str, list[str]] = {}
    order: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line
            if current not in families:
                families[current] = []
                order.append(current)
        elif line and not line.startswith("#"):
            families[current].append(line)
    out = [line for head in order for line in (head, *families[head])]
    return "\n".join([*out, "# EOF"]) + "\n"


os.environ.setdefault("PYTHONUNBUFFERED", "1")
