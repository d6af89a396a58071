"""A traffic driver standing in for the gateway's data plane.

It reads the backend weights the operator wrote into an HTTPRoute rule (from the API server, once a
second), sends each request to one backend chosen with those weights, copies a request to the backend
of the rule's RequestMirror filter (its `percent` of them; the copy's answer is discarded, as a
gateway does; both servers log their prediction under the same request id), and delivers the true label
later (exponential delay) in batches, as a label-join job would: to the model server that served
the prediction, or, with `labels_url`, to the `lossgate joiner` the model servers log to.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
from kubernetes import client

from lossgate.joiner import JoinerClient, JoinerError
from lossgate_dev.demo.models import Traffic

GW_GROUP, GW_VERSION = "gateway.networking.k8s.io", "v1"


class _Backend:
    def __init__(self, url: str, host_header: str | None = None) -> None:
        self.headers = {"Content-Type": "application/json"} | ({"Host": host_header} if host_header else {})
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)

    def post(self, path: str, doc: object) -> object:
        body = json.dumps(doc).encode()
        for attempt in (1, 2):  # one reconnect: the server may have closed an idle keep-alive socket
            try:
                self.conn.request("POST", path, body, self.headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path} -> {resp.status}: {data[:200]!r}")
                return json.loads(data)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt == 2:
                    raise
        return None


@dataclass
class TrafficDriver:
    api: client.ApiClient
    namespace: str
    route: str
    backends: dict[str, str]  # Service name in the HTTPRoute -> model server URL
    traffic: Traffic
    rate: float = 100.0  # requests per second
    label_delay_s: float = 1.0  # mean of the exponential label delay
    rule_index: int = 0
    seed: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    labelled: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    weights: dict[str, int] = field(default_factory=dict)
    mirror: tuple[str, int] | None = None  # (backend, percent) of the rule's RequestMirror filter
    mirrored: Counter[str] = field(default_factory=Counter)  # copies sent (not counted in `sent`)
    labels_url: str | None = None  # a lossgate joiner: labels go there instead of the model servers
    send_class: bool = False  # send each request's digit as its `class` slice (the per-class scenario)
    # Labels of these digits are held back until release_held(): a label backlog that clears late
    # (e.g. after the promotion), for the post-promotion watch's test.
    hold_classes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"driver-{self.route}", daemon=True)
        self._rng = np.random.default_rng(self.seed)
        self._pending: deque[tuple[float, str, str, int]] = deque()  # (due, backend, id, label)
        self._held: list[tuple[float, str, str, int]] = []
        self._lock = threading.Lock()  # release_held() runs on the caller's thread
        self.held = 0  # labels held back so far (hold_classes)

    def start(self) -> TrafficDriver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def read_weights(self) -> dict[str, int]:
        route = cast(
            dict[str, Any],
            client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GW_GROUP, GW_VERSION, self.namespace, "httproutes", self.route
            ),
        )
        rule = route["spec"]["rules"][self.rule_index]
        self.mirror = _mirror_of(rule, self.backends)
        refs = rule.get("backendRefs", [])
        return {r["name"]: int(r.get("weight", 1)) for r in refs if r["name"] in self.backends}

    def _run(self) -> None:
        conns = {name: _Backend(url) for name, url in self.backends.items()}
        next_weights = 0.0
        next_labels = 0.0
        interval = 1.0 / self.rate
        due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_weights:
                try:
                    self.weights = self.read_weights()
                except (
                    Exception
                ):  # the API server restarting is not the driver's problem: keep the last split
                    self.errors += 1
                next_weights = now + 1.0
            if now >= next_labels:
                self._deliver_labels(conns, now)
                next_labels = now + 0.25
            if now < due:
                self._stop.wait(min(due - now, 0.05))
                continue
            due += interval
            self._send_one(conns, now)

    def _send_one(self, conns: dict[str, _Backend], now: float) -> None:
        total = sum(self.weights.values())
        if total <= 0:
            return
        names = list(self.weights)
        p = np.array([self.weights[n] for n in names], dtype=float) / total
        backend = names[int(self._rng.choice(len(names), p=p))]
        row = int(self._rng.integers(len(self.traffic.labels)))
        pid = uuid.uuid4().hex
        try:
            doc: dict[str, object] = {"id": pid, "features": self.traffic.features[row].tolist()}
            if self.send_class:  # a slice known when the request arrives (here: the digit itself)
                doc["class"] = str(int(self.traffic.labels[row]))
            conns[backend].post("/predict", doc)
        except (RuntimeError, OSError, http.client.HTTPException):
            self.errors += 1
            return
        self.sent[backend] += 1
        delay = float(self._rng.exponential(self.label_delay_s))
        label = int(self.traffic.labels[row])
        with self._lock:
            if label in self.hold_classes:
                self._held.append((now + delay, backend, pid, label))
                self.held += 1
            else:
                self._pending.append((now + delay, backend, pid, label))
        target = self._mirror_target(backend)
        if target is not None:
            try:
                conns[target].post("/predict", doc)  # the copy's answer is discarded
            except (RuntimeError, OSError, http.client.HTTPException):
                self.errors += 1
                return
            self.mirrored[target] += 1
            if self.labels_url is None:  # without a joiner each server holds its own pending prediction
                self._pending.append((now + delay, target, pid, label))

    def release_held(self, spread_s: float = 0.0) -> int:
        """Deliver the held labels from now on (and hold no more); how many were held. With spread_s,
        each is due at a uniform time in the next spread_s seconds instead of at once, so that every
        analysis interval of that span gets its share of both arms' backlog (released at once, one
        arm's backlog can fall in an interval the other's misses: the servers are scraped apart)."""
        with self._lock:
            self.hold_classes = frozenset()
            released, self._held = self._held, []
            now = time.monotonic()
            if spread_s > 0:
                rng = np.random.default_rng(self.seed + 1)  # the driver's thread owns self._rng
                dues = now + rng.uniform(0.0, spread_s, len(released))
                released = [(float(d), *item[1:]) for d, item in zip(dues, released, strict=True)]
            self._pending.extend(released)
        return len(released)

    def _mirror_target(self, backend: str) -> str | None:
        if self.mirror is None or self.mirror[0] == backend:
            return None
        target, percent = self.mirror
        return target if float(self._rng.random()) * 100 < percent else None

    def _deliver_labels(self, conns: dict[str, _Backend], now: float) -> None:
        batches: dict[str, list[dict[str, object]]] = {}
        keep: deque[tuple[float, str, str, int]] = deque()
        with self._lock:
            while self._pending:
                item = self._pending.popleft()
                if item[0] <= now:
                    batches.setdefault(item[1], []).append({"id": item[2], "label": item[3]})
                else:
                    keep.append(item)
            self._pending = keep
        joiner = JoinerClient(self.labels_url, retries=1) if self.labels_url else None
        for backend, batch in batches.items():
            try:
                if joiner is not None:
                    joiner.labels(batch)
                else:
                    conns[backend].post("/labels", batch)
                self.labelled[backend] += len(batch)
            except (RuntimeError, OSError, http.client.HTTPException, JoinerError):
                self.errors += 1


def _mirror_of(rule: dict[str, Any], backends: dict[str, str]) -> tuple[str, int] | None:
    """The rule's RequestMirror filter to one of our backends: (backend, percent), `fraction` as percent."""
    for f in rule.get("filters") or []:
        m = f.get("requestMirror") or {}
        name = (m.get("backendRef") or {}).get("name")
        if f.get("type") != "RequestMirror" or name not in backends:
            continue
        if "percent" in m:
            return name, int(m["percent"])
        frac = m.get("fraction")
        if isinstance(frac, dict):
            return name, round(100 * int(frac.get("numerator", 0)) / int(frac.get("denominator", 100) or 100))
        return name, 100
    return None
