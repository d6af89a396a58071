"""The whole node tier in one object: host network, control plane, node, Gateway API data plane and a
Prometheus that discovers pods through the API server, as in a cluster.

    python -m lossgate_dev.devenv.node_stack      # start it, print how to reach it, stop on Ctrl-C

The order matters: the host-only address must exist before the API server binds it; the node needs
the images; Traefik needs the Gateway API CRDs; Prometheus needs a ServiceAccount token.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config

from lossgate_dev.devenv.binaries import node_prometheus_binary
from lossgate_dev.devenv.hostnet import HostNetwork
from lossgate_dev.devenv.images import ensure_images
from lossgate_dev.devenv.kube import ControlPlane
from lossgate_dev.devenv.node import Node
from lossgate_dev.devenv.prom import Prometheus
from lossgate_dev.devenv.thirdparty import install_crds, load_gateway_api_crds
from lossgate_dev.devenv.traefik import Traefik, create_gateway

ROOT = Path(__file__).resolve().parents[3]
QUICKSTART_PROMETHEUS = ROOT / "examples" / "quickstart" / "prometheus.yaml"
SCRAPE_INTERVAL_S = 1.0
# The quickstart's Gateway (examples/quickstart/gateway.yaml): its HTTPRoutes name this parent.
GATEWAY = {"name": "edge", "namespace": "gateways"}


@dataclass
class NodeStack:
    workdir: Path
    net: HostNetwork = field(default_factory=HostNetwork)
    plane: ControlPlane | None = None
    node: Node | None = None
    traefik: Traefik | None = None
    prometheus: Prometheus | None = None
    images: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def start(cls, workdir: Path | None = None, progress: Callable[[str], None] = print) -> NodeStack:
        stack = cls(Path(workdir or tempfile.mkdtemp(prefix="lossgate-node-")))
        try:
            stack._start(progress)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _start(self, progress: Callable[[str], None]) -> None:
        self.images = ensure_images(progress=progress)
        self.net.setup()
        progress(f"node stack: control plane on {self.net.ip}")
        self.plane = ControlPlane.start(self.workdir / "kube", address=self.net.ip)
        self.node = Node.start(self.plane, self.net, self.images.values(), progress)
        progress("node stack: Gateway API CRDs, Traefik and the quickstart's Gateway")
        api = config.new_client_from_config(config_file=str(self.plane.kubeconfig))  # type: ignore[no-untyped-call]
        try:
            install_crds(api, load_gateway_api_crds())
            self.traefik = Traefik.start(
                self.workdir / "traefik", self.plane.server_url, self.plane.admin_token, self.plane.ca_cert
            )
            out = self.plane.kubectl("create", "namespace", GATEWAY["namespace"])
            if out.returncode != 0:
                raise RuntimeError(f"kubectl create namespace {GATEWAY['namespace']}: {out.stderr}")
            create_gateway(
                api, GATEWAY["namespace"], GATEWAY["name"], self.traefik.web_port, allowed_from="All"
            )
        finally:
            api.close()
        progress("node stack: Prometheus (kubernetes_sd_configs, role pod)")
        self.prometheus = Prometheus.start(
            self.workdir / "prometheus",
            scrape_interval=f"{SCRAPE_INTERVAL_S:g}s",
            host=self.net.ip,
            extra_scrape_configs=self._pod_discovery(),
            binary=str(node_prometheus_binary()),
        )

    def _pod_discovery(self) -> str:
        """The quickstart's Prometheus RBAC and scrape config, with the API server and a token of the
        `monitoring/prometheus` ServiceAccount, as the in-cluster Prometheus would use them."""
        plane = self.control_plane
        docs = [d for d in yaml.safe_load_all(QUICKSTART_PROMETHEUS.read_text()) if d]
        rbac = [
            d
            for d in docs
            if d["kind"] in {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
        ]
        out = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
        if out.returncode != 0:
            raise RuntimeError(f"applying the quickstart Prometheus RBAC failed: {out.stderr}")
        token = plane.kubectl("create", "token", "prometheus", "-n", "monitoring", "--duration=24h")
        if token.returncode != 0:
            raise RuntimeError(f"kubectl create token failed: {token.stderr}")
        token_file = self.workdir / "prometheus.token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token.stdout.strip())
        (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
        scrape: list[dict[str, Any]] = yaml.safe_load(cm["data"]["prometheus.yml"])["scrape_configs"]
        for job in scrape:
            for sd in job.get("kubernetes_sd_configs", []):
                sd["api_server"] = plane.server_url
                sd["authorization"] = {"credentials_file": str(token_file)}
                sd["tls_config"] = {"ca_file": str(plane.ca_cert)}
        text = yaml.safe_dump(scrape, sort_keys=False)
        return "".join(f"  {line}\n" for line in text.splitlines())

    @property
    def control_plane(self) -> ControlPlane:
        if self.plane is None:
            raise RuntimeError("the node stack's control plane is not running")
        return self.plane

    @property
    def gateway(self) -> Traefik:
        if self.traefik is None:
            raise RuntimeError("the node stack's gateway is not running")
        return self.traefik

    @property
    def prometheus_url(self) -> str:
        if self.prometheus is None:
            raise RuntimeError("the node stack's Prometheus is not running")
        return self.prometheus.url

    def stop(self) -> None:
        for part in (self.prometheus, self.traefik):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if self.node is not None:
            self.node.stop()
        if self.plane is not None:
            self.plane.stop()
        self.net.teardown()


def main() -> None:
    stack = NodeStack.start()
    print(f"kubeconfig: {stack.control_plane.kubeconfig}")
    print(f"gateway:    {stack.gateway.web_url} (Gateway gateways/edge)")
    print(f"prometheus: {stack.prometheus_url}")
    print("Ctrl-C stops everything.")
    try:
        import signal

        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
