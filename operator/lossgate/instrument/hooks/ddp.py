"""Each rank's local gradient norm in PyTorch DDP, read before the all-reduce.

    norm = LocalGradNorm.register(ddp_model)     # any comm hook (built-in, fp16 compression) still applies
    loss.backward(); optimizer.step()
    exporter.on_step(step, loss.item(), norm.pop())

After the all-reduce every rank holds the same averaged gradient, whose norm cannot show a rank
diverging; this one can. It reads each parameter's gradient as autograd accumulates it (a
post-accumulate-grad hook), which runs before DDP's own hook on that parameter copies the gradient into
its bucket. So DDP keeps its fused C++ all-reduce path (a Python communication hook would cost an
extra pass over every bucket), and whatever communication hook the job registers applies unchanged.

- Default DDP (gradients apart from the buckets): a large gradient is normed in its hook, while it is
  hot in the caches; small ones are collected and normed in one multi-tensor call by a callback at
  the end of the backward pass, before DDP's own end-of-backward callback writes the averaged
  gradients back (callbacks run in the order queued, and the first hook queues ours).
- gradient_as_bucket_view=True: a gradient is the bucket itself, which DDP divides and all-reduces in
  place right after the hook, so the hook takes that parameter's squared norm at once.
- Gradient accumulation (no_sync): the hooks skip the non-synchronising backward passes; the
  synchronising one reads the accumulated local gradient.
Under AMP the gradients are scaled: pass the scale to pop().
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
from torch.autograd import Variable
from torch.nn.parallel import DistributedDataParallel

# A gradient at least this large is normed in its hook, while autograd has just written it (cache-hot:
# on CPU a third of the cost of reading it again at the end of the pass); smaller ones are collected
# and normed in one multi-tensor call at the end, where one call per tensor would cost more.
HOT_NUMEL = 1 << 16


class LocalGradNorm:
    """Sums this rank's local gradient norm over one optimizer step (any number of backward passes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._in_place = bool(getattr(model, "gradient_as_bucket_view", False))
        self._lock = threading.Lock()
        self._open = False  # a backward pass is running: its end-of-pass callback is queued
        self._small: list[torch.Tensor] = []  # the running pass's small gradients
        self._squares: list[torch.Tensor] = []  # the running pass's squared norms of large gradients
        self._passes: list[torch.Tensor] = []  # per finished pass: its squared norm (0-d)
        params = (
            model.module.parameters() if isinstance(model, DistributedDataParallel) else model.parameters()
        )
        self._handles = [p.register_post_accumulate_grad_hook(self._ready) for p in params if p.requires_grad]

    @classmethod
    def register(cls, model: torch.nn.Module, inner: Any = None, inner_state: Any = None) -> LocalGradNorm:
        """Watch a DDP model's gradients (any time before its first backward) and return the reader.
        `inner`: a communication hook to register on the model as well (DDP allows one): a convenience
        only, the norm does not depend on it."""
        if inner is not None:
            if not isinstance(model, DistributedDataParallel):
                raise TypeError(
                    "LocalGradNorm.register: `inner` is a DDP communication hook; wrap the model in DDP"
                )
            model.register_comm_hook(inner_state, inner)
        return cls(model)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _ready(self, p: torch.Tensor) -> None:
        # No lock here: this runs once per parameter per step, and list.append is atomic under the GIL.
        # The end-of-pass callback (queued by the first hook of a pass) runs after every hook of it.
        grad = p.grad
        if grad is None or not getattr(self._model, "require_backward_grad_sync", True):
            return  # inside no_sync(): the gradient is still accumulating
        # A bucket-view gradient is divided and all-reduced in place right after this hook: read it now.
        if self._in_place or grad.numel() >= HOT_NUMEL:
            self._squares.append(square_sum(grad.view(-1) if grad.is_contiguous() else grad.reshape(-1)))
        else:
            self._small.append(grad)
        if not self._open:
            self._open = True
            Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        with self._lock:
            small, parts = self._small, self._squares
            self._small, self._squares, self._open = [], [], False
        if small:
            norms = torch.stack(torch._foreach_norm(small, 2, dtype=torch.float32))
            parts.append(torch.linalg.vector_norm(norms).square())
        if parts:
            total = parts[0] if len(parts) == 1 else torch.stack(parts).sum()
            with self._lock:
                self._passes.append(total)

    def pop(self, scale: float = 1.0) -> float:
        """The local norm of the gradients since the last pop (NaN if no backward synchronised);
        divided by `scale`, the loss scale the gradients were multiplied by (AMP). One device sync."""
        with self._lock:
            passes, self._passes = self._passes, []
        if not passes:
            return math.nan
        total = sum(float(t.item()) for t in passes)  # one backward pass: one 0-d read
        return math.sqrt(total) / scale if total >= 0 else math.nan


def square_sum(flat: torch.Tensor) -> torch.Tensor:
    """Sum of squares of a flat gradient: a dot product for float32/64 (the fastest pass over the
    memory), float32 accumulation of a norm otherwise (fp16/bf16 squares overflow or lose bits)."""
    if flat.dtype in (torch.float32, torch.float64) and flat.dim() == 1:
        return torch.dot(flat, flat)
    out: torch.Tensor = torch.linalg.vector_norm(flat, dtype=torch.float32).pow(2)
    return out
