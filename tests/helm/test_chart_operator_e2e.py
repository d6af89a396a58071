"""One real rollout with the operator running under the chart's ServiceAccount token (not admin):
the chart's RBAC is enough for everything the operator does, and it logs no refusal."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from kubernetes import client

from lossgate.demo.scenario import Scenario
from lossgate.demo.stack import Stack
from lossgate.devenv.procs import wait_until
from tests.e2e.conftest import TERMINAL, history
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
                f"system:serviceaccount:{release_namespace}:lossgate",
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
        assert "Started" in reasons and any(r.startswith("Promoted") for r in reasons), reasons
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
