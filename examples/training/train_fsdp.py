"""An FSDP2 job (torchrun, `fully_shard`, gloo on CPU) exporting the sharded global gradient norm.

    torchrun --nproc_per_node=2 examples/training/train_fsdp.py --lossgate-run my-run --port-base 9100

Under FSDP a rank keeps only its shard of the averaged gradient, so the exported norm is the global
one, assembled from the shards (lossgate.instrument.hooks.fsdp.sharded_grad_norm): the same on every
rank. On the first step it is checked against the norm of the gradients averaged by hand from an
unsharded replica ("reference norm ok" in the log).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from lossgate.instrument.hooks.fsdp import sharded_grad_norm


def reference_norm(replica: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.nn.functional.mse_loss(replica(x), y).backward()
    grads = []
    for p in replica.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            grads.append(p.grad / dist.get_world_size())
    return float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item())


def main() -> None:
    args = common.parse()
    dist.init_process_group("gloo")
    rank, _ = common.rank_world()
    model, replica = common.model(), common.model()
    fully_shard(model)
    exp, _ = common.exporter(args, rank)  # lossgate: the exporter
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    nan, blow = common.at(args.nan, rank), common.at(args.blowup, rank)
    data = common.batches(rank, corrupt=args.corrupt == rank)
    for step in range(1, args.steps + 1):
        x, y = next(data)
        loss = torch.nn.functional.mse_loss(model(x), y)
        raw = loss.detach().item()
        if step in nan:
            loss = loss * math.nan
        if step in blow:
            loss = loss * 1000.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = sharded_grad_norm(model)  # lossgate: every rank, after backward
        if step == 1:
            ref = reference_norm(replica, x, y)
            print(f"rank {rank}: sharded norm {norm:.6f}, reference {ref:.6f}", flush=True)
            if math.isclose(norm, ref, rel_tol=1e-5):
                print(f"rank {rank}: reference norm ok", flush=True)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        exp.on_step(step, math.nan if step in nan else raw, norm)  # lossgate: every step
    common.finish(exp, args)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
