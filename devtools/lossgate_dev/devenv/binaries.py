"""Where the locally built Kubernetes binaries live (built by hack/k8s/build.sh, cached by version)."""

from __future__ import annotations

import os
from pathlib import Path

_VERSIONS = Path(__file__).with_name("versions.env")
TOOLS = ("kube-apiserver", "kube-controller-manager", "kubectl", "etcd")


def versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in _VERSIONS.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def cache_root() -> Path:
    return Path(os.environ.get("LOSSGATE_CACHE", Path.home() / ".cache" / "lossgate"))


def k8s_bin_dir() -> Path:
    """The bin dir holding all four tools; LOSSGATE_K8S_BIN overrides the cache location."""
    override = os.environ.get("LOSSGATE_K8S_BIN")
    d = Path(override) if override else cache_root() / "k8s" / versions()["K8S_VERSION"] / "bin"
    missing = [t for t in TOOLS if not (d / t).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Kubernetes binaries missing in {d}: {', '.join(missing)}. "
            "Build them with `make cluster-bins` (hack/k8s/build.sh; several minutes cold, cached after)."
        )
    return d


def node_prometheus_binary() -> Path:
    """Prometheus with Kubernetes discovery (hack/node/prometheus.sh), for the node tier only."""
    override = os.environ.get("LOSSGATE_PROMETHEUS_BIN")
    version = versions()["PROMETHEUS_MODULE_VERSION"]
    path = Path(override) if override else cache_root() / "prometheus" / version / "prometheus"
    if not path.is_file():
        raise FileNotFoundError(
            f"Prometheus with Kubernetes discovery missing at {path}: Debian's package has it removed. "
            "Build it with `make node-prometheus` (hack/node/prometheus.sh; minutes cold, cached after)."
        )
    return path
