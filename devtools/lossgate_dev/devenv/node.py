"""A real Kubernetes node on this machine: containerd + runc, the CNI bridge plugins, kubelet,
kube-proxy (iptables) and kube-scheduler, joined to a ControlPlane started on the host-only address.

Everything lives under one work directory and is torn down by `stop()`: pods are deleted through
the API first (so the kubelet runs the CNI DEL that frees their addresses and iptables rules), then
any container left is killed, the shims and containerd stop, mounts under the work directory are
unmounted, kube-proxy removes its rules, and the links go. No process outlives the fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lossgate_dev.devenv.hostnet import BRIDGE, POD_CIDR, HostNetwork, sh
from lossgate_dev.devenv.kube import NODE_NAME, ControlPlane
from lossgate_dev.devenv.procs import Server, free_port, wait_until

PAUSE_IMAGE = "lossgate.local/pause:1"
CNI_BIN = Path("/usr/lib/cni")
CRI_NS = "k8s.io"
_OUR_CHAINS = ("KUBE-", "CNI-")

_CONTAINERD = """\
version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  # This sandbox lacks CAP_SYS_RESOURCE: an OOM score below the caller's (the pause container's
  # -998) is refused, so clamp it as rootless setups do.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
"""


def _cni_conflist(data_dir: Path) -> dict[str, object]:
    return {
        "cniVersion": "0.4.0",
        "name": "lossgate",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kubelet_config(sock: Path, port: int, healthz: int, ip: str) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        # Only the API server talks to this port, over the host-only address.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # this kernel mounts cgroups v1 (kubelet 1.34 still supports it)
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "containerRuntimeEndpoint": f"unix://{sock}",
        "failSwapOn": False,
        "podCIDR": POD_CIDR,
        "maxPods": 40,
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        # A test machine's disk is shared: never evict for disk or image space.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "syncFrequency": "10s",
        "fileCheckFrequency": "60s",
        "nodeStatusUpdateFrequency": "5s",
        "serializeImagePulls": False,
        "localStorageCapacityIsolation": False,
        "shutdownGracePeriod": "0s",
    }


def _proxy_config(healthz: int, metrics: int) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        "conntrack": {"maxPerCore": 0, "min": 0},  # leave the host's conntrack sysctls alone
        "iptables": {"localhostNodePorts": False, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        "clientConnection": {"kubeconfig": ""},
    }


@dataclass
class Node:
    plane: ControlPlane
    workdir: Path
    net: HostNetwork
    servers: list[Server] = field(default_factory=list)
    sock: Path = Path()

    @classmethod
    def start(
        cls,
        plane: ControlPlane,
        net: HostNetwork,
        images: Iterable[Path],
        progress: Callable[[str], None] = print,
    ) -> Node:
        node = cls(plane, plane.workdir / "node", net)
        try:
            node._start(list(images), progress)
        except BaseException:
            node.stop()
            raise
        return node

    def _start(self, images: list[Path], progress: Callable[[str], None]) -> None:
        d, bins = self.workdir, self.plane.bin_dir
        for sub in ("containerd", "cni/conf", "cni/ipam", "kubelet"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # containerd's root and state on a tmpfs of their own: unpacking and dropping the images'
        # many small files at memory speed (on the shared disk the teardown alone took a minute and a half).
        sh("mount", "-t", "tmpfs", "-o", "size=6g,mode=0700", "tmpfs", str(d / "containerd"))
        for sub in ("containerd/root", "containerd/state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.sock = d / "containerd" / "containerd.sock"
        (d / "cni" / "conf" / "10-lossgate.conflist").write_text(
            json.dumps(_cni_conflist(d / "cni" / "ipam"))
        )
        (d / "containerd" / "config.toml").write_text(
            _CONTAINERD.format(
                root=d / "containerd" / "root",
                state=d / "containerd" / "state",
                sock=self.sock,
                pause=PAUSE_IMAGE,
                cni_bin=CNI_BIN,
                cni_conf=d / "cni" / "conf",
            )
        )
        progress("node: starting containerd")
        ctd = self._spawn("containerd", ["containerd", f"--config={d / 'containerd' / 'config.toml'}"])
        wait_until(lambda: self.ctr("version").returncode == 0, 60, "containerd", ctd)
        for archive in images:
            progress(f"node: loading {archive.name} into containerd")
            out = self.ctr("images", "import", str(archive))
            if out.returncode != 0:
                raise RuntimeError(f"ctr images import {archive} failed: {out.stderr.strip()}")

        kport, khealth = free_port(), free_port()
        (d / "kubelet.yaml").write_text(json.dumps(_kubelet_config(self.sock, kport, khealth, self.net.ip)))
        kubelet_cfg = self.plane.write_kubeconfig(
            d / "kubelet.kubeconfig", NODE_NAME, self.plane.tokens[f"system:node:{NODE_NAME}"]
        )
        progress("node: starting kubelet")
        kubelet = self._spawn(
            "kubelet",
            [
                str(bins / "kubelet"),
                f"--config={d / 'kubelet.yaml'}",
                f"--kubeconfig={kubelet_cfg}",
                f"--root-dir={d / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.net.ip}",
                "--v=1",
            ],
        )
        proxy_cfg = _proxy_config(free_port(), free_port()) | {
            "clientConnection": {
                "kubeconfig": str(
                    self.plane.write_kubeconfig(
                        d / "proxy.kubeconfig", "kube-proxy", self.plane.tokens["system:kube-proxy"]
                    )
                )
            }
        }
        (d / "proxy.yaml").write_text(json.dumps(proxy_cfg))
        proxy = self._spawn("kube-proxy", [str(bins / "kube-proxy"), f"--config={d / 'proxy.yaml'}", "--v=1"])
        sched_cfg = self.plane.write_kubeconfig(
            d / "scheduler.kubeconfig", "kube-scheduler", self.plane.tokens["system:kube-scheduler"]
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"),
                f"--kubeconfig={sched_cfg}",
                f"--authentication-kubeconfig={sched_cfg}",
                f"--authorization-kubeconfig={sched_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        progress("node: waiting for the node to be Ready")
        wait_until(self._ready, 180, f"node {NODE_NAME} Ready", kubelet, interval=0.5)
        wait_until(lambda: proxy.alive(), 5, "kube-proxy", proxy)

    def _spawn(self, name: str, argv: list[str]) -> Server:
        srv = Server(name, argv, self.workdir / f"{name}.log")
        self.servers.append(srv)
        return srv

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh("ctr", "-a", str(self.sock), "-n", CRI_NS, *args, check=False)

    def _ready(self) -> bool:
        out = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json")
        if out.returncode != 0:
            return False
        conds = json.loads(out.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def server(self, name: str) -> Server:
        (srv,) = [s for s in self.servers if s.name == name]
        return srv

    # --- teardown -------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.servers and self.server_alive("kubelet"):
            self._drain_pods()
        for srv in [s for s in self.servers if s.name != "containerd"]:
            srv.stop()
        self._kill_containers()
        for srv in [s for s in self.servers if s.name == "containerd"]:
            srv.stop()
        self._kill_shims()
        self._unmount_all()
        self._cleanup_iptables()
        self.servers.clear()

    def server_alive(self, name: str) -> bool:
        return any(s.name == name and s.alive() for s in self.servers)

    def _drain_pods(self) -> None:
        # The kubelet tears each sandbox down (CNI DEL frees its address and masquerade rules).
        self.plane.kubectl(
            "delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false"
        )
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self._tasks(), 60, "the kubelet to stop every pod")

    def _tasks(self) -> list[str]:
        out = self.ctr("tasks", "list", "-q")
        return out.stdout.split() if out.returncode == 0 else []

    def _kill_containers(self) -> None:
        if not self.server_alive("containerd"):
            return
        for task in self._tasks():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task)
        deadline = time.monotonic() + 20
        while self._tasks() and time.monotonic() < deadline:
            time.sleep(0.2)

    def _kill_shims(self) -> None:
        # A shim outlives containerd by design; ours carry our socket path in their argv.
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
                if argv and b"containerd-shim" in argv[0] and str(self.sock).encode() in b" ".join(argv):
                    os.kill(int(pid_dir.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        root = str(self.workdir)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mnt in sorted((m for m in mounts if m.startswith(root)), key=len, reverse=True):  # tmpfs last
            sh("umount", "-l", mnt, check=False)
        for ns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").is_dir() else []:
            sh("ip", "netns", "del", ns.name, check=False)

    def _cleanup_iptables(self) -> None:
        sh(str(self.plane.bin_dir / "kube-proxy"), "--cleanup", check=False)
        # What kube-proxy --cleanup leaves: the kubelet's KUBE-FIREWALL/CANARY chains, and masquerade
        # chains the bridge plugin made for pods whose CNI DEL never ran.
        for table in ("filter", "nat", "mangle"):
            listing = sh("iptables", "-t", table, "-S", check=False).stdout.splitlines()
            ours = [
                r.split()[1] for r in listing if r.startswith("-N ") and r.split()[1].startswith(_OUR_CHAINS)
            ]
            for rule in listing:
                parts = rule.split()
                if parts[:1] == ["-A"] and parts[1] not in ours and any(c in parts for c in ours):
                    sh("iptables", "-t", table, "-D", *parts[1:], check=False)
            for chain in ours:
                sh("iptables", "-t", table, "-F", chain, check=False)
            for chain in ours:
                sh("iptables", "-t", table, "-X", chain, check=False)
        for f in (self.workdir / "cni" / "ipam").rglob("*"):
            if f.is_file():
                f.unlink()
