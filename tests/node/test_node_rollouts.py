"""The install path on a real node: `helm install` of the chart, the operator as a pod, real HTTP
traffic through Traefik splitting by the weights the operator writes, a restart mid-rollout, and
`helm upgrade` / `helm uninstall`.

The tests share one release and run in file order (install, rollouts, restart, upgrade/uninstall):
the release is the fixture's state, as on a user's cluster.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helm_python import Chart, Config
from kubernetes import client

from lossgate_dev.demo.gateway_driver import GatewayDriver
from lossgate_dev.demo.models import traffic
from lossgate_dev.devenv.node_stack import SCRAPE_INTERVAL_S, NodeStack
from lossgate_dev.devenv.procs import wait_until
from tests.e2e.test_resilience import assert_state_is_the_full_recompute
from tests.helm.chart import CHART
from tests.node import workload as w

RELEASE, RELEASE_NS = "lossgate", "lossgate-system"
REFUSALS = re.compile(r"forbidden|\b403\b|not enough permissions|unauthorized", re.IGNORECASE)
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
VALUES: dict[str, Any] = {
    "image": {"repository": "lossgate.local/lossgate", "tag": "dev", "pullPolicy": "Never"},
    "operator": {"scrapeLagSeconds": 1, "trainingLookbackSeconds": 3600},
    "liveness": {"initialDelaySeconds": 5, "periodSeconds": 5},
}


def looks_of(api: client.ApiClient, ns: str) -> int:
    return int((w.status(api, ns).get("judgeState") or {}).get("looks") or 0)


def helm(stack: NodeStack) -> Config:
    assert stack.plane is not None
    return Config(kubeconfig_path=str(stack.plane.kubeconfig), namespace=RELEASE_NS)


def operator_pod(api: client.ApiClient) -> client.V1Pod | None:
    pods = client.CoreV1Api(api).list_namespaced_pod(RELEASE_NS, label_selector=INSTANCE).items
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    return live[0] if len(live) == 1 else None


def ready(pod: client.V1Pod | None) -> bool:
    conds = (pod.status.conditions or []) if pod is not None else []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


@pytest.fixture(scope="module")
def release(node_stack: NodeStack) -> Iterator[Config]:
    cfg = helm(node_stack)
    with Chart.load(CHART) as chart:
        cfg.install(
            chart, RELEASE, VALUES, namespace=RELEASE_NS, create_namespace=True, wait="watcher", timeout=240
        )
    yield cfg
    cfg.uninstall(RELEASE, ignore_not_found=True, wait="watcher", timeout=120)
    cfg.close()


@pytest.fixture
def node_ns(node_api: client.ApiClient) -> Iterator[str]:
    name = f"n-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(node_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def start_models(stack: NodeStack, api: client.ApiClient, ns: str, canary: str) -> dict[str, str]:
    w.kubectl_apply(stack, w.models(stack, ns, canary))
    return w.pod_urls(api, ns)


def binomial_bound(p: float, n: float) -> float:
    """4.5 standard deviations of a binomial share, plus one request of slack for interval edges."""
    return 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1.0 / n


def test_helm_install_runs_the_operator_as_a_ready_non_root_pod(
    node_stack: NodeStack, node_api: client.ApiClient, release: Config
) -> None:
    # Given the chart installed with `helm install --wait` on the node
    # Then the operator runs as a pod: Ready (its liveness probe passing), never restarted
    wait_until(lambda: ready(operator_pod(node_api)), 120, "operator pod Ready")
    pod = operator_pod(node_api)
    assert pod is not None
    (cs,) = pod.status.container_statuses
    assert cs.ready
    assert cs.restart_count == 0
    assert cs.image == "lossgate.local/lossgate:dev"
    # And under the chart's ServiceAccount and securityContext: non-root, read-only root, probed
    spec = pod.spec
    (c,) = spec.containers
    assert spec.service_account_name == RELEASE
    assert spec.security_context.run_as_non_root
    assert spec.security_context.run_as_user == 10001
    assert c.security_context.read_only_root_filesystem is True
    assert c.liveness_probe.http_get.path == "/healthz"
    assert c.liveness_probe.http_get.port == "healthz"
    assert {p.name: p.container_port for p in c.ports}["healthz"] == 8080
    # And the process really is uid 10001 on a read-only root (asked inside the container)
    assert node_stack.plane is not None
    probe = "import os, importlib.util as u; print(os.getuid(), u.find_spec('pip')); open('/x', 'w')"
    out = node_stack.plane.kubectl("exec", "-n", RELEASE_NS, pod.metadata.name, "--", "python", "-c", probe)
    assert out.stdout.split() == ["10001", "None"]  # and no pip left in the image
    assert "Read-only file system" in out.stderr
    assert release.status(RELEASE)["status"] == "deployed"


def run_rollout(
    stack: NodeStack, api: client.ApiClient, ns: str, canary: str, steps: list[int]
) -> tuple[w.Sampler, GatewayDriver, dict[str, Any]]:
    urls = start_models(stack, api, ns, canary)
    driver = GatewayDriver(stack.gateway.web_url, w.host(ns), urls, traffic(), rate=100.0).start()
    sampler = w.Sampler(api, ns, urls).start()
    try:
        w.kubectl_apply(stack, [w.rollout(ns, stack.prometheus_url, steps)])
        wait_until(
            lambda: w.status(api, ns).get("phase") in {"Promoted", "RolledBack", "Failed"},
            300,
            f"rollout in {ns} to end",
            interval=1.0,
        )
        final = w.status(api, ns)
        # Keep the traffic on for a few scrape intervals after the end (the rollback check needs it)
        t_end = time.monotonic()
        wait_until(lambda: time.monotonic() - t_end > 6 * SCRAPE_INTERVAL_S, 30, "traffic after the end")
    finally:
        driver.stop()
        sampler.stop()
    return sampler, driver, final


def check_split(sampler: w.Sampler) -> dict[int, tuple[float, float]]:
    shares = sampler.shares(settle_s=3.0)
    for weight, (canary, total) in shares.items():
        if total < 50:
            continue
        p = weight / 100
        assert abs(canary / total - p) <= binomial_bound(p, total), (weight, canary, total)
    return shares


def test_bad_canary_is_rolled_back_and_gets_no_traffic_after_two_scrape_intervals(
    node_stack: NodeStack, node_api: client.ApiClient, release: Config, node_ns: str
) -> None:
    # Given a worse canary behind the same data plane
    sampler, _, final = run_rollout(node_stack, node_api, node_ns, "bad", [20, 50, 100])
    # Then the operator rolls it back
    assert final["phase"] == "RolledBack", w.history(node_api, node_ns)
    check_split(sampler)
    # And from two scrape intervals after the route went back to 0, no request reaches the canary
    t0 = next(
        s.t
        for prev, s in zip(sampler.samples, sampler.samples[1:], strict=False)
        if prev.weight > 0 and s.weight == 0
    )
    after = [s for s in sampler.samples if s.t >= t0 + 2 * SCRAPE_INTERVAL_S]
    assert len(after) >= 4
    assert after[-1].t - after[0].t >= 2.0
    assert after[-1].canary == after[0].canary, (after[0], after[-1])
    assert after[-1].baseline > after[0].baseline  # traffic kept flowing, all to the baseline
    # And the route is back to 100/0 with the Warning posted, by the operator pod running with the
    # chart's default values (cluster-wide, no Secret access) and its ServiceAccount token only
    assert w.canary_weight(node_api, node_ns) == 0
    events = client.CoreV1Api(node_api).list_namespaced_event(node_ns).items
    assert [e.type for e in events if e.reason == "LossRegression"] == ["Warning"]
    # And it met no refusal from the API server (its log, read through the kubelet)
    pod = operator_pod(node_api)
    assert pod is not None
    log = client.CoreV1Api(node_api).read_namespaced_pod_log(pod.metadata.name, RELEASE_NS)
    refused = [x for x in log.splitlines() if REFUSALS.search(x)]
    assert refused == [], "\n".join(refused[:20])


def test_good_canary_is_promoted_through_the_real_data_plane_across_an_operator_pod_kill(
    node_stack: NodeStack, node_api: client.ApiClient, release: Config, node_ns: str
) -> None:
    # Given the quickstart's models as pods, a better canary, traffic through Traefik, and the
    # rollout on its second step (weight 50)
    urls = start_models(node_stack, node_api, node_ns, "good")
    driver = GatewayDriver(node_stack.gateway.web_url, w.host(node_ns), urls, traffic(), rate=100.0).start()
    sampler = w.Sampler(node_api, node_ns, urls).start()
    try:
        w.kubectl_apply(node_stack, [w.rollout(node_ns, node_stack.prometheus_url, [20, 50, 100])])
        wait_until(lambda: w.status(node_api, node_ns).get("stepIndex") == 1, 240, "step 2", interval=0.5)
        old = operator_pod(node_api)
        assert old is not None
        before = w.status(node_api, node_ns)
        # When the operator's pod is deleted with no grace period (killed: no chance to save anything)
        client.CoreV1Api(node_api).delete_namespaced_pod(
            old.metadata.name, RELEASE_NS, grace_period_seconds=0
        )
        # Then the Deployment's new pod becomes Ready
        wait_until(
            lambda: (
                (p := operator_pod(node_api)) is not None and p.metadata.uid != old.metadata.uid and ready(p)
            ),
            180,
            "a new operator pod Ready",
            interval=0.5,
        )
        # And it continues the judge's state from status: a few looks on, the state equals the full
        # recompute over every interval since the start, read back from Prometheus now
        looks = int((before.get("judgeState") or {}).get("looks") or 0)
        wait_until(lambda: looks_of(node_api, node_ns) >= looks + 3, 120, "the judge to go on", interval=0.5)
        obj = w.custom(node_api, w.MRO, node_ns, "modelrollouts", "digits")
        assert_state_is_the_full_recompute(obj, node_stack.prometheus_url, node_ns)
        # And the rollout goes on from the same step to promotion
        wait_until(
            lambda: w.status(node_api, node_ns).get("phase") in {"Promoted", "RolledBack", "Failed"},
            240,
            "the rollout to end",
            interval=1.0,
        )
    finally:
        driver.stop()
        sampler.stop()
    final = w.status(node_api, node_ns)
    assert final["phase"] == "Promoted", w.history(node_api, node_ns)
    # And from status alone: the same step starts and start time, no restart, never back below 50
    assert final["stepStarts"][:2] == before["stepStarts"][:2]
    assert final["startedAt"] == before["startedAt"]
    assert "Restart" not in w.history(node_api, node_ns)
    weights = [s.weight for s in sampler.samples]
    assert all(x >= 50 for x in weights[weights.index(50) :]), weights
    # And every weight the operator set is the canary's share counted at the model servers
    shares = check_split(sampler)
    assert {20, 50} <= {k for k, (_, n) in shares.items() if n >= 50}, shares
    assert driver.errors <= 5, driver.errors


def test_helm_upgrade_then_uninstall_keeps_the_crd_and_leaves_no_orphans(
    node_stack: NodeStack, node_api: client.ApiClient, release: Config
) -> None:
    old = operator_pod(node_api)
    assert old is not None
    # When the release is upgraded with changed values
    with Chart.load(CHART) as chart:
        release.upgrade(
            chart,
            RELEASE,
            VALUES | {"operator": VALUES["operator"] | {"logLevel": "DEBUG"}},
            wait="watcher",
            timeout=240,
        )
    # Then a new pod runs with them, Ready
    wait_until(
        lambda: (p := operator_pod(node_api)) is not None and p.metadata.uid != old.metadata.uid and ready(p),
        180,
        "the upgraded operator pod Ready",
        interval=0.5,
    )
    pod = operator_pod(node_api)
    assert pod is not None
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["LOSSGATE_LOG_LEVEL"] == "DEBUG"
    assert release.status(RELEASE)["revision"] == 2
    # When it is uninstalled
    release.uninstall(RELEASE, wait="watcher", timeout=120)
    # Then the CRD stays (rollouts are users' data), and nothing of the release is left
    ext = client.ApiextensionsV1Api(node_api)
    assert ext.read_custom_resource_definition("modelrollouts.lossgate.io").metadata.name
    core, apps, rbac = (
        client.CoreV1Api(node_api),
        client.AppsV1Api(node_api),
        client.RbacAuthorizationV1Api(node_api),
    )

    def leftovers() -> list[str]:
        found = [
            *(
                f"pod/{p.metadata.name}"
                for p in core.list_pod_for_all_namespaces(label_selector=INSTANCE).items
            ),
            *(
                f"deploy/{d.metadata.name}"
                for d in apps.list_deployment_for_all_namespaces(label_selector=INSTANCE).items
            ),
            *(
                f"sa/{s.metadata.name}"
                for s in core.list_service_account_for_all_namespaces(label_selector=INSTANCE).items
            ),
            *(
                f"svc/{s.metadata.name}"
                for s in core.list_service_for_all_namespaces(label_selector=INSTANCE).items
            ),
            *(
                f"cm/{c.metadata.name}"
                for c in core.list_config_map_for_all_namespaces(label_selector=INSTANCE).items
            ),
            *(
                f"clusterrole/{r.metadata.name}"
                for r in rbac.list_cluster_role(label_selector=INSTANCE).items
            ),
            *(
                f"crb/{r.metadata.name}"
                for r in rbac.list_cluster_role_binding(label_selector=INSTANCE).items
            ),
            *(
                f"role/{r.metadata.name}"
                for r in rbac.list_role_for_all_namespaces(label_selector=INSTANCE).items
            ),
        ]
        return found

    wait_until(lambda: not leftovers(), 120, "no objects of the release left", interval=1.0)
    assert not leftovers()
