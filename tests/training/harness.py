"""Launch the example training jobs under torchrun (2 CPU processes, gloo), let the real Prometheus
scrape them (or a real Pushgateway receive them), and read the run back through the operator's adapter."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.core.evidence import TrainingRun
from lossgate.core.health import HealthConfig, HealthResult, assess
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "training"
# The gate as a rollout would set it for these short runs (warmupSteps 50, windowSteps 60); the jobs'
# exporters count with the same settings (GateSettings via --warmup/--window/--min-history).
GATE = HealthConfig(warmup_steps=50.0, window=60, min_history=30)
JOB_ARGS = ("--warmup", "50", "--window", "60", "--min-history", "30")


def new_run(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@dataclass
class Job:
    run: str
    proc: subprocess.Popen[bytes]
    log: Path
    ports: list[int]

    def check_alive(self) -> None:
        if self.proc.poll() not in (None, 0):
            raise AssertionError(f"job exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # torchrun forwards SIGTERM to its workers
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def launch(
    script: str, tmp_path: Path, run: str, *args: str, gateway: str | None = None, nproc: int = 2
) -> Job:
    """torchrun --nproc_per_node=<nproc> <script> on 127.0.0.1 (a free rendezvous port, free metrics
    ports)."""
    # the script serves rank r on 127.0.0.1:<port-base + r>, or pushes to the gateway
    master = free_port()
    base = _adjacent_ports(avoid=master)
    ports, target = [base, base + 1][:nproc], ["--port-base", str(base)]
    if gateway:
        ports, target = [], ["--pushgateway", gateway]
    log = tmp_path / f"{run}.log"
    env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master-addr=127.0.0.1",
           f"--master-port={master}", str(EXAMPLES / script), "--lossgate-run", run, *target,
           *JOB_ARGS, *args]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Job(run, proc, log, ports)


def _adjacent_ports(avoid: int) -> int:
    for _ in range(50):
        p = free_port()
        if avoid in (p, p + 1):
            continue
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", p + 1))
            return p
    raise RuntimeError("no two adjacent free ports")


def scrape(prometheus: Prometheus, job: Job) -> None:
    addresses = [f"127.0.0.1:{p}" for p in job.ports]
    for a in addresses:
        prometheus.add_target(a)

    def listed() -> bool:
        urls = [t["scrapeUrl"] for t in prometheus.api("targets")["activeTargets"]]
        return all(any(a in u for u in urls) for a in addresses)

    wait_until(listed, 30, f"Prometheus to discover {addresses}")


def wait_steps(prometheus: Prometheus, job: Job, steps: int, timeout: float = 150, ranks: int = 2) -> None:
    """Every rank's final step counter is in Prometheus."""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.check_alive()  # a crashed job fails the test at once, with its log
        if len(prometheus.query(f'training_steps_total{{run="{job.run}"}} == {steps}')) == ranks:
            return
        time.sleep(0.25)
    raise AssertionError(f"the ranks of {job.run} not all at step {steps} in Prometheus after {timeout:.0f}s")


def read(prometheus: Prometheus, run: str, start: float) -> TrainingRun:
    result = PrometheusMetrics(PrometheusConfig(prometheus.url)).training_run(
        run, None, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(time.time(), UTC), 0.5
    )
    assert isinstance(result, TrainingRun), result
    return result


def verdicts(run: TrainingRun) -> tuple[HealthResult, HealthResult]:
    """(the gate on the counted series, today's gate on the sampled gauges of the same run)."""
    assert run.counts, "the run exports no counted series"
    sampled = replace(run, counts=(), exporter_outdated=True)
    # The sampled gate sees a handful of points per rank here: judge them with a window that fits.
    return assess(run, GATE), assess(sampled, HealthConfig(warmup_steps=0.0, window=4, min_history=2))
