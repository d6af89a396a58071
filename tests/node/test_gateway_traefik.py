"""Traefik, a real Gateway API data plane, splits real requests by the weights lossgate writes.

The control plane is the real `kube` fixture; there is no kubelet: the two model versions are tiny
HTTP servers in this process, bound to a host-only address on a link of their own, and reached through
Services without selectors plus hand-written EndpointSlices (what the EndpointSlice controller would
write for pods). lossgate's own GatewayAPIRouter writes the HTTPRoute weights; Traefik (a host process
watching the API server) programs them; the share of requests is counted at the servers.
"""

from __future__ import annotations

import http.client
import math
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lossgate.adapters.routers import GatewayRouteRef, make_router
from lossgate.core.evidence import Weights
from lossgate_dev.devenv.traefik import (
    GROUP,
    VERSION,
    Traefik,
    create_gateway,
    ensure_traefik,
    wait_route_accepted,
)
from tests.infra.kube_fixtures import Kube

pytestmark = pytest.mark.usefixtures("gateway_api_crds")

LINK, ADDRESS = "lossgate-gw0", "10.217.1.1"  # the node tier's own link is lossgate0 / 10.217.0.1
HOST = "scorer.lossgate.test"  # the HTTPRoute matches on this Host header
BASELINE, CANARY = "scorer-v1", "scorer-v2"
N = 300  # requests per weight


def _ip(*args: str, check: bool = True) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")


@pytest.fixture
def host_address() -> Iterator[str]:
    """A /32 on a link of its own: reachable from this host only, like a pod IP seen from the node.

    The link is an empty bridge: this kernel has no `dummy` driver (`ip link add X type dummy` says
    "Unknown device type"), and a bridge without ports is just as host-only."""
    _ip("link", "del", LINK, check=False)  # left over by a killed run
    _ip("link", "add", LINK, "type", "bridge")
    try:
        _ip("addr", "add", f"{ADDRESS}/32", "dev", LINK)
        _ip("link", "set", LINK, "up")
        yield ADDRESS
    finally:
        _ip("link", "del", LINK)


class CountingServer(ThreadingHTTPServer):
    """Answers every GET with its name and counts the requests it served."""

    daemon_threads = True

    def __init__(self, name: str, address: str) -> None:
        self.name, self.hits, self.lock = name, 0, threading.Lock()
        super().__init__((address, 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, name=name, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def take(self) -> int:
        with self.lock:
            hits, self.hits = self.hits, 0
            return hits

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive from Traefik
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        srv: Any = self.server
        with srv.lock:
            srv.hits += 1
        body = srv.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backends(host_address: str) -> Iterator[dict[str, CountingServer]]:
    servers = {name: CountingServer(name, host_address) for name in (BASELINE, CANARY)}
    yield servers
    for s in servers.values():
        s.close()


@pytest.fixture
def traefik(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Traefik]:
    binary = ensure_traefik()
    tr = Traefik.start(
        tmp_path / "traefik",
        kube.plane.server_url,
        kube.plane.admin_token,
        kube.plane.ca_cert,
        namespaces=(namespace,),
        binary=binary,
    )
    yield tr
    tr.stop()
    assert not tr.server.alive()


def expose(api: client.ApiClient, namespace: str, name: str, address: str, port: int) -> None:
    """A Service without a selector on port 80, and its EndpointSlice to address:port."""
    client.CoreV1Api(api).create_namespaced_service(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}]},
        },
    )
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        namespace,
        {
            "metadata": {
                "name": f"{name}-manual",
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "lossgate-tests",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        },
    )


def send(tr: Traefik, n: int) -> dict[str, int]:
    """n GETs through Traefik's web entrypoint (one keep-alive connection); the answers by backend."""
    seen: dict[str, int] = {}
    conn = http.client.HTTPConnection(tr.host, tr.web_port, timeout=10)
    try:
        for _ in range(n):
            conn.request("GET", "/v1/predict", headers={"Host": HOST})
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 200, f"{resp.status} {body}"
            seen[body] = seen.get(body, 0) + 1
    finally:
        conn.close()
    return seen


def bound(w: float, n: int) -> float:
    """4 binomial standard deviations of a share w over n requests, plus one request of rounding."""
    return 4 * math.sqrt(w * (1 - w) / n) + 1 / n


def test_traefik_splits_requests_by_the_weights_lossgate_writes(
    kube: Kube, namespace: str, backends: dict[str, CountingServer], traefik: Traefik
) -> None:
    # Given two versions behind Services, a Traefik Gateway, and an HTTPRoute to the baseline only
    api = kube.api_client
    for name, srv in backends.items():
        expose(api, namespace, name, ADDRESS, srv.port)
    gateway_class = f"traefik-{namespace}"
    gw = create_gateway(api, namespace, "edge", traefik.web_port, gateway_class=gateway_class)
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    objs = client.CustomObjectsApi(api)
    objs.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "httproutes",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "HTTPRoute",
            "metadata": {"name": "scorer"},
            "spec": {
                "parentRefs": [{"name": "edge"}],
                "hostnames": [HOST],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/v1/predict"}}],
                        "backendRefs": [{"name": BASELINE, "port": 80}],
                    }
                ],
            },
        },
    )
    wait_route_accepted(api, namespace, "scorer", "edge")
    traefik.wait_rule_weights(namespace, "scorer", {BASELINE: 1})
    assert send(traefik, 20) == {BASELINE: 20}
    assert (backends[BASELINE].take(), backends[CANARY].take()) == (20, 0)
    router = make_router(
        GatewayRouteRef(namespace, "scorer", 0, baseline_service=BASELINE, canary_service=CANARY, port=80),
        api,
    )
    try:
        # 90/10 and 50/50 (steps), 0/100 (promoted), 100/0 (rolled back: the canary's weight is 0)
        for baseline, canary in ((90, 10), (50, 50), (0, 100), (100, 0)):
            # When lossgate's router writes the split and Traefik has applied it
            assert router.set_weights(Weights(baseline, canary)) == Weights(baseline, canary)
            traefik.wait_rule_weights(namespace, "scorer", {BASELINE: baseline, CANARY: canary})
            for srv in backends.values():
                srv.take()
            seen = send(traefik, N)

            # Then the servers saw exactly the requests sent, and the canary's share is within the
            # binomial bound of its weight (Traefik's WRR is a deterministic earliest-deadline-first
            # schedule, so in practice it is within one request of canary% * N).
            hits = {name: srv.take() for name, srv in backends.items()}
            assert hits == {n: seen.get(n, 0) for n in (BASELINE, CANARY)}, (hits, seen)
            assert sum(hits.values()) == N
            w, share = canary / 100, hits[CANARY] / N
            print(f"weights {baseline}/{canary}: canary {hits[CANARY]}/{N} = {share:.3f}")
            assert abs(share - w) <= bound(w, N), (baseline, canary, hits)
            if canary == 0:
                assert hits[CANARY] == 0  # after the rollback no request reaches the canary
    finally:
        objs.delete_cluster_custom_object(GROUP, VERSION, "gatewayclasses", gateway_class)
