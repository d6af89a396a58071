"""torch.amp.GradScaler: the loss scale and the steps it skipped, for TrainingExporter.on_step.

    watch = ScalerWatch(scaler)
    skipped = watch.step(optimizer)          # scaler.step(optimizer) + scaler.update()
    exporter.on_step(step, loss.item(), norm.pop(watch.applied_scale), watch.scale, skipped=skipped)

A GradScaler skips the optimizer step when it finds inf/NaN in the (unscaled) gradients and then
lowers its scale; the step was skipped exactly when the scale went down in update(). Skipped steps
are counted (training_skipped_steps_total) and are not failures; applied non-finite steps are.
"""

from __future__ import annotations

import torch


class ScalerWatch:
    def __init__(self, scaler: torch.amp.GradScaler) -> None:
        self.scaler = scaler
        self.scale = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
        self.applied_scale = self.scale  # the scale the last backward's gradients were multiplied by
        self.skipped = False

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """scaler.step + scaler.update; True when the optimizer step was skipped."""
        before = float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.observe(before)

    def observe(self, before: float) -> bool:
        """After update() run by someone else (Lightning, accelerate): compare with the scale before."""
        after = float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0
        self.applied_scale, self.scale = before, after
        self.skipped = after < before
        return self.skipped
