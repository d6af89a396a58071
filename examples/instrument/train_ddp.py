"""A small data-parallel training job (numpy, one process per rank) exporting lossgate's training metrics.

Each rank trains the same softmax-regression model on its shard of a synthetic data set; gradients are
averaged across ranks every step (an all-reduce through shared memory), so all ranks hold the same
weights, as with PyTorch DDP. Every rank exports training_loss, training_grad_norm (its local norm,
before the all-reduce), training_step and training_nonfinite_steps_total, labelled run/rank; rank 0
also exports validation_loss. With --fp16 a dynamic loss scale is simulated and exported.

    # each rank serves /metrics on its own port (point Prometheus at them)
    python examples/instrument/train_ddp.py --run fraud-scorer-train-v42 --ranks 2 --ports 9101,9102
    # or push to a Pushgateway (scrape it with honor_labels: true)
    python examples/instrument/train_ddp.py --run fraud-scorer-train-v42 --pushgateway http://127.0.0.1:9091

Fault injection, to see what the operator's gradient-health gate sees:
    --blowup 1:80:140   multiply rank 1's gradients by 1e4 on steps 80..139
    --nan 1:200         rank 1's gradients become NaN at step 200 (and, averaged in, everyone's weights)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import signal
import sys
import time
from typing import Any

import numpy as np

from lossgate.instrument import TrainingExporter

CLASSES, FEATURES = 3, 8


def make_data(seed: int = 7, n: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=(FEATURES, CLASSES)) * 1.5
    x = rng.normal(size=(n, FEATURES))
    logits = x @ w_true
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(CLASSES, p=row) for row in p])
    return x, y


def loss_and_grad(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax regression and its gradient (stable log-softmax)."""
    z = x @ w
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-log_p[np.arange(len(y)), y].mean())
    p = np.exp(log_p)
    p[np.arange(len(y)), y] -= 1.0
    return loss, x.T @ p / len(y)


def worker(rank: int, args: argparse.Namespace, shared: Any, barrier: Any) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    world = args.ranks
    exporter = TrainingExporter(args.run, rank, push_interval_s=args.push_interval)
    if args.pushgateway:
        exporter.push_to(args.pushgateway, job=args.job)
    else:
        exporter.serve(args.port_list[rank], addr=args.addr)
    x, y = make_data()
    holdout = slice(0, 1000)
    shard_x, shard_y = x[1000 + rank :: world], y[1000 + rank :: world]  # this rank's shard
    rng = np.random.default_rng(100 + rank)
    w = np.zeros((FEATURES, CLASSES))
    grads = np.frombuffer(shared.get_obj()).reshape(world, FEATURES, CLASSES)
    scale, good_steps = (2.0**16, 0) if args.fp16 else (None, 0)
    blowup = _parse(args.blowup, 3)
    nan = _parse(args.nan, 2)
    for step in range(1, args.steps + 1):
        batch = rng.integers(0, len(shard_y), size=args.batch)
        loss, g = loss_and_grad(w, shard_x[batch], shard_y[batch])
        if blowup and rank == blowup[0] and blowup[1] <= step < blowup[2]:
            g = g * 1e4
        if nan and rank == nan[0] and step == nan[1]:
            g = g * math.nan
        grad_norm = float(np.linalg.norm(g))
        grads[rank] = g  # all-reduce: every rank publishes its gradient, then all average
        barrier.wait()
        avg = grads.mean(axis=0)
        barrier.wait()
        overflow = not np.all(np.isfinite(avg))
        if scale is not None and overflow:  # fp16-style dynamic loss scaling: skip the step, halve
            scale, good_steps = max(scale / 2, 1.0), 0
        else:
            w = w - args.lr * avg
            if scale is not None:
                good_steps += 1
                if good_steps % 200 == 0:
                    scale *= 2
        exporter.on_step(step, loss, grad_norm, loss_scale=scale, nonfinite=overflow)
        if rank == 0 and step % args.eval_every == 0:
            val, _ = loss_and_grad(w, x[holdout], y[holdout])
            exporter.on_validation(val)
        if args.step_sleep:
            time.sleep(args.step_sleep)
    exporter.close()
    print(f"rank {rank}: done, step {args.steps}, last loss {loss:.4f}", flush=True)
    if args.linger:
        time.sleep(args.linger)  # keep /metrics up so the last values are scraped


def _parse(spec: str | None, parts: int) -> tuple[int, ...] | None:
    if not spec:
        return None
    values = tuple(int(v) for v in spec.split(":"))
    if len(values) != parts:
        raise SystemExit(f"bad fault spec {spec!r}: expected {parts} numbers separated by ':'")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="demo-train-run", help="value of the `run` label")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--step-sleep", type=float, default=0.02, help="seconds per step (to watch it live)")
    ap.add_argument("--ports", default="9101,9102", help="one /metrics port per rank")
    ap.add_argument("--addr", default="127.0.0.1", help="address the /metrics servers bind")
    ap.add_argument("--pushgateway", help="push to this Pushgateway instead of serving /metrics")
    ap.add_argument("--job", default="lossgate-training", help="Pushgateway job name")
    ap.add_argument("--push-interval", type=float, default=0.5, help="seconds between pushes")
    ap.add_argument("--fp16", action="store_true", help="simulate fp16 dynamic loss scaling")
    ap.add_argument("--blowup", help="RANK:START:END  scale RANK's gradients by 1e4 on steps START..END-1")
    ap.add_argument("--nan", help="RANK:STEP  RANK's gradients become NaN at STEP")
    ap.add_argument("--linger", type=float, default=0.0, help="seconds to keep serving after training")
    args = ap.parse_args(argv)
    args.port_list = [int(p) for p in args.ports.split(",")]
    if not args.pushgateway and len(args.port_list) < args.ranks:
        ap.error(f"--ports needs {args.ranks} ports")
    ctx = mp.get_context("spawn")
    shared = ctx.Array("d", args.ranks * FEATURES * CLASSES)
    barrier = ctx.Barrier(args.ranks)
    procs = [
        ctx.Process(target=worker, args=(r, args, shared, barrier), daemon=True) for r in range(args.ranks)
    ]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return max((p.exitcode or 0) for p in procs)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            with contextlib.suppress(Exception):
                p.join(5)


if __name__ == "__main__":
    sys.exit(main())
