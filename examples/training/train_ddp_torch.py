"""A PyTorch DDP job (torchrun) exporting training health with lossgate's hooks, with faults to inject.

    torchrun --nproc_per_node=2 examples/training/train_ddp_torch.py --lossgate-run my-run --port-base 9100

The three lines of the setup are marked "lossgate:". Backend gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from lossgate.instrument.hooks.amp import ScalerWatch
from lossgate.instrument.hooks.ddp import LocalGradNorm


def main() -> None:
    args = common.parse()
    rank, world = common.rank_world()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and not args.cpu else 0
    # One GPU per rank with NCCL; with fewer GPUs than ranks (one GPU: one CUDA rank and one CPU
    # rank), gloo for all, which all-reduces CUDA and CPU tensors alike.
    cuda = rank < gpus
    dist.init_process_group("nccl" if gpus >= world else "gloo")
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    net = common.model().to(device)
    ddp = DistributedDataParallel(net, device_ids=[device.index] if cuda else None)
    inner = default_hooks.fp16_compress_hook if args.comm_hook == "fp16" else None
    norm = LocalGradNorm.register(ddp, inner=inner)  # lossgate: this rank's norm before the all-reduce
    exp, signal = common.exporter(args, rank)  # lossgate: the exporter (scrape or push)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp or "")
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    if cuda:
        torch.cuda.set_device(device)
    watch = ScalerWatch(scaler)
    nan, blow = common.at(args.nan, rank), common.at(args.blowup, rank)
    overflow = common.at(args.overflow, rank) + common.at(args.overflow2, rank)
    data = common.batches(rank, corrupt=args.corrupt == rank)
    for step in range(1, args.steps + 1):
        x, y = (t.to(device) for t in next(data))
        if args.blowup_after_scrape and step + 1 in common.at(args.blowup, 1) and not args.pushgateway:
            common.wait_scrape(signal)  # every rank: the blow-up step then falls between two scrapes
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.mse_loss(ddp(x).float(), y)
        raw = loss.detach().float().item()
        if step in nan:
            loss = loss * math.nan
        if step in blow:
            loss = loss * 1000.0
        if step in overflow:
            loss = loss * 1e30  # the scaled gradients overflow: the GradScaler skips the step
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)  # bounds the update, not the reported norm
        skipped = watch.step(opt)
        value = math.nan if step in nan else raw
        exp.on_step(step, value, norm.pop(watch.applied_scale), loss_scale=watch.scale if scaler.is_enabled()
                    else None, skipped=skipped)  # lossgate: every step  # fmt: skip
    exp.on_validation(raw)
    common.finish(exp, args)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
