"""Lightning: a Callback that feeds a TrainingExporter on every optimizer step.

    exporter = TrainingExporter(run="my-run", rank=int(os.environ.get("RANK", 0)))
    exporter.serve(9100)                                               # or exporter.push_to(gateway)
    trainer = L.Trainer(..., callbacks=[LossgateCallback(exporter)])

- Gradient norm: under DDP the callback watches the DDP model's gradients (LocalGradNorm: any
  communication hook of the strategy still applies) and exports each rank's local norm, read before
  the all-reduce and divided by the AMP loss scale. Otherwise (single device, FSDP) it takes the norm
  of the gradients in `on_before_optimizer_step`, which Lightning calls after unscaling them
  (16-mixed): post-all-reduce, so equal on all ranks.
- Loss: the raw value returned by training_step (`outputs["loss"]`), NaN included, averaged over the
  batches of one optimizer step (gradient accumulation).
- fp16: the precision plugin's GradScaler gives the loss scale and the skipped steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from lossgate.instrument.hooks.amp import ScalerWatch
from lossgate.instrument.hooks.ddp import LocalGradNorm
from lossgate.instrument.training import TrainingExporter

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package name
    import pytorch_lightning as pl  # type: ignore[no-redef]


def grad_norm(params: Any) -> float:
    """The norm of the parameters' current gradients (float32 accumulation)."""
    parts = [
        torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32) for p in params if p.grad is not None
    ]
    return float(torch.linalg.vector_norm(torch.stack(parts)).item()) if parts else math.nan


class LossgateCallback(pl.Callback):
    def __init__(self, exporter: TrainingExporter, local_norm: bool = True) -> None:
        self.exporter = exporter
        self.local_norm = local_norm
        self.norm: LocalGradNorm | None = None
        self.watch: ScalerWatch | None = None
        self._losses: list[float] = []
        self._pending: tuple[float, float] | None = None  # (norm after unscaling, scale before the step)
        self._steps = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = trainer.strategy.model
        if self.local_norm and isinstance(model, DistributedDataParallel):
            self.norm = LocalGradNorm.register(model)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if isinstance(scaler, torch.amp.GradScaler):
            self.watch = ScalerWatch(scaler)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._losses.append(float(loss.detach().float().item()))
        if self._pending is None:
            return  # gradient accumulation: no optimizer step on this batch
        global_norm, before = self._pending
        self._pending = None
        skipped = self.watch.observe(before) if self.watch else False
        scale = self.watch.scale if self.watch else None
        norm = self.norm.pop(before) if self.norm else global_norm
        loss_value = sum(self._losses) / len(self._losses) if self._losses else math.nan
        self._losses = []
        self._steps += 1
        self.exporter.on_step(self._steps, loss_value, norm, loss_scale=scale, skipped=skipped)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        before = float(self.watch.scaler.get_scale()) if self.watch else 1.0
        norm = math.nan if self.norm else grad_norm(pl_module.parameters())
        self._pending = (norm, before)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.exporter.close()
