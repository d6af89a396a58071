"""Lightning (DDP, 2 processes) and the Hugging Face Trainer (DDP, 2 processes) under torchrun on CPU,
with lossgate's callbacks, scraped by the real Prometheus or pushed to a real Pushgateway: faults fail
the gate, clean runs pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lossgate.core.evidence import TrainingRun
from lossgate.core.health import HealthResult
from lossgate.core.verdicts import HealthVerdict
from lossgate_dev.devenv.prom import Prometheus, Pushgateway
from tests.training import harness
from tests.training.harness import Job

pytestmark = pytest.mark.prom


def _run(
    prometheus: Prometheus,
    jobs: list[Job],
    tmp_path: Path,
    script: str,
    steps: int,
    *args: str,
    gateway: Pushgateway | None = None,
    nproc: int = 2,
) -> tuple[TrainingRun, HealthResult]:
    run, start = harness.new_run(script.split(".")[0].replace("_", "-")), time.time()
    if gateway is not None:  # the ranks push; Prometheus scrapes the gateway with honor_labels
        prometheus.add_target(f"127.0.0.1:{gateway.port}", honor_labels=True)
        prometheus.wait_target_up(f"127.0.0.1:{gateway.port}")
    job = harness.launch(
        script, tmp_path, run, "--steps", str(steps), *args, gateway=gateway and gateway.url, nproc=nproc
    )
    jobs.append(job)
    if gateway is None:
        harness.scrape(prometheus, job)
    harness.wait_steps(prometheus, job, steps, timeout=240, ranks=nproc)
    got = harness.read(prometheus, run, start)
    return got, harness.verdicts(got)[0]


def test_lightning_local_norms_catch_a_one_rank_blowup(
    prometheus: Prometheus, jobs: list[Job], tmp_path: Path
) -> None:
    # Given a 2-process Lightning DDP job whose rank 1 loss (and so its gradients) is x1000 at step 150
    got, counted = _run(prometheus, jobs, tmp_path, "train_lightning.py", 200, "--blowup", "1:150")

    # Then the callback counted every optimizer step on both ranks
    for r in got.counts:
        assert r.totals["training_steps_total{}"] == 200
    # And the gate fails on rank 1's local norm only: rank 0's norm (before the all-reduce) never
    # went above 10x its median, which the post-all-reduce norm would have on both ranks
    assert counted.verdict is HealthVerdict.FAIL
    assert [x for x in counted.reasons if "trailing median" in x] == [
        "rank 1: gradient norm over 10x its trailing median on 1 of 200 steps (every step counted)"
    ]


def test_lightning_clean_run_pushed_passes(
    prometheus: Prometheus, pushgateway: Pushgateway, jobs: list[Job], tmp_path: Path
) -> None:
    # Given a clean 2-process Lightning job pushing to a Pushgateway; when read back, then the gate passes
    got, counted = _run(prometheus, jobs, tmp_path, "train_lightning.py", 200, gateway=pushgateway)
    assert [r.rank for r in got.counts] == ["0", "1"]
    assert counted.verdict is HealthVerdict.PASS, counted.reasons


def test_hf_trainer_raw_nan_loss_fails(prometheus: Prometheus, jobs: list[Job], tmp_path: Path) -> None:
    # Given a tiny GPT-2 (built from a config) trained by the HF Trainer on 2 processes, rank 1's
    # loss NaN at step 150 (the Trainer's logs would filter it out)
    got, counted = _run(prometheus, jobs, tmp_path, "train_hf.py", 200, "--nan", "1:150")

    # Then the callback saw the raw NaN: rank 1 from step 150 (51 steps), rank 0 from step 151, when
    # the NaN all-reduced into every rank's weights (rank 0's own gradients at step 150 were finite)
    nonfinite = {r.rank: r.totals["training_nonfinite_steps_total{}"] for r in got.counts}
    assert nonfinite == {"0": 50, "1": 51}
    assert counted.verdict is HealthVerdict.FAIL
    assert counted.nonfinite_steps == 51


def test_hf_trainer_clean_run_pushed_passes(
    prometheus: Prometheus, pushgateway: Pushgateway, jobs: list[Job], tmp_path: Path
) -> None:
    # Given a clean HF Trainer job pushing to a Pushgateway; when read back, then every step is
    # counted and the gate passes
    got, counted = _run(prometheus, jobs, tmp_path, "train_hf.py", 200, gateway=pushgateway)
    for r in got.counts:
        assert r.totals["training_steps_total{}"] == 200
        assert r.totals["training_nonfinite_steps_total{}"] == 0
    assert counted.verdict is HealthVerdict.PASS, counted.reasons


def test_hf_trainer_without_ddp_norms_every_step_from_the_parameters(
    prometheus: Prometheus, jobs: list[Job], tmp_path: Path
) -> None:
    # Given the HF Trainer on one process (no DDP: the callback norms the gradients from per-parameter
    # hooks), its loss NaN at step 150
    got, counted = _run(prometheus, jobs, tmp_path, "train_hf.py", 200, "--nan", "0:150", nproc=1)
    # Then every step is counted on the one rank, with the NaN steps from 150 on, and a finite,
    # positive gradient norm (a finite log) at each of the 100 post-warm-up steps before the fault
    # (steps 50-149): the norm's path works without DDP
    (r,) = got.counts
    assert r.totals["training_steps_total{}"] == 200
    assert r.totals["training_nonfinite_steps_total{}"] == 51
    assert r.totals["training_log_grad_norm_count{}"] == 100
    # And the gate fails the run on its non-finite steps
    assert counted.verdict is HealthVerdict.FAIL
    assert counted.nonfinite_steps == 51
