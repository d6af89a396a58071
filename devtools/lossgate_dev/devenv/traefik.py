"""Traefik v3 as the node tier's Gateway API data plane, run as a host process on loopback.

Traefik's `kubernetesGateway` provider watches GatewayClasses, Gateways, HTTPRoutes, Services and
EndpointSlices through the API server and programs each HTTPRoute rule as a weighted round robin
over its backendRefs (Service endpoints, straight from the EndpointSlices: no kube-proxy involved).

Layout: the `web` entrypoint (the data plane) and the `traefik` entrypoint (ping + the read-only API,
used for readiness and to see which weights Traefik has applied) each listen on a free 127.0.0.1 port.
A Gateway listener binds to the entrypoint whose address ends in the listener's port, so the Gateway
that `create_gateway` writes carries `web_port` as its listener port.

The binary comes from hack/node/traefik.sh (cached by version, see versions.env).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lossgate_dev.devenv.binaries import cache_root, versions
from lossgate_dev.devenv.procs import Server, free_port, wait_until

GROUP, VERSION = "gateway.networking.k8s.io", "v1"
CONTROLLER_NAME = "traefik.io/gateway-controller"
DEFAULT_GATEWAY_CLASS = "traefik"
WEB = "web"
PROVIDER = "kubernetesgateway"
LOOPBACK = "127.0.0.1"
_BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "hack" / "node" / "traefik.sh"

Manifest = dict[str, Any]


def traefik_binary() -> Path:
    """The cached Traefik binary; LOSSGATE_TRAEFIK_BIN overrides the cache location."""
    override = os.environ.get("LOSSGATE_TRAEFIK_BIN")
    path = (
        Path(override) if override else cache_root() / "traefik" / versions()["TRAEFIK_VERSION"] / "traefik"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"Traefik binary missing at {path}. Build it with `make traefik` "
            "(hack/node/traefik.sh; minutes cold on 2 cores, cached after)."
        )
    return path


def ensure_traefik(timeout: float = 1800) -> Path:
    """The cached Traefik binary, built first (hack/node/traefik.sh, progress on stdout) if missing."""
    try:
        return traefik_binary()
    except FileNotFoundError:
        if os.environ.get("LOSSGATE_TRAEFIK_BIN") or not _BUILD_SCRIPT.is_file():
            raise
    subprocess.run(["bash", str(_BUILD_SCRIPT)], check=True, timeout=timeout)
    return traefik_binary()


@dataclass
class Traefik:
    server: Server
    web_port: int
    admin_port: int
    host: str = LOOPBACK

    @classmethod
    def start(
        cls,
        workdir: Path,
        api_server_url: str,
        token: str,
        ca_file: Path,
        *,
        namespaces: tuple[str, ...] = (),
        binary: Path | None = None,
        status_ip: str = "127.0.0.1",
        timeout: float = 60,
    ) -> Traefik:
        """Start Traefik against the API server (bearer `token`, CA `ca_file`) and wait for /ping.

        `namespaces` limits what the provider watches (default: all); `status_ip` is what Traefik
        writes into each Gateway's status.addresses."""
        workdir.mkdir(parents=True, exist_ok=True)
        token_file = workdir / "traefik.token"  # a file, so the token is not in the process list
        token_file.write_text(token)
        token_file.chmod(0o600)
        web_port, admin_port = free_port(), free_port()
        host = LOOPBACK
        argv = [
            str(binary or traefik_binary()),
            "--global.checknewversion=false",  # no call home: nothing leaves the machine
            "--global.sendanonymoususage=false",
            f"--entrypoints.{WEB}.address={host}:{web_port}",
            f"--entrypoints.traefik.address={host}:{admin_port}",
            "--ping=true",
            "--ping.entrypoint=traefik",
            "--api=true",
            "--api.insecure=true",  # the API on the `traefik` entrypoint, loopback only
            "--api.dashboard=false",
            # Apply a route change at once (the default 2 s throttle would show a rollback late).
            "--providers.providersThrottleDuration=100ms",
            "--providers.kubernetesgateway=true",
            f"--providers.kubernetesgateway.endpoint={api_server_url}",
            f"--providers.kubernetesgateway.token={token_file}",
            f"--providers.kubernetesgateway.certauthfilepath={ca_file}",
            f"--providers.kubernetesgateway.statusaddress.ip={status_ip}",
            "--log.level=INFO",
            "--log.nocolor=true",
        ]
        if namespaces:
            argv.append(f"--providers.kubernetesgateway.namespaces={','.join(namespaces)}")
        # Empty values select the provider's external-cluster client (endpoint + token + CA) even when
        # this runs inside a pod or with a KUBECONFIG set.
        env = {"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "", "KUBECONFIG": ""}
        server = Server("traefik", argv, workdir / "traefik.log", env=env)
        tr = cls(server, web_port, admin_port, host)
        try:
            wait_until(tr.ready, timeout, "traefik /ping", server)
        except BaseException:
            tr.stop()
            raise
        return tr

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.admin_url}/ping", timeout=2) as r:
            return bool(r.status == 200)

    def api(self, path: str) -> Any:
        """GET Traefik's read-only API (e.g. /api/http/services), parsed JSON."""
        with urllib.request.urlopen(f"{self.admin_url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def rule_weights(self, namespace: str, route: str, rule_index: int = 0) -> dict[str, int]:
        """The weights Traefik applies to one HTTPRoute rule: {Service name: weight}.

        Read from the weighted round robins the provider built for that rule (one per match and per
        Gateway listener; named `httproute-<ns>-<route>-gw-<gw ns>-<gw>-ep-<entrypoint>-<rule>-<hash>-wrr`),
        so this is what the proxy runs, not what the HTTPRoute says. Empty when Traefik has not loaded
        the rule, or while its copies disagree."""
        prefix = _normalize(f"httproute-{namespace}-{route}-gw-")
        own = re.compile(rf"^{re.escape(prefix)}-.*-ep-.+-{rule_index}-[0-9a-f]+-wrr@{PROVIDER}$")
        found: list[dict[str, int]] = []
        for svc in self.api(f"/api/http/services?search={prefix}&per_page=1000"):
            if own.match(str(svc.get("name", ""))) and "weighted" in svc:
                found.append(
                    {
                        _service_of(str(child["name"]), namespace): int(child.get("weight", 1))
                        for child in svc["weighted"].get("services") or []
                    }
                )
        return found[0] if found and all(f == found[0] for f in found) else {}

    def wait_rule_weights(
        self, namespace: str, route: str, want: dict[str, int], rule_index: int = 0, timeout: float = 30
    ) -> None:
        """Poll until Traefik runs `want` ({Service: weight}) for the rule (the API and the proxy switch
        to a new configuration together)."""
        seen: dict[str, int] = {}

        def applied() -> bool:
            nonlocal seen
            seen = self.rule_weights(namespace, route, rule_index)
            return seen == want

        try:
            wait_until(applied, timeout, f"traefik to apply weights {want}", self.server)
        except TimeoutError as exc:
            names = sorted(str(s.get("name")) for s in self.api("/api/http/services?per_page=1000"))
            raise TimeoutError(
                f"Traefik runs {seen or 'nothing'} for HTTPRoute {namespace}/{route} rule {rule_index}, "
                f"not {want}, after {timeout:.0f}s; its HTTP services: {names}; log {self.server.log}"
            ) from exc

    def stop(self) -> None:
        self.server.stop()


def _normalize(name: str) -> str:
    # As Traefik's provider.Normalize: every run of other than [A-Za-z0-9] becomes one '-'.
    return re.sub(r"[^a-zA-Z0-9]+", "-", name).strip("-")


def _service_of(child: str, namespace: str) -> str:
    """`<ns>-<svc>-http-<port>@kubernetesgateway` -> `<svc>` (the backend's Service)."""
    base = child.split("@", 1)[0]
    base = base.removeprefix(_normalize(namespace) + "-")
    return re.sub(r"-http-\d+$", "", base)


# -- Gateway API objects -------------------------------------------------------------------------


def create_gateway(
    api_client: client.ApiClient,
    namespace: str,
    name: str,
    port: int,
    gateway_class: str = DEFAULT_GATEWAY_CLASS,
    timeout: float = 60,
    allowed_from: str = "Same",
) -> Manifest:
    """Create the GatewayClass (Traefik's controllerName; kept if present) and an HTTP Gateway whose one
    listener `web` has `port` (= Traefik's web entrypoint port), routes from `allowed_from` namespaces
    (Same: its own; All: any, as the quickstart's Gateway).
    Returns the Gateway once Traefik reports it Programmed."""
    objs = client.CustomObjectsApi(api_client)
    gc = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GatewayClass",
        "metadata": {"name": gateway_class},
        "spec": {"controllerName": CONTROLLER_NAME},
    }
    try:
        objs.create_cluster_custom_object(GROUP, VERSION, "gatewayclasses", gc)
    except ApiException as exc:
        if exc.status != 409:
            raise
    gw = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": gateway_class,
            "listeners": [
                {
                    "name": WEB,
                    "protocol": "HTTP",
                    "port": port,
                    "allowedRoutes": {"namespaces": {"from": allowed_from}},
                }
            ],
        },
    }
    objs.create_namespaced_custom_object(GROUP, VERSION, namespace, "gateways", gw)
    got: Manifest = {}

    def programmed() -> bool:
        nonlocal got
        got = cast(Manifest, objs.get_namespaced_custom_object(GROUP, VERSION, namespace, "gateways", name))
        return _condition_true(got, got.get("status") or {}, "Programmed")

    wait_until(programmed, timeout, f"Gateway {namespace}/{name} Programmed (by Traefik)")
    return got


def wait_route_accepted(
    api_client: client.ApiClient, namespace: str, name: str, gateway: str, timeout: float = 60
) -> Manifest:
    """Poll until the HTTPRoute's status for parent Gateway `gateway` (written by Traefik's controller)
    says Accepted and ResolvedRefs for the route's current generation. Returns the route."""
    objs = client.CustomObjectsApi(api_client)
    got: Manifest = {}

    def accepted() -> bool:
        nonlocal got
        got = cast(Manifest, objs.get_namespaced_custom_object(GROUP, VERSION, namespace, "httproutes", name))
        for parent in (got.get("status") or {}).get("parents") or []:
            ref = parent.get("parentRef") or {}
            if parent.get("controllerName") == CONTROLLER_NAME and ref.get("name") == gateway:
                return all(_condition_true(got, parent, t) for t in ("Accepted", "ResolvedRefs"))
        return False

    wait_until(accepted, timeout, f"HTTPRoute {namespace}/{name} Accepted with ResolvedRefs by Traefik")
    return got


def _condition_true(obj: Manifest, status: Manifest, kind: str) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    return any(
        c.get("type") == kind and c.get("status") == "True" and c.get("observedGeneration") == generation
        for c in status.get("conditions") or []
    )
