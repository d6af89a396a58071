"""PyTorch DDP under torchrun (2 CPU ranks, gloo) with lossgate's comm hook, scraped by the real
Prometheus: each injected fault fails the gate from the counted series, a clean run passes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lossgate.core.verdicts import HealthVerdict
from lossgate_dev.devenv.prom import Prometheus
from tests.training import harness
from tests.training.harness import Job

pytestmark = pytest.mark.prom
SCRIPT = "train_ddp_torch.py"


def _run(prometheus: Prometheus, jobs: list[Job], tmp_path: Path, steps: int, *args: str):  # type: ignore[no-untyped-def]
    run = harness.new_run("ddp")
    start = time.time()
    job = harness.launch(SCRIPT, tmp_path, run, "--steps", str(steps), *args)
    jobs.append(job)
    harness.scrape(prometheus, job)
    harness.wait_steps(prometheus, job, steps)
    return harness.read(prometheus, run, start)


def test_clean_run_passes_and_counts_every_step(
    prometheus: Prometheus, jobs: list[Job], tmp_path: Path
) -> None:
    # Given a clean 2-rank DDP job of 300 steps
    # When Prometheus has scraped both ranks' last step and the gate reads the run back
    run = _run(prometheus, jobs, tmp_path, 300)
    counted, _ = harness.verdicts(run)

    # Then every step of both ranks is counted: 251 at or after the warm-up step 50, of which all but
    # the first min_history (30) were judged
    assert [r.rank for r in run.counts] == ["0", "1"]
    for r in run.counts:
        assert r.totals["training_steps_total{}"] == 300
        assert r.totals["training_assessed_steps_total{}"] == 251 - 30
        assert r.totals["training_nonfinite_steps_total{}"] == 0
    # And the gate passes on the counted series
    assert counted.verdict is HealthVerdict.PASS, counted.reasons
    assert counted.points_assessed == 221
    assert counted.max_grad_norm_ratio < 10


def test_one_step_blowup_between_two_scrapes_fails_only_the_counted_gate(
    prometheus: Prometheus, jobs: list[Job], tmp_path: Path
) -> None:
    # Given rank 1's gradients x1000 at step 200 only, done right after a scrape of rank 1, so the
    # gauges of step 200 are overwritten by step 201 long before the next scrape (1 s later)
    run = _run(prometheus, jobs, tmp_path, 300, "--blowup", "1:200", "--blowup-after-scrape")
    counted, sampled = harness.verdicts(run)

    # Then no scrape saw step 200: the sampled gauges never show the spike
    r1 = next(r for r in run.ranks if r.rank == "1")
    assert 200.0 not in r1.steps
    assert max(r1.grad_norm) < 50 * min(r1.grad_norm)
    # And today's gate (sampled gauges) does not fail the run, while the counted gate does, on rank 1,
    # from the one step of 300 whose norm was over 10x (in fact 100-1000x) its trailing median
    assert sampled.verdict is not HealthVerdict.FAIL, sampled.reasons
    assert counted.verdict is HealthVerdict.FAIL
    assert [x for x in counted.reasons if "trailing median" in x] == [
        "rank 1: gradient norm over 10x its trailing median on 1 of 300 steps (every step counted)"
    ]
    assert counted.max_grad_norm_ratio == 100.0  # the largest bucket bound exceeded (a lower bound)


def test_nan_at_one_step_on_rank_1_fails(prometheus: Prometheus, jobs: list[Job], tmp_path: Path) -> None:
    # Given rank 1's loss NaN at step 150: the all-reduced gradients (and then the weights) are NaN
    run = _run(prometheus, jobs, tmp_path, 200, "--nan", "1:150")
    counted, _ = harness.verdicts(run)

    # Then the counted gate fails on the applied non-finite steps: 51 on each rank (150..200)
    assert counted.verdict is HealthVerdict.FAIL
    assert counted.nonfinite_steps == 51
    assert any(x.startswith("rank 1: 51 applied step(s) with non-finite") for x in counted.reasons)


def test_one_rank_with_corrupted_data_fails_on_divergence(
    prometheus: Prometheus, jobs: list[Job], tmp_path: Path
) -> None:
    # Given rank 1's targets carry 10x the noise (its data is corrupted)
    run = _run(prometheus, jobs, tmp_path, 200, "--corrupt", "1")
    counted, _ = harness.verdicts(run)

    # Then the per-rank running means of log loss over the last 60 steps are far apart: both ranks
    # are flagged (two ranks: each is half the gap from the median), the loss first
    assert counted.verdict is HealthVerdict.FAIL
    loss = [x for x in counted.reasons if ": loss " in x and "away from the other ranks" in x]
    assert len(loss) == 2, counted.reasons
    for r in run.counts:
        _, n = r.divergence["loss"]
        assert n == 60
