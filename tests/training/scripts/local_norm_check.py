"""Run under torchrun (2 ranks, gloo): LocalGradNorm against each rank's own gradient, computed on a
replica without DDP, in every DDP mode the hook handles. Writes one JSON line per case to argv[1]."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from lossgate.instrument.hooks.ddp import LocalGradNorm

# lower than the default, so that this small model has gradients on both paths of the hook
HOT_NUMEL = 1 << 16


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    # one weight above HOT_NUMEL (normed in its hook), the rest below (normed at the end of the pass)
    layers = [torch.nn.Linear(8, 320), torch.nn.ReLU(), torch.nn.Linear(320, 256), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(256, 4))


def batch(rank: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * rank + k)
    scale = 1.0 + 9.0 * rank  # the ranks' gradients differ by far more than rounding
    return scale * torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)


def case(name: str, rank: int, micro: int, **ddp_kwargs: object) -> dict[str, object]:
    net = model()
    replica = copy.deepcopy(net)
    comm = ddp_kwargs.pop("comm", None)
    ddp = DistributedDataParallel(net, **ddp_kwargs)  # type: ignore[arg-type]
    norm = LocalGradNorm.register(ddp, inner=comm, hot_numel=HOT_NUMEL)
    for step in range(2):  # the second step: bucket views are in place (DDP makes them in the first)
        for m in (ddp, replica):
            for p in m.parameters():
                if p.grad is not None:
                    p.grad.zero_()  # in place, as optimizer.zero_grad(set_to_none=False)
        norm.pop()
        for k in range(micro):  # gradient accumulation: all but the last micro-batch under no_sync
            x, y = batch(rank, 10 * step + k)
            if k < micro - 1:
                with ddp.no_sync():
                    torch.nn.functional.mse_loss(ddp(x), y).backward()
            else:
                torch.nn.functional.mse_loss(ddp(x), y).backward()
            torch.nn.functional.mse_loss(replica(x), y).backward()
    local = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in replica.parameters()]))
    averaged = [p.grad.clone() for p in replica.parameters()]
    for g in averaged:
        dist.all_reduce(g)
        g /= dist.get_world_size()
    ddp_ok = all(torch.allclose(p.grad, g, rtol=1e-2 if comm else 1e-5, atol=1e-4 if comm else 1e-6)
                 for p, g in zip(ddp.module.parameters(), averaged, strict=True))  # fmt: skip
    return {"case": name, "rank": rank, "hook": norm.pop(), "local": float(local),
            "again": norm.pop(), "ddp_grads_averaged": ddp_ok, "hooks": len(norm._handles)}  # fmt: skip


def main() -> None:
    assert any(p.numel() >= HOT_NUMEL for p in model().parameters())
    assert any(p.numel() < HOT_NUMEL for p in model().parameters())
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = [
        case("default", rank, 1),
        case("bucket_view", rank, 1, gradient_as_bucket_view=True),
        case("fp16_compress", rank, 1, comm=default_hooks.fp16_compress_hook),
        case("no_sync_accumulation", rank, 3),
        case("no_sync_bucket_view", rank, 3, gradient_as_bucket_view=True),
        case("find_unused_parameters", rank, 1, find_unused_parameters=True),  # every small hook queues
    ]
    with open(f"{sys.argv[1]}.{rank}", "w") as f:
        for row in out:
            f.write(json.dumps(row) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
