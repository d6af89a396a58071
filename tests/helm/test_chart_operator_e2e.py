"""Real rollouts with the operator running under the chart's ServiceAccount token (not admin): the
chart's RBAC is enough for everything the operator does, and it logs no refusal. Namespace-scoped
(a promotion reading a Prometheus Secret by name, then deletion through the finalizer), and two HA
replicas with kopf peering (standby, takeover). Cluster-wide with the default values (a rollback)
runs as a real pod on the node tier: tests/node/test_node_rollouts.py."""

from __future__ import annotations

import base64
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lossgate_dev.demo.scenario import Scenario
from lossgate_dev.demo.stack import Stack
from lossgate_dev.devenv.procs import Server, free_port, wait_until
from tests.e2e.conftest import TERMINAL, condition, history
from tests.helm.install import create_namespace, installed
from tests.infra.kube_fixtures import Kube

pytestmark = pytest.mark.e2e
REFUSALS = re.compile(r"forbidden|\b403\b|not enough permissions|unauthorized", re.IGNORECASE)


@pytest.fixture
def release_namespace(kube: Kube) -> Iterator[str]:
    name = create_namespace(kube, "lossgate-system")
    yield name
    client.CoreV1Api(kube.api_client).delete_namespace(name)


def test_a_rollout_under_the_charts_service_account(
    kube: Kube, stack: Stack, namespace: str, release_namespace: str
) -> None:
    core = client.CoreV1Api(kube.api_client)
    # Given the chart installed in its own namespace, watching the rollout's namespace, with the
    # Prometheus credentials' Secret named (the operator may get that one Secret and no other)
    values = {"watchNamespaces": [namespace], "prometheus": {"authSecretNames": ["prom-token"]}}
    with installed(kube, release_namespace, values) as inst:
        core.create_namespaced_secret(
            namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="prom-token"),
                data={"token": base64.b64encode(b"not-checked-by-this-prometheus").decode()},
            ),
        )
        # And a scenario: two real model servers, their Services, the HTTPRoute, traffic, a healthy run
        sc = Scenario("digits", "good")
        sc.prepare(stack, namespace)
        stack.backfill_training({sc.run: None})
        assert sc.driver is not None
        sc.driver.start()
        try:
            # When the operator runs with a kubeconfig holding only the chart ServiceAccount's token
            sa_kubeconfig = stack.plane.write_kubeconfig(
                stack.workdir / "sa.kubeconfig",
                inst.service_account,
                inst.token,
            )
            operator = stack.start_operator([namespace], extra_env={"KUBECONFIG": str(sa_kubeconfig)})
            manifest = sc.manifest(stack.prom.url)
            manifest["spec"]["analysis"]["prometheus"]["bearerTokenSecretRef"] = {
                "name": "prom-token",
                "key": "token",
            }
            stack.apply_rollout(namespace, manifest)
            got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=240)
        finally:
            sc.driver.stop()
        trail = history(stack, namespace)
        # Then the rollout is promoted: it read the Secret, patched the route at every step, wrote status
        status = got["status"]
        assert status["phase"] == "Promoted", trail
        assert stack.route_weights(namespace, "digits") == {"digits-v1": 0, "digits-v2": 100}
        assert [s["weight"] for s in status["stepStarts"]] == [10, 25, 50]
        # And it posted its decisions as Events
        events = core.list_namespaced_event(namespace).items
        reasons = {e.reason for e in events if e.involved_object.kind == "ModelRollout"}
        assert "Started" in reasons, reasons
        assert any(r.startswith("Promoted") for r in reasons), reasons
        # And kopf's finalizer is on the rollout, and deleting it completes (the finalizer removed by a patch)
        objs = client.CustomObjectsApi(kube.api_client)
        ro = objs.get_namespaced_custom_object(
            "lossgate.io", "v1alpha1", namespace, "modelrollouts", "digits"
        )
        assert "lossgate.io/finalizer" in ro["metadata"]["finalizers"]
        objs.delete_namespaced_custom_object("lossgate.io", "v1alpha1", namespace, "modelrollouts", "digits")

        def gone() -> bool:
            items = objs.list_namespaced_custom_object("lossgate.io", "v1alpha1", namespace, "modelrollouts")
            return not items["items"]

        wait_until(gone, 60, "ModelRollout deleted through the operator's finalizer", operator)
        # And the operator never met a refusal from the API server
        log = operator.log.read_text(errors="replace")
        refused = [line for line in log.splitlines() if REFUSALS.search(line)]
        assert refused == [], "\n".join(refused[:20])
        assert operator.alive()


