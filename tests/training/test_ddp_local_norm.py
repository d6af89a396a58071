"""LocalGradNorm reads each rank's own gradient norm in every DDP mode, and DDP still averages."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from lossgate_dev.devenv.procs import free_port

SCRIPT = Path(__file__).resolve().parent / "scripts" / "local_norm_check.py"
CASES = {
    "default",
    "bucket_view",
    "fp16_compress",
    "no_sync_accumulation",
    "no_sync_bucket_view",
    "find_unused_parameters",
}


def test_the_hook_reads_each_ranks_own_norm_in_every_ddp_mode(tmp_path: Path) -> None:
    # Given a 2-rank DDP job whose ranks' gradients differ tenfold, in each mode the hook handles
    # (default buckets, gradient_as_bucket_view, an fp16 compression hook, no_sync accumulation,
    # find_unused_parameters)
    out = tmp_path / "rows"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={free_port()}", "--master_addr=127.0.0.1"]  # fmt: skip
    # When each rank compares the hook's norm with its own gradient, computed on a replica without DDP
    done = subprocess.run([*torchrun, str(SCRIPT), str(out)], timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [json.loads(line) for r in (0, 1) for line in Path(f"{out}.{r}").read_text().splitlines()]
    # Then every case on both ranks reads that rank's local norm (float32 rounding only), and a second
    # pop reads nothing new
    assert {r["case"] for r in rows} == CASES
    assert len(rows) == 2 * len(CASES)
    for r in rows:
        assert math.isclose(r["hook"], r["local"], rel_tol=1e-5), r
        assert math.isnan(r["again"]), r
        # And DDP still hands every rank the averaged gradient
        assert r["ddp_grads_averaged"], r
    # And the two ranks' norms really differ (the averaged gradient's norm could not tell them apart)
    by_case = {(r["case"], r["rank"]): r["hook"] for r in rows}
    for name in CASES:
        assert by_case[(name, 1)] > 3 * by_case[(name, 0)]
    # And autograd calls into Python once per large parameter plus the first and last small ones (6
    # parameters, one large): every parameter only when DDP may leave some unused (or the bucket is
    # the gradient)
    hooks = {r["case"]: r["hooks"] for r in rows}
    assert hooks["default"] == hooks["no_sync_accumulation"] == hooks["fp16_compress"] == 3
    assert hooks["find_unused_parameters"] == hooks["bucket_view"] == 6
