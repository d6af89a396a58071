"""The counted training series read back through a real Prometheus: exact increases over a window,
a series born inside it counted from 0, and a rank whose exporter restarted inside it read segment by
segment from its raw samples."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client import start_http_server

from lossgate.adapters.prometheus import PromClient, PrometheusConfig
from lossgate.adapters.prometheus.training_counts import CountsReader
from lossgate.instrument import TrainingExporter
from lossgate.instrument.step_stats import GateSettings
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
