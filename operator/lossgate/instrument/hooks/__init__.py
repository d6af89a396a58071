"""Hooks that feed a TrainingExporter from the frameworks people train with (the `lossgate[torch]`
extra). Import the submodule you need; nothing here imports torch until then, so the operator and
its image never need it:

    from lossgate.instrument.hooks.ddp import LocalGradNorm            # PyTorch DDP (any comm hook)
    from lossgate.instrument.hooks.amp import ScalerWatch              # torch.amp.GradScaler
    from lossgate.instrument.hooks.fsdp import sharded_grad_norm       # FSDP: the sharded global norm
    from lossgate.instrument.hooks.lightning import LossgateCallback   # Lightning
    from lossgate.instrument.hooks.hf import LossgateTrainerCallback   # Hugging Face Trainer

docs/training.md shows each framework's setup.
"""
