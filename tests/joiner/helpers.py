"""Shared by the joiner's real-server tests: a ledger of what was sent, HTTP helpers, /metrics reads."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from lossgate.instrument import cross_entropy

RESPONSE = "org.kubeflow.serving.inference.response"
REQUEST = "org.kubeflow.serving.inference.request"


@dataclass
class Ledger:
    """Per version: predictions sent, labels sent and the loss each label must produce."""

    predictions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    losses: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def predicted(self, version: str, pid: str) -> None:
        self.predictions[version].add(pid)

    def labelled(self, version: str, pid: str, loss: float) -> None:
        self.losses[version][pid] = loss

    def count(self, version: str) -> int:
        return len(self.losses[version])

    def sum(self, version: str) -> float:
        return math.fsum(self.losses[version].values())

    def sumsq(self, version: str) -> float:
        return math.fsum(x * x for x in self.losses[version].values())

    def tail(self, version: str) -> int:
        return sum(1 for x in self.losses[version].values() if x > 4.6)


def traffic(n: int, seed: int, versions: tuple[str, ...] = ("v41", "v42")) -> list[dict[str, Any]]:
    """n predictions per version: 3-class probabilities, a label for about 80% of them."""
    rng = np.random.default_rng(seed)
    out = []
    for version in versions:
        for i in range(n):
            p = rng.dirichlet([1.0, 1.0, 1.0]).tolist()
            label = int(rng.integers(0, 3)) if rng.random() < 0.8 else None
            out.append(
                {"id": f"{version}-{seed}-{i}", "version": version, "probabilities": p, "label": label}
            )
    return out


def prediction(t: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": t["id"],
        "model": "fraud-scorer",
        "version": t["version"],
        "probabilities": t["probabilities"],
    } | extra


def expected_loss(t: dict[str, Any]) -> float:
    return cross_entropy(t["label"], probabilities=t["probabilities"])


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    """(status, JSON body, response headers), errors included."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"raw": raw.decode(errors="replace")}
        return e.code, doc, e.headers


def event_headers(ce_id: str, ce_type: str = RESPONSE, **ext: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0", "ce-id": ce_id, "ce-type": ce_type, "ce-source": "http://localhost:9081/",
        "content-type": "application/json",
    } | {f"ce-{k}": v for k, v in ext.items()}  # fmt: skip


def samples(metrics_text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page keyed by (name, sorted labels)."""
    out = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def value(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return math.fsum(
        v for (n, ls), v in samples(metrics_text).items() if n == name and set(labels.items()) <= set(ls)
    )
