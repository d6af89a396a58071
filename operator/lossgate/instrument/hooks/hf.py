"""Hugging Face transformers: a TrainerCallback that feeds a TrainingExporter on every optimizer step.

    exporter = TrainingExporter(run="my-run", rank=int(os.environ.get("RANK", 0)))
    exporter.serve(9100)                                               # or exporter.push_to(gateway)
    trainer.add_callback(LossgateTrainerCallback(exporter, trainer))

It reads raw values, never the logs (which replace a NaN/Inf loss with the running average when
`logging_nan_inf_filter` is on, and are only written every `logging_steps`):
- loss: a forward hook on the model takes each training forward's `loss` as computed, averaged over
  the micro-batches of one optimizer step;
- gradient norm: given the Trainer, its DDP-wrapped model gets lossgate's communication hook, so each
  rank's local norm is read before the all-reduce (and before clipping). Without DDP, gradient hooks
  on the parameters give the norm of the gradients after backward, before clipping;
- fp16: the accelerator's GradScaler gives the loss scale and the skipped steps.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import TrainerCallback

from lossgate.instrument.hooks.amp import ScalerWatch
from lossgate.instrument.hooks.ddp import LocalGradNorm
from lossgate.instrument.training import TrainingExporter


class LossgateTrainerCallback(TrainerCallback):
    def __init__(self, exporter: TrainingExporter, trainer: Any = None) -> None:
        self.exporter = exporter
        self.trainer = trainer
        self.norm: LocalGradNorm | None = None
        self.watch: ScalerWatch | None = None
        self._lock = threading.Lock()
        self._losses: list[torch.Tensor] = []
        self._sq: dict[int, torch.Tensor] = {}  # parameter id -> squared norm of its latest gradient
        self._scale_before = 1.0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        wrapped = getattr(self.trainer, "model_wrapped", None)
        if isinstance(wrapped, DistributedDataParallel) and self.norm is None:
            self.norm = LocalGradNorm.register(wrapped)
        elif model is not None:
            for p in model.parameters():
                if p.requires_grad:
                    p.register_post_accumulate_grad_hook(self._grad_hook)
        scaler = getattr(getattr(self.trainer, "accelerator", None), "scaler", None)
        if isinstance(scaler, torch.amp.GradScaler):
            self.watch = ScalerWatch(scaler)
        if model is not None:
            model.register_forward_hook(self._forward_hook)

    def _forward_hook(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        loss = output.get("loss") if hasattr(output, "get") else None
        if module.training and isinstance(loss, torch.Tensor):
            with self._lock:
                self._losses.append(loss.detach().float())

    def _grad_hook(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            sq = torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32).pow(2)
            with self._lock:
                self._sq[id(p)] = sq  # accumulation: the latest is the accumulated gradient

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._scale_before = float(self.watch.scaler.get_scale()) if self.watch else 1.0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        with self._lock:
            losses, self._losses = self._losses, []
            sq, self._sq = self._sq, {}
        loss = float(torch.stack(losses).mean().item()) if losses else math.nan
        skipped = self.watch.observe(self._scale_before) if self.watch else False
        if self.norm is not None:
            norm = self.norm.pop(self._scale_before)
        else:
            total = float(torch.stack(list(sq.values())).sum().item()) if sq else math.nan
            norm = math.sqrt(total) / self._scale_before if total >= 0 else math.nan
        scale = self.watch.scale if self.watch else None
        self.exporter.on_step(state.global_step, loss, norm, loss_scale=scale, skipped=skipped)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.exporter.close()
