"""Per-interval, per-arm loss statistics read back through a real Prometheus scraping real exporters.

Each exporter is lossgate's LossRecorder served by prometheus_client's WSGI app (one "pod"). The test
keeps a ledger of each exporter's cumulative state after every label (sums accumulated in the same
order as the recorder, whose scrapes are atomic), finds which ledger entry Prometheus saw at each
aligned instant, and requires the adapter's per-interval n, sum, sum of squares and tail to equal the
ledger's differences exactly (and the whole window to match the raw losses).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, make_wsgi_app

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.instrument import LossRecorder
from lossgate.ports import LossSeriesRef
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
MODEL = "fraud-scorer"
VERSIONS = {"baseline": "v41", "canary": "v42"}
INTERVAL = 1.5


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Exporter:
    """One model-server process: a LossRecorder on its own registry, /metrics via the WSGI app."""

    arm: str
    pod: str
    port: int = field(default_factory=free_port)
    ledger: list[tuple[float, float, float, float]] = field(
        default_factory=list
    )  # cumulative n,sum,sumsq,tail
    losses: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recorder = LossRecorder(self.registry)
        self.httpd = make_server("127.0.0.1", self.port, make_wsgi_app(self.registry), handler_class=_Quiet)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def label(self, pid: int, label: int, expected: float) -> None:
        loss = self.recorder.record_label(pid, label)
        assert loss is not None
        assert math.isclose(loss, expected, rel_tol=1e-12, abs_tol=1e-12)
        n, s, q, t = self.ledger[-1] if self.ledger else (0.0, 0.0, 0.0, 0.0)
        self.ledger.append((n + 1, s + loss, q + loss * loss, t + (loss > 4.6)))  # the recorder's arithmetic
        self.losses.append(loss)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _scrape(prometheus: Prometheus, exporters: list[Exporter]) -> None:
    for e in exporters:
        prometheus.add_target(e.address, {"pod": e.pod})
    for e in exporters:
        prometheus.wait_target_up(e.address)


def _count_query(e: Exporter) -> str:
    return f'model_prediction_loss_count{{version="{VERSIONS[e.arm]}",pod="{e.pod}"}}'


def _wait_scraped(prometheus: Prometheus, exporters: list[Exporter]) -> None:
    """Poll until Prometheus holds every exporter's latest cumulative count."""

    def seen() -> bool:
        return all(
            (r := prometheus.query(_count_query(e))) and float(r[0]["value"][1]) == e.ledger[-1][0]
            for e in exporters
            if e.ledger
        )

    wait_until(seen, 30, "Prometheus to scrape the latest batch")


def _state_at(prometheus: Prometheus, e: Exporter, t: float) -> tuple[float, float, float, float]:
    """The ledger entry Prometheus saw at instant t (the batch boundary whose count it holds)."""
    r = prometheus.query(_count_query(e), time=t)
    n = float(r[0]["value"][1]) if r else 0.0
    if n == 0:  # no series yet, or predictions served but none labelled
        return (0.0, 0.0, 0.0, 0.0)
    (entry,) = [x for x in e.ledger if x[0] == n]  # counts increase strictly: one entry per boundary
    return entry


def _expected(prometheus: Prometheus, pods: list[Exporter], t0: float, t1: float) -> ArmStats:
    parts: list[list[float]] = [[], [], [], []]
    for e in pods:
        a, b = _state_at(prometheus, e, t0), _state_at(prometheus, e, t1)
        if b != a:
            for i in range(4):
                parts[i].append(b[i] - a[i])
    n, s, q, t = (math.fsum(p) for p in parts)
    return ArmStats(n=n, sum=s, sumsq=q, tail=t)


def _probabilities(rng: np.random.Generator, i: int) -> tuple[np.ndarray, int]:
    if i % 9 == 4:  # a confident mistake: p(true) = 0.001, loss 6.9 > 4.6 (catastrophic tail)
        return np.array([0.989, 0.010, 0.001]), 2
    p = rng.dirichlet([2.0, 1.0, 0.5])
    return p, int(rng.choice(3, p=p))


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _wait_for_instant(after: float, start: float, interval: float) -> float:
    """The first aligned instant at or after `after`, once the clock has passed it (polled)."""
    k = math.ceil((after - start) / interval)
    instant = start + k * interval
    wait_until(lambda: time.time() > instant + 0.05, interval + 5, "the next aligned instant", interval=0.05)
    return instant


