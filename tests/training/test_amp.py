"""Mixed precision on CPU: fp16 autocast with a GradScaler (pushed to a real Pushgateway) and bf16
autocast with the fp16-compression comm hook (scraped), through the real Prometheus."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lossgate.core.verdicts import HealthVerdict
from lossgate_dev.devenv.prom import Prometheus, Pushgateway
from tests.training import harness
from tests.training.harness import Job

pytestmark = pytest.mark.prom


def test_fp16_scaler_skips_counted_and_a_run_of_overflows_fails(
    prometheus: Prometheus, pushgateway: Pushgateway, jobs: list[Job], tmp_path: Path
) -> None:
    # Given a Pushgateway scraped with honor_labels, and a 2-rank fp16 job whose rank 1 loss
    # overflows once at step 120, then on 12 consecutive steps 160..171
    prometheus.add_target(f"127.0.0.1:{pushgateway.port}", honor_labels=True)
    prometheus.wait_target_up(f"127.0.0.1:{pushgateway.port}")
    run, start = harness.new_run("amp"), time.time()
    faults = ("--overflow", "1:120:121", "--overflow2", "1:160:172")
    job = harness.launch(
        "train_ddp_torch.py",
        tmp_path,
        run,
        "--steps",
        "220",
        "--amp",
        "fp16",
        *faults,
        gateway=pushgateway.url,
    )
    jobs.append(job)

    # When the job has pushed its last step and Prometheus has scraped the gateway
    harness.wait_steps(prometheus, job, 220)
    got = harness.read(prometheus, run, start)
    counted, _ = harness.verdicts(got)

    # Then every skipped step is counted on both ranks (the all-reduced gradients overflow everywhere):
    # the 13 injected ones plus those of the scaler calibrating its initial scale (2^16), each with
    # a scale decrease (the exporter sees decreases from its second step on), and none of them is an
    # applied non-finite step
    assert got.fp16
    skipped = {r.totals["training_skipped_steps_total{}"] for r in got.counts}
    assert len(skipped) == 1
    assert skipped.pop() >= 13
    for r in got.counts:
        decreases = r.totals["training_loss_scale_decreases_total{}"]
        assert decreases in {
            r.totals["training_skipped_steps_total{}"],
            r.totals["training_skipped_steps_total{}"] - 1,
        }
        assert r.totals['training_skip_runs_total{limit="10"}'] == 1
    assert counted.nonfinite_steps == 0
    assert counted.skipped_steps >= 13
    # And the run of 12 skips fails the gate (10 or more in a row), the single one alone would not
    assert counted.verdict is HealthVerdict.FAIL
    assert counted.loss_scale_collapse
    assert not [x for x in counted.reasons if "does not count" in x]  # every bucket read through the gateway
    assert any("10 or more consecutive skipped fp16 steps" in x for x in counted.reasons), counted.reasons


def test_bf16_autocast_with_fp16_compression_hook_passes(
    prometheus: Prometheus, jobs: list[Job], tmp_path: Path
) -> None:
    # Given a clean bf16-autocast job whose DDP hook wraps the built-in fp16 compression hook
    run, start = harness.new_run("bf16"), time.time()
    job = harness.launch("train_ddp_torch.py", tmp_path, run, "--steps", "200", "--amp", "bf16",
                         "--comm-hook", "fp16")  # fmt: skip
    jobs.append(job)
    harness.scrape(prometheus, job)

    # When it is read back
    harness.wait_steps(prometheus, job, 200)
    got = harness.read(prometheus, run, start)
    counted, _ = harness.verdicts(got)

    # Then the local norms were recorded on every step (finite, both ranks) and the gate passes
    assert not got.fp16  # bf16 needs no loss scale
    for r in got.counts:
        assert r.totals["training_grad_norm_ratio_count{}"] == 151 - 30
    assert counted.verdict is HealthVerdict.PASS, counted.reasons
