"""Each rank's local gradient norm in PyTorch DDP, read before the all-reduce.

    norm = LocalGradNorm.register(ddp_model)                 # wraps allreduce (or inner=fp16_compress_hook)
    loss.backward(); optimizer.step()
    exporter.on_step(step, loss.item(), norm.pop())

A DDP communication hook sees each gradient bucket of this rank before it is communicated: the wrapper
adds the bucket's squared norm, then hands the bucket to the inner hook (the default all-reduce, the
fp16/bf16 compression hooks, PowerSGD, ...), so it composes with any of them. After the all-reduce
every rank holds the same averaged gradient, whose norm cannot show a rank diverging; this one can.
With gradient accumulation (no_sync) the hook runs on the synchronising backward only, over the
accumulated local gradient. Under AMP the buffers hold scaled gradients: pass the scale to pop().
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations as real objects.
import math
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch._C._distributed_c10d import GradBucket
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

CommHook = Callable[[Any, GradBucket], torch.futures.Future[torch.Tensor]]


class LocalGradNorm:
    """Communication-hook state: sums the squared local bucket norms of one backward pass."""

    def __init__(self, inner: CommHook | None = None, inner_state: Any = None) -> None:
        self.inner: CommHook = inner or default_hooks.allreduce_hook
        self.inner_state = inner_state
        self._lock = threading.Lock()
        self._parts: list[torch.Tensor] = []

    @classmethod
    def register(
        cls, model: DistributedDataParallel, inner: CommHook | None = None, inner_state: Any = None
    ) -> "LocalGradNorm":
        """Register on a DDP model (once per model, as DDP allows one hook) and return the reader."""
        state = cls(inner, inner_state)
        model.register_comm_hook(state, hook)
        return state

    def add(self, bucket: GradBucket) -> None:
        with self._lock:
            self._parts.append(square_sum(bucket.buffer().detach()))

    def pop(self, scale: float = 1.0) -> float:
        """The local norm of the gradients since the last pop (NaN if no backward synchronised);
        divided by `scale`, the loss scale the gradients were multiplied by (AMP)."""
        with self._lock:
            parts, self._parts = self._parts, []
        if not parts:
            return math.nan
        total = float(torch.stack(parts).sum().item())  # one device sync per step
        return math.sqrt(total) / scale if total >= 0 else math.nan


def square_sum(flat: torch.Tensor) -> torch.Tensor:
    """Sum of squares of a flat gradient buffer: a dot product for float32/64 (the fastest pass over
    the memory), float32 accumulation of a norm otherwise (fp16/bf16 squares overflow or lose bits)."""
    if flat.dtype in (torch.float32, torch.float64) and flat.dim() == 1:
        return torch.dot(flat, flat)
    out: torch.Tensor = torch.linalg.vector_norm(flat, dtype=torch.float32).pow(2)
    return out


def hook(state: LocalGradNorm, bucket: GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP communication hook: record this rank's bucket, then run the inner hook."""
    state.add(bucket)
    return state.inner(state.inner_state, bucket)
