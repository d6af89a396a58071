"""GPU check of the training-health hooks: NCCL, AMP fp16 with a GradScaler, the DDP comm hook.

    .venv/bin/python hack/gpu/training_health_check.py            # on a CUDA machine, a few minutes
    .venv/bin/python hack/gpu/training_health_check.py --cpu      # the same scenarios on CPU (gloo)

Runs examples/training/train_ddp_torch.py under `torchrun --nproc_per_node=2` once per scenario:
with 2+ GPUs one rank per GPU over NCCL; with one GPU, rank 0 on the GPU and rank 1 on the CPU over
gloo (NCCL refuses two ranks on one device). Each rank serves /metrics on 127.0.0.1; when both ranks
have exported their last step this script reads their /metrics (no Prometheus needed), builds the
counted series the operator would read (lossgate.adapters.prometheus.training_counts), runs the gate
(lossgate.core.health.assess) and prints the verdict next to the expected one. Exit 0 only if every
verdict matches. Also prints the per-step wall time of the hooked job on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lossgate.adapters.prometheus.training_counts import counts_from_exposition
from lossgate.core.evidence import TrainingRun
from lossgate.core.health import HealthConfig, assess
from lossgate.core.verdicts import HealthVerdict
from lossgate_dev.devenv.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "training" / "train_ddp_torch.py"
GATE = HealthConfig(warmup_steps=50.0, window=60, min_history=30)
STEPS = 300
# (name, extra arguments, expected verdict, a phrase the reasons must contain)
FP16 = ["--amp", "fp16"]
PASS, FAIL = HealthVerdict.PASS, HealthVerdict.FAIL
SCENARIOS: list[tuple[str, list[str], HealthVerdict, str]] = [
    ("clean fp16 + allreduce", FP16, PASS, ""),
    # under fp16 a x1000 gradient or a NaN loss only makes the GradScaler skip the step (not a
    # failure): these two run in bf16 / fp32, where the step is applied
    ("bf16 + fp16-compression hook, rank 1 blow-up at step 200",
     ["--amp", "bf16", "--comm-hook", "fp16", "--blowup", "1:200"], FAIL, "rank 1: gradient norm over 10x"),
    ("fp32, NaN loss on rank 1 at step 150", ["--nan", "1:150"], FAIL, "applied step"),
    ("fp16, NaN loss on rank 1 at step 150: one skipped step", [*FP16, "--nan", "1:150"], PASS, ""),
    ("12 fp16 overflows in a row on rank 1", [*FP16, "--overflow", "1:160:172"], FAIL, "consecutive skipped"),
    ("rank 1 data corrupted", [*FP16, "--corrupt", "1"], FAIL, "away from the other ranks"),
]  # fmt: skip


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def run(name: str, extra: list[str], cpu: bool, log_dir: Path) -> tuple[TrainingRun, float]:
    base = free_port()  # rank r serves on base + r (a port taken by then fails the job: rerun)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master-addr=127.0.0.1", f"--master-port={free_port()}"]  # fmt: skip
    job = ["--lossgate-run", "gpu-check", "--port-base", str(base), "--steps", str(STEPS),
           "--warmup", "50", "--window", "60", "--min-history", "30", "--linger", "120",
           *(["--cpu"] if cpu else [])]  # fmt: skip
    cmd = [*launcher, str(SCRIPT), *job, *extra]
    log = log_dir / f"{name.split()[0]}-{base}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603 (fixed argv)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: the job exited {proc.returncode}; log {log}")
            texts = [scrape(base), scrape(base + 1)]
            done = [t for t in texts if t and "training_steps_total{rank=" in t and f"}} {STEPS}.0" in t]
            if len(done) == 2:
                elapsed = time.monotonic() - started
                counts = counts_from_exposition([t for t in texts if t])
                return TrainingRun("gpu-check", (), counts=counts), elapsed
            time.sleep(0.5)
        raise RuntimeError(f"{name}: no final step within 240 s; log {log}")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cpu", action="store_true", help="run the scenarios on CPU (gloo)")
    args = ap.parse_args()
    import torch  # the torch extra; imported here so --help works without it

    gpus = 0 if args.cpu else torch.cuda.device_count()
    plan = (
        "2 ranks on 2 GPUs, NCCL"
        if gpus >= 2
        else ("rank 0 on the GPU, rank 1 on CPU, gloo" if gpus else "CPU, gloo")
    )
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs {gpus}: {plan}")
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "lossgate-gpu-check"  # noqa: S108
    log_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, extra, expected, phrase in SCENARIOS:
        got, elapsed = run(name, extra, args.cpu, log_dir)
        result = assess(got, GATE)
        ok = result.verdict is expected and (not phrase or any(phrase in r for r in result.reasons))
        failures += not ok
        verdict = f"{result.verdict.value} (expected {expected.value})"
        print(f"{'ok ' if ok else 'BAD'} {name}: {verdict} in {elapsed:.0f} s")
        for reason in result.reasons[:4]:
            print(f"      {reason}")
    print(f"{len(SCENARIOS) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
