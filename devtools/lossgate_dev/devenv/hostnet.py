"""The node tier's host-only network: a port-less bridge holding the node's address, and the kernel
settings a Kubernetes node needs (IP forwarding, bridged traffic through iptables).

Pods cannot reach the host's loopback, so the servers they talk to (the node tier's kube-apiserver,
Prometheus) listen on this address instead. It lives on a bridge with no ports (this kernel has no
dummy links) and no route from outside the machine, so nothing beyond this host can reach it.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

NODE_LINK = "lossgate0"
NODE_IP = "10.217.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"
BRIDGE = "lossgate-br0"

_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check)


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


@dataclass
class HostNetwork:
    """Sets up the node address and sysctls; `teardown` puts back what it changed."""

    ip: str = NODE_IP
    _saved: dict[str, str] | None = None

    def setup(self) -> HostNetwork:
        if link_exists(NODE_LINK):  # left by a killed run: start clean
            sh("ip", "link", "del", NODE_LINK)
        sh("ip", "link", "add", NODE_LINK, "type", "bridge")
        sh("ip", "addr", "add", f"{self.ip}/32", "dev", NODE_LINK)
        sh("ip", "link", "set", NODE_LINK, "up")
        self._saved = {}
        for key, value in _SYSCTLS.items():
            path = Path("/proc/sys") / key
            self._saved[key] = path.read_text().strip()
            path.write_text(value)
        return self

    def teardown(self) -> None:
        for link in (BRIDGE, NODE_LINK):
            if link_exists(link):
                sh("ip", "link", "del", link, check=False)
        for key, value in (self._saved or {}).items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key).write_text(value)
        self._saved = None
