"""FSDP: the gradient norm a rank can export is the sharded global norm.

    norm = sharded_grad_norm(fsdp_model)      # after backward, before optimizer.step (all ranks call it)
    exporter.on_step(step, loss.item(), norm)

Under FSDP a rank never holds its whole local gradient at once: each unit's full gradient exists only
briefly before the reduce-scatter, after which the rank keeps its shard of the averaged gradient.
"Local norm" as in DDP (this rank's data only) is therefore not available without hooking every
reduce-scatter; what is exact and cheap is the norm of the averaged gradient assembled from the shards:
the sum of squares of this rank's shards, all-reduced (what clip_grad_norm_ computes). It is the same
on every rank, so the gate's rank-divergence rule on the gradient norm cannot flag a rank under FSDP;
its loss divergence (each rank's own loss) still does, and the spike, non-finite and fp16 rules are
unchanged. Works with FSDP2 (`fully_shard`, DTensor shards) and FSDP1 (sharded strategies). With
NO_SHARD every rank holds the whole gradient: use the DDP hook's model instead.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


def shard_square_sum(module: torch.nn.Module) -> torch.Tensor:
    """Sum of squares of this rank's gradient shards, float32, on the gradients' device."""
    total: torch.Tensor | None = None
    for p in module.parameters():
        g = p.grad
        if g is None:
            continue
        local = g.to_local() if hasattr(g, "to_local") else g  # FSDP2 grads are DTensors
        part = torch.linalg.vector_norm(local.detach(), dtype=torch.float32).pow(2)
        total = part if total is None else total + part
    return total if total is not None else torch.zeros((), dtype=torch.float32)


def sharded_grad_norm(module: torch.nn.Module, group: dist.ProcessGroup | None = None) -> float:
    """The global gradient norm from the shards (a collective: every rank of `group` must call it)."""
    sq = shard_square_sum(module)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sq, op=dist.ReduceOp.SUM, group=group)
    value = float(sq.item())
    return math.sqrt(value) if value >= 0 else math.nan
