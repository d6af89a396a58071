"""A real local Kubernetes control plane on loopback: etcd + kube-apiserver + kube-controller-manager.

Token authentication and Node + RBAC authorization are on, as in a real cluster. By default there
is no kubelet: Deployments get ReplicaSets and Pods objects, but no container runs (the demo and
tests run the model servers as local processes instead). The node tier (devenv/node.py) starts the
plane on a host-only address that pods can reach, and adds a kubelet, kube-proxy and scheduler with
the identities below (the bootstrap RBAC roles of a real cluster grant them what they need).
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lossgate_dev.devenv.binaries import k8s_bin_dir
from lossgate_dev.devenv.certs import make_pki
from lossgate_dev.devenv.procs import Server, free_port, wait_until

ADMIN_USER = "lossgate-admin"
NODE_NAME = "lossgate-node"
# user name -> groups of the node components' static tokens (bootstrap RBAC binds these names).
NODE_IDENTITIES = {
    f"system:node:{NODE_NAME}": "system:nodes",
    "system:kube-scheduler": "",
    "system:kube-proxy": "",
}


@dataclass
class ControlPlane:
    workdir: Path
    bin_dir: Path = field(default_factory=k8s_bin_dir)
    servers: list[Server] = field(default_factory=list)
    server_url: str = ""
    admin_token: str = ""
    kubeconfig: Path = Path()
    ca_cert: Path = Path()
    # Extra users from the static token file: name -> token (no groups, so RBAC denies them).
    tokens: dict[str, str] = field(default_factory=dict)
    # Where the API server listens and what it advertises (the `kubernetes` Service's endpoint).
    address: str = "127.0.0.1"

    @classmethod
    def start(
        cls, workdir: Path | None = None, controller_manager: bool = True, address: str = "127.0.0.1"
    ) -> ControlPlane:
        cp = cls(Path(workdir or tempfile.mkdtemp(prefix="lossgate-kube-")), address=address)
        try:
            cp._start(controller_manager)
        except BaseException:
            cp.stop()
            raise
        return cp

    def _start(self, controller_manager: bool) -> None:
        d = self.workdir
        pki = make_pki(d / "pki", extra_ips=(self.address,) if self.address != "127.0.0.1" else ())
        self.ca_cert = pki.ca_cert
        self.admin_token = secrets.token_hex(16)
        kcm_token = secrets.token_hex(16)
        self.tokens = {"nobody": secrets.token_hex(16)} | {u: secrets.token_hex(16) for u in NODE_IDENTITIES}
        # token,user,uid,"groups": the admin and the controller-manager are cluster admins.
        node_lines = "".join(
            f'{self.tokens[u]},{u},{10 + i},"{g}"\n' for i, (u, g) in enumerate(NODE_IDENTITIES.items())
        )
        (d / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},1,"system:masters"\n'
            f'{kcm_token},system:kube-controller-manager,2,"system:masters"\n'
            f"{self.tokens['nobody']},nobody,3\n" + node_lines
        )

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--listen-metrics-urls=",
            ],
        )
        wait_until(lambda: _http_ok(f"{etcd_url}/health"), 60, "etcd /health", etcd)

        self.server_url = f"https://{self.address}:{api_port}"
        api = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={api_port}",
                f"--cert-dir={d / 'pki'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--enable-priority-and-fairness=false",
                "--kubelet-preferred-address-types=InternalIP",  # logs/exec reach the node by its IP
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until(self._ready, 180, "kube-apiserver /readyz", api, interval=0.5)
        self.kubeconfig = self.write_kubeconfig(d / "kubeconfig", ADMIN_USER, self.admin_token)

        if controller_manager:
            kcm_cfg = self.write_kubeconfig(d / "kcm.kubeconfig", "kcm", kcm_token)
            kcm = self._spawn(
                "kube-controller-manager",
                [
                    str(self.bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={kcm_cfg}",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={pki.sa_key}",
                    f"--root-ca-file={pki.ca_cert}",
                    # With a node, the node lifecycle controller lifts the not-ready taint once Ready.
                    f"--controllers=*,-nodeipam,{'' if self.address != '127.0.0.1' else '-nodelifecycle,'}"
                    "-attachdetach,-persistentvolume-binder,"
                    "-persistentvolume-expander,-cloud-node-lifecycle,-service-lb-controller,-route",
                    "--concurrent-deployment-syncs=2",
                    "--concurrent-replicaset-syncs=2",
                    "--v=1",
                ],
            )
            # Ready when the serviceaccount controller has made the "default" SA in "default".
            wait_until(
                lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0,
                120,
                "kube-controller-manager (default ServiceAccount)",
                kcm,
                interval=0.5,
            )

    def _spawn(self, name: str, argv: list[str]) -> Server:
        srv = Server(name, argv, self.workdir / f"{name}.log")
        self.servers.append(srv)
        return srv

    def _ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        req = urllib.request.Request(
            f"{self.server_url}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return bool(r.status == 200)

    def write_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server_url, "certificate-authority": str(self.ca_cert)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(json.dumps(cfg, indent=2))  # JSON is valid YAML
        return path

    def kubectl(
        self, *args: str, input: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cfg = kubeconfig or self.kubeconfig
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={cfg}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def version(self) -> dict[str, str]:
        out = self.kubectl("version", "-o", "json")
        return dict(json.loads(out.stdout)["serverVersion"])

    def stop(self) -> None:
        for srv in reversed(self.servers):
            srv.stop()
        self.servers.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)
