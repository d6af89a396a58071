"""Each rank's local gradient norm in PyTorch DDP, read before the all-reduce.

    norm = LocalGradNorm.register(ddp_model)     # any comm hook (built-in, fp16 compression) still applies
    loss.backward(); optimizer.step()
    exporter.on_step(step, loss.item(), norm.pop())

After the all-reduce every rank holds the same averaged gradient, whose norm cannot show a rank
diverging; this one can. It reads each parameter's gradient as autograd accumulates it (a
post-accumulate-grad hook), which runs before DDP's own hook on that parameter copies the gradient into
its bucket. So DDP keeps its fused C++ all-reduce path (a Python communication hook would cost an
extra pass over every bucket), and whatever communication hook the job registers applies unchanged.

- A large gradient (`hot_numel` elements or more) is normed in its own hook, while autograd has just
  written it (cache-hot on CPU), into a 0-d tensor.
- Smaller ones are normed in one multi-tensor call by a callback at the end of the backward pass,
  before DDP's own end-of-backward callback writes the averaged gradients back (callbacks run in the
  order queued, a hook of this pass queues ours, and DDP queues its own only once its last bucket is
  ready). Only the first and last small parameters' hooks queue it (every one's, when DDP may see
  unused parameters, or without DDP). Inside a training loop each call into torch or from autograd
  into Python runs with cold caches and costs several times its price in a tight loop, so few calls
  matter more than the arithmetic: one call per small gradient would cost more than reading them all.
- gradient_as_bucket_view=True: a gradient is the bucket itself, which DDP divides and all-reduces in
  place right after the hook, so the hook always takes that parameter's squared norm at once.
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

# At least this many elements (4 MiB of float32, beyond a core's L2): normed in its hook while cache-hot;
# below, at the end of the pass in one multi-tensor call.
HOT_NUMEL = 1 << 20


class LocalGradNorm:
    """Sums this rank's local gradient norm over one optimizer step (any number of backward passes)."""

    def __init__(self, model: torch.nn.Module, hot_numel: int | None = None) -> None:
        self._model = model
        self._in_place = bool(getattr(model, "gradient_as_bucket_view", False))
        hot = HOT_NUMEL if hot_numel is None else hot_numel
        self._lock = threading.Lock()
        self._open = False  # a backward pass is running with its end-of-pass callback queued
        self._squares: list[torch.Tensor] = []  # squared norms (0-d) of large gradients since the last pop
        self._norms: list[torch.Tensor] = []  # per pass: the norms of its small gradients
        module = model.module if isinstance(model, DistributedDataParallel) else model
        params = [p for p in module.parameters() if p.requires_grad]
        large = [p for p in params if self._in_place or p.numel() >= hot]
        self._small = [p for p in params if not (self._in_place or p.numel() >= hot)]
        # The small gradients are read at the end of the pass; a hook only has to queue that read. DDP
        # without find_unused_parameters gives every parameter a gradient in every synchronising pass
        # (or fails), so the first and last parameters' hooks suffice, which saves a call from autograd
        # into Python per parameter. Otherwise (unused parameters possible, or no DDP) every one queues.
        every = not isinstance(model, DistributedDataParallel) or bool(model.find_unused_parameters)
        watch = (
            self._small if every else list({id(p): p for p in self._small[:1] + self._small[-1:]}.values())
        )
        self._handles = [p.register_post_accumulate_grad_hook(self._large_ready) for p in large]
        self._handles += [p.register_post_accumulate_grad_hook(self._small_ready) for p in watch]

    @classmethod
    def register(
        cls, model: torch.nn.Module, inner: Any = None, inner_state: Any = None, hot_numel: int | None = None
    ) -> LocalGradNorm:
        """Watch a DDP model's gradients (any time before its first backward) and return the reader.
        `inner`: a communication hook to register on the model as well (DDP allows one): a convenience
        only, the norm does not depend on it. `hot_numel`: see the module's docstring (None: HOT_NUMEL)."""
        if inner is not None:
            if not isinstance(model, DistributedDataParallel):
                raise TypeError(
                    "LocalGradNorm.register: `inner` is a DDP communication hook; wrap the model in DDP"
                )
            model.register_comm_hook(inner_state, inner)
        return cls(model, hot_numel)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _large_ready(self, p: torch.Tensor) -> None:
        # No lock here: this runs once per large parameter per step, and list.append is atomic.
        grad = p.grad
        if grad is None or not getattr(self._model, "require_backward_grad_sync", True):
            return  # inside no_sync(): the gradient is still accumulating
        # A bucket-view gradient is divided and all-reduced in place right after this hook: read it now.
        self._squares.append(square_sum(grad.view(-1) if grad.is_contiguous() else grad.reshape(-1)))

    def _small_ready(self, p: torch.Tensor) -> None:
        if self._open or not getattr(self._model, "require_backward_grad_sync", True):
            return
        self._open = True
        Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        """Before DDP's own end-of-pass callback: the small parameters' gradients are still local."""
        self._open = False
        grads = [p.grad for p in self._small if p.grad is not None]
        if grads:  # one multi-tensor read; the squares are summed at pop (fewer calls into torch)
            norms = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32))
            with self._lock:
                self._norms.append(norms)

    def pop(self, scale: float = 1.0) -> float:
        """The local norm of the gradients since the last pop (NaN if no backward synchronised);
        divided by `scale`, the loss scale the gradients were multiplied by (AMP). One read per pass."""
        with self._lock:
            squares, norms, self._squares, self._norms = self._squares, self._norms, [], []
        if not (squares or norms):
            return math.nan
        total = math.fsum(float(t) for t in squares)
        total += math.fsum(x * x for t in norms for x in t.tolist())
        return math.sqrt(total) / scale if total >= 0 else math.nan


def square_sum(flat: torch.Tensor) -> torch.Tensor:
    """Sum of squares of a flat gradient: a dot product for float32/64 (the fastest pass over the
    memory), float32 accumulation of a norm otherwise (fp16/bf16 squares overflow or lose bits)."""
    if flat.dtype in (torch.float32, torch.float64) and flat.dim() == 1:
        return torch.dot(flat, flat)
    out: torch.Tensor = torch.linalg.vector_norm(flat, dtype=torch.float32).pow(2)
    return out
