"""`make cluster`: start the local control plane for manual use and wait for Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from lossgate_dev.devenv.binaries import k8s_bin_dir
from lossgate_dev.devenv.kube import ControlPlane


def main() -> int:
    workdir = Path.cwd() / ".cache" / "cluster"
    workdir.mkdir(parents=True, exist_ok=True)
    print("==> starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 ...", flush=True)
    plane = ControlPlane.start(workdir / "run")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    v = plane.version()["gitVersion"]
    print(f"Kubernetes {v} is up at {plane.server_url}")
    print(f"  export KUBECONFIG={plane.kubeconfig}")
    print(f"  {k8s_bin_dir() / 'kubectl'} get namespaces")
    print(
        "Ctrl-C stops it (no kubelet: Deployments get ReplicaSets and Pods, no containers run).", flush=True
    )
    stop.wait()
    plane.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
