"""Shared by the example training scripts (run under torchrun): arguments, a tiny synthetic task with
fault injection, and the exporter (scrape endpoint or Pushgateway). No downloads: data is generated."""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator

import torch
from prometheus_client.registry import Collector

from lossgate.instrument import TrainingExporter
from lossgate.instrument.step_stats import GateSettings

IN, HIDDEN = 16, 32


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lossgate-run", dest="run", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--port-base", type=int, help="serve /metrics on <port-base + LOCAL_RANK>")
    p.add_argument("--pushgateway", help="push to this Pushgateway instead")
    p.add_argument("--warmup", type=float, default=500.0)
    p.add_argument("--window", type=int, default=300)
    p.add_argument("--min-history", type=int, default=60)
    p.add_argument("--nan", help="RANK:STEP: that rank's loss is NaN at that step")
    p.add_argument("--blowup", help="RANK:STEP: that rank's gradients x1000 at that one step")
    p.add_argument(
        "--blowup-after-scrape", action="store_true", help="do the blow-up step right after a scrape"
    )
    p.add_argument("--corrupt", type=int, help="RANK: that rank's targets are corrupted (noise x3)")
    p.add_argument("--overflow", help="RANK:START:END: that rank's loss overflows fp16 on those steps")
    p.add_argument("--overflow2", help="a second RANK:START:END overflow")
    p.add_argument("--amp", choices=["fp16", "bf16"], help="autocast dtype (fp16 with a GradScaler)")
    p.add_argument("--cpu", action="store_true", help="never use a GPU")
    p.add_argument("--comm-hook", choices=["allreduce", "fp16"], default="allreduce")
    p.add_argument("--linger", type=float, default=60.0, help="keep serving this long after the last step")
    return p.parse_args(argv)


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def at(spec: str | None, rank: int) -> list[int]:
    """Steps of a RANK:STEP or RANK:START:END fault for this rank."""
    if not spec:
        return []
    parts = [int(x) for x in spec.split(":")]
    if parts[0] != rank:
        return []
    return [parts[1]] if len(parts) == 2 else list(range(parts[1], parts[2]))


def model() -> torch.nn.Module:
    torch.manual_seed(0)  # every rank starts from the same weights, as DDP requires
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1))


def batches(rank: int, corrupt: bool, batch: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed linear teacher plus noise; each rank draws its own batches."""
    teacher = torch.Generator().manual_seed(1234)
    w = torch.randn(IN, 1, generator=teacher)
    g = torch.Generator().manual_seed(100 + rank)
    while True:
        x = torch.randn(batch, IN, generator=g)
        noise = 0.3 * torch.randn(batch, 1, generator=g)
        yield x, x @ w + noise * (10.0 if corrupt else 1.0)


class ScrapeSignal(Collector):
    """Sets an event whenever Prometheus scrapes this rank (to place a fault between two scrapes)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        self.event.set()
        return iter(())


def exporter(args: argparse.Namespace, rank: int) -> tuple[TrainingExporter, ScrapeSignal]:
    settings = GateSettings(warmup_steps=args.warmup, window=args.window, min_history=args.min_history)
    exp = TrainingExporter(args.run, rank, settings=settings, push_interval_s=0.2)
    signal = ScrapeSignal()
    exp.registry.register(signal)  # type: ignore[arg-type]
    if args.pushgateway:
        exp.push_to(args.pushgateway)
    else:
        # one port per process of the pod: port-base + LOCAL_RANK (so every pod serves on port-base
        # with one process per pod); all interfaces in a pod, loopback when run locally
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        exp.serve(args.port_base + local, addr=os.environ.get("LOSSGATE_METRICS_ADDR", "127.0.0.1"))
    return exp, signal


def wait_scrape(signal: ScrapeSignal, timeout: float = 10.0) -> None:
    signal.event.clear()
    signal.event.wait(timeout)


def finish(exp: TrainingExporter, args: argparse.Namespace) -> None:
    exp.close()  # final push (Pushgateway); the scrape endpoint keeps serving while we linger
    deadline = time.monotonic() + args.linger
    while not args.pushgateway and time.monotonic() < deadline:
        time.sleep(0.2)