def start_operator(stack: Stack, name: str, namespace: str, kubeconfig: Path, priority: int) -> Server:
    """`lossgate operator --peering lossgate` as the chart's Deployment runs it, with the SA token."""
    health = free_port()
    argv = [
        sys.executable, "-m", "lossgate.entry", "operator", "--namespace", namespace,
        "--peering", "lossgate", "--metrics-port", "0", "--liveness", f"http://127.0.0.1:{health}/healthz",
    ]  # fmt: skip
    env = {"KUBECONFIG": str(kubeconfig), "LOSSGATE_PEERING_PRIORITY": str(priority), "PYTHONUNBUFFERED": "1"}
    server = Server(name, argv, stack.workdir / f"{name}.log", env=env)
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{health}/healthz"), 60, f"{name} liveness", server)
    return server


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.mark.usefixtures("kopf_peering_crds")
def test_two_replicas_with_peering_one_handles_the_rollout(
    kube: Kube, stack: Stack, namespace: str, release_namespace: str
) -> None:
    # Given the chart installed for HA (2 replicas, peering) watching the rollout's namespace
    values = {"watchNamespaces": [namespace], "replicas": 2, "peering": {"enabled": True}}
    objs = client.CustomObjectsApi(kube.api_client)
    with installed(kube, release_namespace, values) as inst:
        kubeconfig = stack.plane.write_kubeconfig(
            stack.workdir / "sa.kubeconfig", inst.service_account, inst.token
        )

        def peers() -> dict[str, Any]:
            peering = objs.get_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", "lossgate"
            )
            return dict(peering.get("status") or {})

        # When two replicas run under the chart ServiceAccount's token, the first with the higher priority
        servers = [start_operator(stack, "operator-a", namespace, kubeconfig, priority=200)]
        try:
            wait_until(lambda: len(peers()) == 1, 60, "replica a in the KopfPeering", servers[0])
            servers.append(start_operator(stack, "operator-b", namespace, kubeconfig, priority=100))
            a, b = servers
            wait_until(lambda: len(peers()) == 2, 60, "both replicas in the KopfPeering", b)
            # And a rollout arrives whose HTTPRoute does not exist
            manifest = Scenario("digits", "good").manifest(stack.prom.url)
            manifest["spec"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": "missing"}}
            stack.apply_rollout(namespace, manifest)

            def router_ready() -> dict[str, Any]:
                return condition(stack.rollout(namespace, "digits"), "RouterReady")

            # Then the active replica handles it: the condition names the missing route
            wait_until(lambda: router_ready().get("status") == "False", 60, "RouterReady=False", a)
            assert router_ready()["reason"] == "RouteNotFound"
            assert "missing" in router_ready()["message"]
            # And only replica a touched it; b stood by (paused from its start), and both are alive
            mine = "kopf.objects"  # the logger of kopf's per-object handling (one rollout here)
            assert mine in a.log.read_text()
            assert mine not in b.log.read_text()
            assert "Resuming operations" not in b.log.read_text()
            assert a.alive()
            assert b.alive()
            # When replica a stops (it leaves the peering), b resumes and takes the rollout over
            a.stop()
            wait_until(lambda: "Resuming operations" in b.log.read_text(), 60, "b resumes", b)
            wait_until(lambda: mine in b.log.read_text(), 60, "b handles the rollout", b)
            assert router_ready()["status"] == "False"
            assert b.alive()
            # And neither met a refusal from the API server (peering included)
            for s in servers:
                refused = [x for x in s.log.read_text(errors="replace").splitlines() if REFUSALS.search(x)]
                assert refused == [], "\n".join(refused[:20])
        finally:
            for s in servers:
                s.stop()
