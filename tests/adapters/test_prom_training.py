"""Training health read back through a real Prometheus: the DDP example (2 rank processes) exports
per-rank metrics, scraped directly or pushed to a real Pushgateway; injected faults show up."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.exposition import delete_from_gateway

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.core.evidence import RankSeries, TrainingRun
from lossgate.instrument import TrainingExporter
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus, Pushgateway

pytestmark = pytest.mark.prom
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "instrument" / "train_ddp.py"
# Unique per session: Debian's pushgateway persists groups to a shared file by default, so a fixed run
# label could read back another session's pushes.
RUN = f"fraud-scorer-train-v42-{uuid.uuid4().hex[:8]}"
BASELINE_RUN = f"fraud-scorer-train-v41-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()  # the example stops its rank processes on SIGTERM
        p.wait(20)


def _start(procs: list[subprocess.Popen[bytes]], tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    log = open(tmp_path / "train.log", "wb")  # noqa: SIM115 - lives as long as the process
    p = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--run", RUN, "--ranks", "2", *args], stdout=log, stderr=log
    )
    procs.append(p)
    return p


def _wait_discovered(prometheus: Prometheus, addresses: list[str]) -> None:
    """Scrape loops exist (targets listed, down until the ranks serve), so scraping starts at once."""

    def listed() -> bool:
        urls = [t["scrapeUrl"] for t in prometheus.api("targets")["activeTargets"]]
        return all(any(a in u for u in urls) for a in addresses)

    wait_until(listed, 30, f"Prometheus to discover {addresses}")


def _wait_final_step(
    prometheus: Prometheus, steps: int, proc: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    def done() -> bool:
        if proc.poll() not in (None, 0):
            raise AssertionError(f"example exited {proc.returncode}: {(tmp_path / 'train.log').read_text()}")
        ranks = prometheus.query(f'training_step{{run="{RUN}"}} == {steps}')
        return len(ranks) == 2

    wait_until(done, 90, f"both ranks' step {steps} scraped", interval=0.25)


def _read(prometheus: Prometheus, start: float, baseline_run: str | None = None) -> TrainingRun:
    end = time.time()
    result = PrometheusMetrics(PrometheusConfig(prometheus.url)).training_run(
        RUN, baseline_run, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), 0.5
    )
    assert isinstance(result, TrainingRun), result
    return result


def _at(rank: RankSeries, lo: float, hi: float) -> list[int]:
    """Indices of the rows whose step is in [lo, hi)."""
    return [i for i, s in enumerate(rank.steps) if lo <= s < hi]


def test_ddp_ranks_export_loss_and_grad_norm_and_faults_show(
    prometheus: Prometheus, launch: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # Given the DDP example with 2 rank processes, each serving /metrics, scraped every second,
    # with rank 1's gradients blown up x1e4 on steps 60..119 and NaN at step 200
    ports = [free_port(), free_port()]
    for port in ports:
        prometheus.add_target(f"127.0.0.1:{port}")
    _wait_discovered(prometheus, [f"127.0.0.1:{port}" for port in ports])
    start = time.time()
    faults = ["--blowup", "1:60:120", "--nan", "1:200"]
    proc = _start(launch, tmp_path, "--steps", "240", "--ports", ",".join(map(str, ports)), *faults,
                  "--step-sleep", "0.03", "--linger", "300")  # fmt: skip

    # When the run finishes and Prometheus has scraped both ranks' last step
    _wait_final_step(prometheus, 240, proc, tmp_path)
    run = _read(prometheus, start)

    # Then both ranks are there, aligned by step, ending at step 240
    assert [r.rank for r in run.ranks] == ["0", "1"]
    r0, r1 = run.ranks
    for r in run.ranks:
        finite_steps = [s for s in r.steps if math.isfinite(s)]
        assert finite_steps == sorted(set(finite_steps))
        assert finite_steps[-1] == 240
        assert len(r.loss) == len(r.grad_norm) == len(r.steps) == len(r.nonfinite_total)
        assert r.loss_scale == ()
        before = _at(r, 1, 60)
        assert before
        assert all(math.isfinite(r.loss[i]) and r.grad_norm[i] < 20 for i in before)
    # And the gradient blow-up shows on rank 1's local gradient norm only, by three orders of magnitude
    blown = _at(r1, 60, 120)
    assert blown, "no scrape landed inside the blow-up window"
    assert min(r1.grad_norm[i] for i in blown) > 100 * max(r0.grad_norm[i] for i in _at(r0, 60, 120))
    assert max(r1.grad_norm[i] for i in _at(r1, 120, 200)) < 100
    # And the NaN at step 200 is counted on every rank (the all-reduced gradient is NaN everywhere),
    # after which the weights are NaN: every later step is non-finite (41 steps: 200..240)
    for r in run.ranks:
        assert all(r.nonfinite_total[i] == 0 for i in _at(r, 1, 200))
        assert all(math.isnan(r.loss[i]) for i in _at(r, 201, 241))
        assert r.nonfinite_total[-1] == 41
    assert run.validation_loss is not None
    assert math.isnan(run.validation_loss)
    assert run.baseline_validation_loss is None
    assert run.fp16 is False


def test_pushgateway_path_with_fp16_loss_scale_and_baseline_validation(
    prometheus: Prometheus, pushgateway: Pushgateway, launch: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # Given a Pushgateway scraped with honor_labels, and the baseline run's validation loss pushed to it
    prometheus.add_target(f"127.0.0.1:{pushgateway.port}", honor_labels=True)
    prometheus.wait_target_up(f"127.0.0.1:{pushgateway.port}")
    baseline = TrainingExporter(BASELINE_RUN, 0)
    baseline.push_to(pushgateway.url)
    baseline.on_validation(0.875)
    start = time.time()
    try:
        _push_run_and_check(prometheus, pushgateway, launch, tmp_path, start)
    finally:  # leave nothing in the gateway's persisted state
        baseline.delete_from_gateway()
        for rank in ("0", "1"):
            delete_from_gateway(
                pushgateway.url, job="lossgate-training", grouping_key={"run": RUN, "rank": rank}
            )


def _push_run_and_check(
    prometheus: Prometheus, pushgateway: Pushgateway, launch: list[subprocess.Popen[bytes]], tmp_path: Path,
    start: float,
) -> None:  # fmt: skip
    # When the DDP example pushes (fp16 loss scaling simulated) and rank 1's gradients overflow at step 100
    proc = _start(launch, tmp_path, "--steps", "150", "--pushgateway", pushgateway.url, "--fp16",
                  "--nan", "1:100", "--push-interval", "0.2", "--step-sleep", "0.03")  # fmt: skip
    _wait_final_step(prometheus, 150, proc, tmp_path)
    assert proc.wait(30) == 0  # pushed runs end; the gateway keeps their last values
    run = _read(prometheus, start, baseline_run=BASELINE_RUN)

    # Then both ranks came through the gateway with their own run/rank labels
    assert [r.rank for r in run.ranks] == ["0", "1"]
    (series,) = prometheus.query(f'training_step{{run="{RUN}",rank="1"}}')
    assert series["metric"]["job"] == "lossgate-training"
    assert float(series["value"][1]) == 150
    # And the overflowing step was skipped, not applied: counted once, the loss scale halved, the
    # loss stayed finite, and the validation loss is finite and better than chance (ln 3)
    assert run.fp16 is True
    for r in run.ranks:
        assert r.nonfinite_total[-1] == 1
        scales = [s for s in r.loss_scale if math.isfinite(s)]
        assert scales[0] == 2.0**16
        assert scales[-1] == 2.0**15
        assert all(math.isfinite(x) for x in r.loss)
    assert run.validation_loss is not None
    assert run.validation_loss < math.log(3)
    assert run.baseline_validation_loss == 0.875