def test_per_interval_arm_stats_equal_direct_computation(prometheus: Prometheus) -> None:
    # Given a baseline served by two pods and a canary by one, each scraped by Prometheus every second
    rng = np.random.default_rng(20240501)
    pods = [Exporter("baseline", "b-0"), Exporter("baseline", "b-1"), Exporter("canary", "c-0")]
    _scrape(prometheus, pods)
    start = round(time.time(), 3)
    pending: dict[int, list[tuple[int, np.ndarray, int]]] = {id(e): [] for e in pods}

    # When 7 batches of predictions are served, one per 1.5 s interval, each labelled one batch later
    # (a delayed label), plus labels for ids nobody predicted, and Prometheus scrapes every batch
    for batch in range(7):
        due = start + batch * INTERVAL + 0.1
        wait_until(lambda: time.time() > due, INTERVAL + 5, f"batch {batch}'s interval", interval=0.05)  # noqa: B023
        for j, e in enumerate(pods):
            for pid, p, label in pending[id(e)]:
                e.label(pid, label, -math.log(max(p[label], 1e-6)))
            assert e.recorder.record_label(-1, 0) is None  # unknown id: counted, not raised
            pending[id(e)] = []
            if batch < 6:
                for i in range(3 + (batch * 7 + j * 5) % 11):
                    p, label = _probabilities(rng, i)
                    pid = batch * 1000 + i
                    if e.arm == "canary":  # the canary's model hands out logits
                        e.recorder.record_prediction(pid, logits=np.log(p) + 3.0, model=MODEL, version="v42")
                    else:
                        e.recorder.record_prediction(pid, probabilities=p, model=MODEL, version="v41")
                    pending[id(e)].append((pid, p, label))
        _wait_scraped(prometheus, pods)
    end = _wait_for_instant(time.time(), start, INTERVAL)

    # Then the adapter's per-interval stats equal the ledger at the instants Prometheus saw, exactly
    metrics = PrometheusMetrics(PrometheusConfig(prometheus.url))
    ref = LossSeriesRef("ml-prod", MODEL, "v41", "v42")
    intervals = metrics.loss_intervals(ref, _utc(start), _utc(end), INTERVAL)
    assert isinstance(intervals, list), intervals
    assert len(intervals) == round((end - start) / INTERVAL) >= 7
    assert sum(1 for iv in intervals if iv.baseline.n and iv.canary.n) >= 4  # the traffic spans intervals
    for k, iv in enumerate(intervals):
        assert (iv.start, iv.end) == (round(start + INTERVAL * k, 3), round(start + INTERVAL * (k + 1), 3))
        assert iv.baseline == _expected(prometheus, pods[:2], iv.start, iv.end), k
        assert iv.canary == _expected(prometheus, pods[2:], iv.start, iv.end), k

    # And over the whole window: n is every labelled prediction, mean and variance match the raw losses
    for arm, arm_pods in (("baseline", pods[:2]), ("canary", pods[2:])):
        losses = np.array([x for e in arm_pods for x in e.losses])
        n, s, q, tail = _totals(intervals, arm)
        assert n == len(losses) == sum(len(e.ledger) for e in arm_pods)
        assert tail == int(np.sum(losses > 4.6)) > 0
        assert math.isclose(s / n, float(losses.mean()), rel_tol=1e-12)
        assert math.isclose((q - s * s / n) / (n - 1), float(losses.var(ddof=1)), rel_tol=1e-9)
    for e in pods:
        e.stop()


def _totals(intervals: list[IntervalStats], arm: str) -> tuple[float, float, float, float]:
    stats = [getattr(iv, arm) for iv in intervals]
    return (sum(a.n for a in stats), math.fsum(a.sum for a in stats), math.fsum(a.sumsq for a in stats),
            sum(a.tail for a in stats))  # fmt: skip


@pytest.mark.parametrize(
    ("after_restart", "templates"),
    [
        pytest.param(45, False, id="count-grows-past-old-value:_created-reveals-restart"),
        pytest.param(12, True, id="count-drops:user-templates-without-_created"),
    ],
)
def test_counter_reset_mid_window_is_handled(
    prometheus: Prometheus, after_restart: int, templates: bool
) -> None:
    # Given a baseline and a canary exporter scraped every second, already serving when the window
    # opens (without _created, a series first seen inside the window cannot be told from one back
    # after a gap, so its first scrape is the base: docs/metrics.md); the canary labels 30 predictions
    rng = np.random.default_rng(after_restart)
    baseline, canary = Exporter("baseline", "b-0"), Exporter("canary", "c-0")
    _scrape(prometheus, [baseline, canary])

    def serve(e: Exporter, count: int) -> None:
        for i in range(count):
            p, label = _probabilities(rng, i)
            e.recorder.record_prediction(i, probabilities=p, model=MODEL, version=VERSIONS[e.arm])
            e.label(i, label, -math.log(max(p[label], 1e-6)))

    serve(baseline, 5)
    serve(canary, 10)
    _wait_scraped(prometheus, [baseline, canary])
    time.sleep(1.1)  # a scrape interval, so both series have a sample before the window opens
    start = round(time.time(), 3)
    opened = {"baseline": baseline.ledger[-1], "canary": canary.ledger[-1]}
    serve(baseline, 15)
    serve(canary, 20)
    _wait_scraped(prometheus, [baseline, canary])
    before = canary.ledger[-1]

    # When the canary process restarts (a fresh registry on the same address) and labels more
    canary.stop()
    restarted = Exporter("canary", "c-0", port=canary.port)
    serve(restarted, after_restart)
    _wait_scraped(prometheus, [restarted])
    after = restarted.ledger[-1]
    end = _wait_for_instant(time.time(), start, 0.5)

    # Then one interval over the window counts both lives of the counter, exactly
    ref = LossSeriesRef("ml-prod", MODEL, "v41", "v42")
    if templates:
        sel = '{{model="{{model}}",version="{{version}}"}}'
        ref = LossSeriesRef(
            "ml-prod", MODEL, "v41", "v42",
            count_template="model_prediction_loss_count" + sel.format(),
            sum_template="model_prediction_loss_sum" + sel.format(),
            sumsq_template="model_prediction_loss_squared_sum" + sel.format(),
            tail_template='model_prediction_loss_bucket{model="{model}",version="{version}",le="4.6"}',
        )  # fmt: skip
    result = PrometheusMetrics(PrometheusConfig(prometheus.url)).loss_intervals(
        ref, _utc(start), _utc(end), round(end - start, 3)
    )
    assert isinstance(result, list), result
    (iv,) = result
    o = opened["canary"]
    assert iv.canary == ArmStats(
        n=20.0 + after_restart,
        sum=math.fsum([before[1] - o[1], after[1]]),
        sumsq=math.fsum([before[2] - o[2], after[2]]),
        tail=before[3] - o[3] + after[3],
    )
    b, ob = baseline.ledger[-1], opened["baseline"]
    assert iv.baseline == ArmStats(b[0] - ob[0], b[1] - ob[1], b[2] - ob[2], b[3] - ob[3])
    baseline.stop()
    restarted.stop()
