"""FSDP2 (fully_shard, 2 CPU ranks, gloo) with the sharded global gradient norm, scraped by the real
Prometheus: what "gradient norm" means under FSDP, and what the gate can and cannot see with it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lossgate.core.verdicts import HealthVerdict
from lossgate_dev.devenv.prom import Prometheus
from tests.training import harness
from tests.training.harness import Job

pytestmark = pytest.mark.prom


def test_sharded_norm_is_global_loss_divergence_still_caught(
    prometheus: Prometheus, jobs: list[Job], tmp_path: Path
) -> None:
    # Given an FSDP job whose rank 1 data is corrupted and whose rank 1 gradients blow up at step 150
    run, start = harness.new_run("fsdp"), time.time()
    job = harness.launch(
        "train_fsdp.py", tmp_path, run, "--steps", "200", "--corrupt", "1", "--blowup", "1:150"
    )
    jobs.append(job)
    harness.scrape(prometheus, job)

    # When it is read back
    harness.wait_steps(prometheus, job, 200)
    got = harness.read(prometheus, run, start)
    counted, _ = harness.verdicts(got)

    # Then the exported norm is the global one: equal to the norm of the hand-averaged gradients of
    # an unsharded replica, and the same on both ranks (every step, so the window means are equal)
    log = job.log.read_text()
    assert "rank 0: reference norm ok" in log
    assert "rank 1: reference norm ok" in log
    means = [r.divergence["grad_norm"] for r in got.counts]
    assert means[0] == means[1]
    # And the one-step blow-up shows on both ranks (the averaged gradient carries it), as one step each
    assert [x for x in counted.reasons if "trailing median" in x] == [
        f"rank {r}: gradient norm over 10x its trailing median on 1 of 200 steps (every step counted)"
        for r in "01"
    ]
    # And rank 1's corrupted data is still caught by its own loss, not by the gradient norm
    assert counted.verdict is HealthVerdict.FAIL
    assert len([x for x in counted.reasons if ": loss " in x and "away from the other ranks" in x]) == 2
    assert not [x for x in counted.reasons if "gradient norm" in x and "away from the other ranks" in x]
