"""Request counters and a latency histogram for the guardrails (docs/metrics.md, "Guardrails").

    requests = RequestMetrics(registry)
    with requests.timed(model="fraud-scorer", version="v42") as call:
        answer = predict(...)
        call.code = "200"               # or "500" on a server error

Exports the names the operator reads by default:
  http_requests_total{model,version,code}                  counter
  http_request_duration_seconds{model,version}             histogram (+ _created)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

# Dense around typical model-serving latencies, so common thresholds (50 ms - 2 s) are bucket bounds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip


@dataclass
class Call:
    code: str = "200"


class RequestMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        requests_metric: str = "http_requests_total",
        latency_metric: str = "http_request_duration_seconds",
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.requests = Counter(
            requests_metric.removesuffix("_total"),
            "Requests served, by HTTP status code",
            ["model", "version", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            latency_metric,
            "Request latency (seconds)",
            ["model", "version"],
            buckets=buckets,
            registry=registry,
        )

    def observe(self, *, model: str, version: str, code: str, seconds: float) -> None:
        """Count one request and its latency."""
        self.requests.labels(model=model, version=version, code=str(code)).inc()
        self.latency.labels(model=model, version=version).observe(max(float(seconds), 0.0))

    @contextmanager
    def timed(self, *, model: str, version: str) -> Iterator[Call]:
        """Time the body; an exception counts as code 500 unless the body set a 5xx (re-raised)."""
        call, t0 = Call(), time.perf_counter()
        try:
            yield call
        except BaseException:
            if not call.code.startswith("5"):
                call.code = "500"
            raise
        finally:
            self.observe(model=model, version=version, code=call.code, seconds=time.perf_counter() - t0)
