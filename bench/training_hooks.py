"""Overhead of lossgate's training hooks per optimizer step, on CPU, against the same job without them.

    .venv/bin/python bench/training_hooks.py                 # writes bench/results/training_hooks.json
    .venv/bin/python bench/training_hooks.py --quick         # fewer rounds (a smoke test)

Two models: a small MLP (128-256-256-10, batch 64) and an MLP of about 10 M parameters
(1024-2048-2048-1024-1024, batch 32). Each runs as a real DDP job (gloo, one process: the all-reduce
path is real, the hook runs on every bucket) three ways, in alternating blocks so that drift and other
load on the machine hit both alike:
  - baseline: DDP with the built-in all-reduce hook, forward, backward, clip, SGD step;
  - python_hook: the same with the built-in all-reduce registered as a (Python) comm hook: what any
    custom DDP hook costs, lossgate's or the built-in compression hooks (without one, DDP's default
    all-reduce runs in C++);
  - hooked: the baseline plus lossgate's LocalGradNorm comm hook and TrainingExporter.on_step with the
    local norm (every step's statistics: trailing median/MAD, z, ratio, spike bursts, recovery).
Per-step time = block time / steps, as process CPU time (all threads; the primary number: other
sessions' load on a shared machine inflates wall time far more) and as wall time; overhead =
median(hooked) / median(baseline) - 1. The goal is < 2%. One torch thread.
Also timed alone: TrainingExporter.on_step (microseconds). Nothing is downloaded; no GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from lossgate.instrument import TrainingExporter
from lossgate.instrument.hooks.ddp import LocalGradNorm

RESULTS = Path(__file__).resolve().parent / "results" / "training_hooks.json"
MODELS: dict[str, tuple[list[int], int]] = {"small_mlp": ([128, 256, 256, 10], 64),
                                            "mlp_10m": ([1024, 2048, 2048, 1024, 1024], 32)}  # fmt: skip


def mlp(widths: list[int]) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    torch.manual_seed(0)
    return torch.nn.Sequential(*layers[:-1])


class Job:
    def __init__(self, widths: list[int], batch: int, hooked: bool, python_hook: bool = False) -> None:
        self.ddp = DistributedDataParallel(mlp(widths))
        self.norm = LocalGradNorm.register(self.ddp) if hooked else None
        if python_hook:  # the built-in all-reduce as a Python comm hook: what any custom DDP hook pays
            self.ddp.register_comm_hook(None, default_hooks.allreduce_hook)
        self.exporter = TrainingExporter("bench", 0) if hooked else None
        self.opt = torch.optim.SGD(self.ddp.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, widths[0], generator=g)
        self.y = torch.randn(batch, widths[-1], generator=g)
        self.step_no = 0

    def step(self) -> None:
        self.step_no += 1
        loss = torch.nn.functional.mse_loss(self.ddp(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.ddp.parameters(), 1.0)
        self.opt.step()
        value = loss.item()  # a training loop logs its loss anyway: in both arms
        if self.norm is not None and self.exporter is not None:
            self.exporter.on_step(self.step_no, value, self.norm.pop())

    def block(self, steps: int) -> tuple[float, float]:
        """(wall, CPU) seconds per step; CPU time of the whole process (gloo's threads included)."""
        t, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def measure(name: str, rounds: int, target_s: float) -> dict[str, Any]:
    widths, batch = MODELS[name]
    base, hooked = Job(widths, batch, False), Job(widths, batch, True)
    py_hook = Job(widths, batch, False, python_hook=True)
    arms = [("baseline", base), ("python_hook", py_hook), ("hooked", hooked)]
    for _, job in arms:  # warm-up: allocator, DDP bucket rebuild, the exporter's first window
        job.block(20)
    probe, _ = base.block(5)
    steps = max(10, int(target_s / probe))
    wall: dict[str, list[float]] = {label: [] for label, _ in arms}
    cpu: dict[str, list[float]] = {label: [] for label, _ in arms}
    for r in range(rounds):
        for label, job in arms if r % 2 == 0 else arms[::-1]:
            w, c = job.block(steps)
            wall[label].append(w)
            cpu[label].append(c)
    out: dict[str, Any] = {
        "parameters": sum(p.numel() for p in base.ddp.parameters()),
        "batch": batch,
        "steps_per_block": steps,
        "rounds": rounds,
        "goal_pct": 2.0,
    }
    for kind, times in (("cpu", cpu), ("wall", wall)):
        b, h = statistics.median(times["baseline"]), statistics.median(times["hooked"])
        p = statistics.median(times["python_hook"])
        out[kind] = {
            "baseline_step_ms": round(b * 1e3, 4),
            "python_hook_step_ms": round(p * 1e3, 4),
            "hooked_step_ms": round(h * 1e3, 4),
            "overhead_us": round((h - b) * 1e6, 1),
            "overhead_pct": round((h / b - 1) * 100, 2),
            # lossgate's own work (norm per bucket, one sync, on_step) over the Python hook path
            "own_overhead_us": round((h - p) * 1e6, 1),
            "own_overhead_pct": round((h / p - 1) * 100, 2),
        } | {f"{label}_block_ms": [round(t * 1e3, 4) for t in times[label]] for label in times}
    out["meets_goal"] = out["cpu"]["overhead_pct"] < 2.0
    return out


def exporter_alone(n: int = 20_000) -> float:
    exp = TrainingExporter("bench", 0)
    g = torch.Generator().manual_seed(2)
    vals = torch.exp(0.1 * torch.randn(n, 2, generator=g)).tolist()
    t = time.perf_counter()
    for i, (a, b) in enumerate(vals):
        exp.on_step(i, a, b)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    rounds, target = (4, 0.3) if args.quick else (args.rounds, 1.0)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29_000 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    torch.set_num_threads(1)  # one compute thread: less exposed to other load on a shared machine
    try:
        out: dict[str, Any] = {"models": {}}
        for name in MODELS:
            out["models"][name] = r = measure(name, rounds, target)
            for kind in ("cpu", "wall"):
                k = r[kind]
                print(
                    f"{name:10s} {kind:4s} baseline {k['baseline_step_ms']:9.3f} ms/step  hooked "
                    f"{k['hooked_step_ms']:9.3f}  overhead {k['overhead_pct']:+6.2f}% "
                    f"({k['overhead_us']:+.0f} us); over a Python all-reduce hook "
                    f"{k['own_overhead_pct']:+.2f}% ({k['own_overhead_us']:+.0f} us)"
                )
            print(f"{name:10s} goal < 2% (CPU time): {'met' if r['meets_goal'] else 'NOT met'}")
        out["exporter_on_step_us"] = round(exporter_alone(), 2)
        print(f"TrainingExporter.on_step alone: {out['exporter_on_step_us']:.1f} us")
        out["meta"] = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    finally:
        dist.destroy_process_group()
    if any(math.isnan(m["cpu"]["overhead_pct"]) for m in out["models"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
