"""A Lightning job (2 processes under torchrun, DDP on CPU/gloo) with lossgate's callback.

torchrun --nproc_per_node=2 examples/training/train_lightning.py --lossgate-run my-run --port-base 9100
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from lossgate.instrument.hooks.lightning import LossgateCallback


class Batches(IterableDataset):  # type: ignore[type-arg]
    def __init__(self, rank: int, corrupt: bool) -> None:
        self.rank, self.corrupt = rank, corrupt

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from common.batches(self.rank, self.corrupt)


class Module(pl.LightningModule):
    def __init__(self, nan: list[int], blow: list[int]) -> None:
        super().__init__()
        self.net = common.model()
        self.nan, self.blow = nan, blow

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        step = self.global_step + 1
        if step in self.nan:
            loss = loss * math.nan
        if step in self.blow:
            loss = loss * 1000.0
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    args = common.parse()
    rank, world = common.rank_world()
    exp, _ = common.exporter(args, rank)
    module = Module(common.at(args.nan, rank), common.at(args.blowup, rank))
    data = DataLoader(Batches(rank, args.corrupt == rank), batch_size=None)
    trainer = pl.Trainer(
        accelerator="cpu", devices=world, strategy="ddp", max_steps=args.steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, gradient_clip_val=1.0,
        callbacks=[LossgateCallback(exp)],  # lossgate: the callback
    )  # fmt: skip
    trainer.fit(module, data)
    common.finish(exp, args)


if __name__ == "__main__":
    main()
