"""The counted training series read back through a real Prometheus: exact increases over a window,
a rank whose exporter restarted inside it read segment by segment from its raw samples, and the
demo's backfilled runs judged from their counted series."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import start_http_server

from lossgate.adapters.prometheus import PromClient, PrometheusConfig, PrometheusMetrics
from lossgate.adapters.prometheus.training_counts import CountsReader
from lossgate.core.evidence import TrainingRun
from lossgate.core.health import HealthConfig, assess
from lossgate.core.verdicts import HealthVerdict
from lossgate.instrument import TrainingExporter
from lossgate.instrument.step_stats import GateSettings
from lossgate_dev.demo.trainer import openmetrics, train
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
SETTINGS = GateSettings(window=20, min_history=5, warmup_steps=0.0)


def _steps(exporter: TrainingExporter, first: int, last: int) -> None:
    for step in range(first, last + 1):
        exporter.on_step(step, 1.0, 1.0, nonfinite=step % 7 == 0)


def _scraped(prometheus: Prometheus, run: str, rank: str, steps: float) -> None:
    def seen() -> bool:
        q = f'training_steps_total{{run="{run}",rank="{rank}"}} == {steps}'
        return len(prometheus.query(q)) == 1

    wait_until(seen, 30, f"rank {rank} of {run} at {steps} steps in Prometheus", interval=0.2)


def test_increases_are_exact_across_a_restart(prometheus: Prometheus) -> None:
    # Given two ranks serving /metrics, scraped every second
    run = f"counts-{uuid.uuid4().hex[:8]}"
    ports = [free_port(), free_port()]
    exporters = [TrainingExporter(run, r, settings=SETTINGS) for r in range(2)]
    servers = [
        start_http_server(p, addr="127.0.0.1", registry=e.registry)
        for p, e in zip(ports, exporters, strict=True)
    ]
    try:
        for p in ports:
            prometheus.add_target(f"127.0.0.1:{p}")
            prometheus.wait_target_up(f"127.0.0.1:{p}")
        # And 100 steps on each before the window opens
        for e in exporters:
            _steps(e, 1, 100)
        _scraped(prometheus, run, "0", 100)
        _scraped(prometheus, run, "1", 100)
        start = time.time()  # every sample up to now holds 100: the value at the window's start
        # When rank 0 takes 150 more steps, and rank 1 takes 40, restarts (a new exporter from 0,
        # same port) and takes 30
        _steps(exporters[0], 101, 250)
        _steps(exporters[1], 101, 140)
        _scraped(prometheus, run, "1", 140)
        servers[1][0].shutdown()
        servers[1][0].server_close()
        restarted = TrainingExporter(run, 1, settings=SETTINGS)
        servers[1] = start_http_server(ports[1], addr="127.0.0.1", registry=restarted.registry)
        _steps(restarted, 1, 30)
        _scraped(prometheus, run, "0", 250)
        _scraped(prometheus, run, "1", 30)
        end = time.time()
        client = PromClient(PrometheusConfig(prometheus.url))
        counts = {r.rank: r for r in CountsReader(client).read(run, start, end)}
    finally:
        for server, _ in servers:
            server.shutdown()
            server.server_close()

    # Then rank 0's increase is exactly its 150 steps and the 21 multiples of 7 among them
    assert counts["0"].totals["training_steps_total{}"] == 150
    assert counts["0"].totals["training_nonfinite_steps_total{}"] == 21
    # And rank 1's is 40 + 30 steps with (140 // 7 - 100 // 7) + 30 // 7 = 6 + 4 non-finite ones
    assert counts["1"].totals["training_steps_total{}"] == 70
    assert counts["1"].totals["training_nonfinite_steps_total{}"] == 10


def test_the_demo_backfilled_run_is_judged_from_its_counted_series(prometheus: Prometheus) -> None:
    # Given the demo's two-rank training runs (400 steps, 2 s apart), one clean and one whose rank 1
    # gradients go NaN from step 300, backfilled with promtool as `make demo` does
    end = time.time() - 60
    clean, bad = f"demo-clean-{uuid.uuid4().hex[:6]}", f"demo-nan-{uuid.uuid4().hex[:6]}"
    text = openmetrics(train(clean), end).replace("# EOF\n", "") + openmetrics(train(bad, nan_at=300), end)
    prometheus.backfill(text)
    metrics = PrometheusMetrics(PrometheusConfig(prometheus.url))
    window = (datetime.fromtimestamp(end - 1000, UTC), datetime.fromtimestamp(end + 30, UTC))
    gate = HealthConfig(warmup_steps=50.0)  # the demo's gradientHealth: warmupSteps 50
    # When the operator's adapter reads each run
    results = {}
    for run in (clean, bad):
        got = metrics.training_run(run, None, *window, 5.0)
        assert isinstance(got, TrainingRun), got
        results[run] = (got, assess(got, gate))

    # Then both carry the counted series (no ExporterOutdated), every one of their 400 steps counted
    for got, _ in results.values():
        assert [r.totals["training_steps_total{}"] for r in got.counts] == [400, 400]
        assert not got.exporter_outdated
    # And the clean run passes, the diverged one fails on its 100 applied non-finite steps
    assert results[clean][1].verdict is HealthVerdict.PASS, results[clean][1].reasons
    assert results[bad][1].verdict is HealthVerdict.FAIL
    assert results[bad][1].nonfinite_steps == 100
