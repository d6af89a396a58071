"""What the node tests deploy and watch: the quickstart's model servers as pods, an HTTPRoute on the
Traefik Gateway, the ModelRollout, and a sampler of route weights and server-side request counts."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from lossgate_dev.devenv.node_stack import GATEWAY, NodeStack
from lossgate_dev.devenv.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEMO_IMAGE = "lossgate.local/lossgate-demo:dev"
GW = ("gateway.networking.k8s.io", "v1")
MRO = ("lossgate.io", "v1alpha1")


def kubectl_apply(stack: NodeStack, docs: list[dict[str, Any]]) -> None:
    assert stack.plane is not None
    out = stack.plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    assert out.returncode == 0, out.stderr


def models(stack: NodeStack, ns: str, canary_variant: str) -> list[dict[str, Any]]:
    """The quickstart's two digits Deployments and Services (examples/quickstart/digits.yaml), in `ns`,
    on the locally built demo image, with the canary's variant; and its HTTPRoute on our Gateway."""
    docs = [d for d in yaml.safe_load_all((ROOT / "examples/quickstart/digits.yaml").read_text()) if d]
    out: list[dict[str, Any]] = []
    for d in docs:
        if d["kind"] not in {"Deployment", "Service", "HTTPRoute"}:
            continue
        d["metadata"]["namespace"] = ns
        if d["kind"] == "Deployment":
            (c,) = d["spec"]["template"]["spec"]["containers"]
            c["image"], c["imagePullPolicy"] = DEMO_IMAGE, "Never"
            if d["metadata"]["name"].endswith("v2"):
                c["args"] = [
                    a if not a.startswith("--variant=") else f"--variant={canary_variant}" for a in c["args"]
                ]
        if d["kind"] == "HTTPRoute":  # its parent is the quickstart's Gateway, as the stack names it
            assert d["spec"]["parentRefs"] == [GATEWAY], d["spec"]["parentRefs"]
            d["spec"]["hostnames"] = [host(ns)]
        out.append(d)
    return out


def host(ns: str) -> str:
    return f"{ns}.lossgate.test"


def rollout(ns: str, prometheus_url: str, steps: list[int]) -> dict[str, Any]:
    """The quickstart's ModelRollout with test-speed quotas and this stack's Prometheus."""
    docs = [d for d in yaml.safe_load_all((ROOT / "examples/quickstart/digits.yaml").read_text()) if d]
    (mro,) = [d for d in docs if d["kind"] == "ModelRollout"]
    mro["metadata"]["namespace"] = ns
    spec = mro["spec"]
    spec["steps"] = [{"weight": w} for w in steps]
    spec["stepDefaults"] = {"minSamples": 150, "minDuration": "8s"}
    spec["analysis"]["interval"] = "2s"
    spec["analysis"]["prometheus"] = {"address": prometheus_url, "timeout": "5s"}
    spec["analysis"]["loss"] = {
        "relativeMargin": 0.05,
        "minSamplesBeforeRollback": 150,
        "minSamplesBeforePromotion": 600,
    }
    return dict(mro)


def pod_urls(api: client.ApiClient, ns: str, timeout: float = 180) -> dict[str, str]:
    """version -> http://<pod IP>:8000 once both model pods answer /metrics."""
    core = client.CoreV1Api(api)
    urls: dict[str, str] = {}

    def ready() -> bool:
        for pod in core.list_namespaced_pod(ns, label_selector="app=digits").items:
            ip = pod.status.pod_ip
            if pod.status.phase == "Running" and ip:
                url = f"http://{ip}:8000"
                with urllib.request.urlopen(f"{url}/metrics", timeout=2) as r:
                    if r.status == 200:
                        urls[pod.metadata.labels["version"]] = url
        return set(urls) == {"v1", "v2"}

    wait_until(ready, timeout, f"model pods in {ns} serving", interval=1.0)
    return urls


def served(url: str) -> float:
    """Predictions a model server has answered, read from its own /metrics (http_requests_total)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=3) as r:
        text = r.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "http_requests"
        for s in fam.samples
        if s.name == "http_requests_total"
    )


def custom(api: client.ApiClient, group_version: tuple[str, str], ns: str, plural: str, name: str) -> Any:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(*group_version, ns, plural, name)


def canary_weight(api: client.ApiClient, ns: str) -> int:
    route = custom(api, GW, ns, "httproutes", "digits")
    refs = route["spec"]["rules"][0]["backendRefs"]
    return int(next(r.get("weight", 1) for r in refs if r["name"] == "digits-v2"))


@dataclass
class Sample:
    t: float
    weight: int
    canary: float
    baseline: float


@dataclass
class Sampler:
    """Every `every` seconds: the canary weight in the HTTPRoute and both servers' request counts."""

    api: client.ApiClient
    ns: str
    urls: dict[str, str]
    every: float = 0.5
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            # A failed read (an API or server hiccup) only skips a sample: the interval gets longer.
            with contextlib.suppress(Exception):
                w = canary_weight(self.api, self.ns)
                self.samples.append(
                    Sample(time.monotonic(), w, served(self.urls["v2"]), served(self.urls["v1"]))
                )

    def shares(self, settle_s: float) -> dict[int, tuple[float, float]]:
        """weight -> (canary requests, all requests) over intervals that start at least `settle_s`
        after the route last changed (the data plane applies a change within that time)."""
        out: dict[int, tuple[float, float]] = {}
        changed_at = self.samples[0].t if self.samples else 0.0
        for prev, cur in zip(self.samples, self.samples[1:], strict=False):
            if cur.weight != prev.weight:
                changed_at = cur.t
                continue
            if prev.t - changed_at < settle_s:
                continue
            c, n = out.get(cur.weight, (0.0, 0.0))
            dc, db = cur.canary - prev.canary, cur.baseline - prev.baseline
            out[cur.weight] = (c + dc, n + dc + db)
        return out

    def first_time_at(self, weight: int) -> float | None:
        return next((s.t for s in self.samples if s.weight == weight), None)


def status(api: client.ApiClient, ns: str) -> dict[str, Any]:
    return dict(custom(api, MRO, ns, "modelrollouts", "digits").get("status") or {})


def history(api: client.ApiClient, ns: str) -> str:
    st = status(api, ns)
    return json.dumps(
        [f"{h['time']} {h['decision']} w={h['canaryWeight']} {h['message']}" for h in st.get("history", [])],
        indent=1,
    )
