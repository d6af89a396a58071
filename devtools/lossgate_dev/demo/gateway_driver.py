"""Client traffic through a real gateway: the data plane picks the backend, not this driver.

Each request goes to the gateway's URL; the answer says which model version served it. Its true
label is delivered later (exponential delay), in batches, to that version's model server directly,
as a label-join job that knows where each prediction was logged would (the servers keep their own
pending predictions here; with `lossgate joiner` the labels would go to the joiner instead).
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from lossgate_dev.demo.driver import _Backend
from lossgate_dev.demo.models import Traffic


@dataclass
class GatewayDriver:
    gateway_url: str  # http://127.0.0.1:<entrypoint port>
    host: str  # the Host header the HTTPRoute matches
    label_urls: dict[str, str]  # model version -> that version's server (labels go there)
    traffic: Traffic
    rate: float = 80.0  # requests per second
    label_delay_s: float = 0.5
    seed: int = 0
    served: Counter[str] = field(default_factory=Counter)  # by the version that answered
    labelled: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-driver", daemon=True)
        self._rng = np.random.default_rng(self.seed)
        self._pending: deque[tuple[float, str, str, int]] = deque()  # (due, version, id, label)

    def start(self) -> GatewayDriver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        gateway = _Backend(self.gateway_url, host_header=self.host)
        servers = {v: _Backend(u) for v, u in self.label_urls.items()}
        interval, due, next_labels = 1.0 / self.rate, time.monotonic(), 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_labels:
                self._deliver(servers, now)
                next_labels = now + 0.25
            if now < due:
                self._stop.wait(min(due - now, 0.05))
                continue
            due = max(due + interval, now - 1.0)  # never burst to catch up after a stall
            self._send_one(gateway, now)

    def _send_one(self, gateway: _Backend, now: float) -> None:
        row = int(self._rng.integers(len(self.traffic.labels)))
        pid = uuid.uuid4().hex
        try:
            answer = gateway.post("/predict", {"id": pid, "features": self.traffic.features[row].tolist()})
        except (RuntimeError, OSError, http.client.HTTPException):
            self.errors += 1
            return
        version = str(answer.get("version", "")) if isinstance(answer, dict) else ""
        self.served[version] += 1
        if version in self.label_urls:
            due = now + float(self._rng.exponential(self.label_delay_s))
            self._pending.append((due, version, pid, int(self.traffic.labels[row])))

    def _deliver(self, servers: dict[str, _Backend], now: float) -> None:
        batches: dict[str, list[dict[str, object]]] = {}
        keep: deque[tuple[float, str, str, int]] = deque()
        for due, version, pid, label in self._pending:
            if due <= now:
                batches.setdefault(version, []).append({"id": pid, "label": label})
            else:
                keep.append((due, version, pid, label))
        self._pending = keep
        for version, batch in batches.items():
            try:
                servers[version].post("/labels", batch)
                self.labelled[version] += len(batch)
            except (RuntimeError, OSError, http.client.HTTPException):
                self.errors += 1
