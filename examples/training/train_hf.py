"""A Hugging Face Trainer job (2 processes under torchrun, DDP on CPU/gloo) with lossgate's callback.
The model is a tiny GPT-2 built from a config and the data random tokens: nothing is downloaded.

    torchrun --nproc_per_node=2 examples/training/train_hf.py --lossgate-run my-run --port-base 9100
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from lossgate.instrument.hooks.hf import LossgateTrainerCallback


class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, rank: int, n: int) -> None:
        g = torch.Generator().manual_seed(7 + rank)
        # a learnable pattern (each token follows its predecessor + 1) so the loss falls
        start = torch.randint(0, 64, (n, 1), generator=g)
        self.ids = (start + torch.arange(16)) % 64

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    args = common.parse()
    rank, _ = common.rank_world()
    exp, _ = common.exporter(args, rank)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2))
    nan = common.at(args.nan, rank)
    calls = {"n": 0}

    def inject(module: torch.nn.Module, inputs: Any, output: Any) -> Any:
        if module.training:
            calls["n"] += 1
            if calls["n"] in nan:
                output["loss"] = output["loss"] * math.nan
        return output

    model.register_forward_hook(inject)  # the fault, before lossgate's hook sees the loss
    out = Path(tempfile.gettempdir()) / f"lossgate-hf-{args.run}"  # nothing is saved (save_strategy no)
    targs = TrainingArguments(
        output_dir=str(out), use_cpu=True, ddp_backend="gloo",
        max_steps=args.steps, per_device_train_batch_size=8, learning_rate=1e-3, report_to=[],
        save_strategy="no", logging_steps=10_000, dataloader_num_workers=0, disable_tqdm=True,
        max_grad_norm=1.0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=targs, train_dataset=Tokens(rank, 8 * args.steps))
    trainer.add_callback(LossgateTrainerCallback(exp, trainer))  # lossgate: the callback
    trainer.train()
    common.finish(exp, args)


if __name__ == "__main__":
    main()
