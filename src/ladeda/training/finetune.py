"""Which parts of a model train: frozen stages for fine-tuning, and BatchNorm momentum for short runs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ladeda.core.errors import LadedaError


def freeze_for_finetuning(model: nn.Module, unfreeze_blocks: int) -> Callable[[nn.Module], None]:
    """Train only the head `fc` and the last `unfreeze_blocks` residual stages of a LaDeDa model.

    Returns the `train_mode` for `fit`: trainable stages in train mode, everything frozen in eval mode,
    so frozen BatchNorm statistics stay untouched.
    """
    stages = model.stages
    if not 0 <= unfreeze_blocks <= len(stages):
        raise LadedaError(f"unfreeze_blocks must be between 0 and {len(stages)}, got {unfreeze_blocks}")
    trainable = [model.fc, *stages[len(stages) - unfreeze_blocks:]]
    for p in model.parameters():
        p.requires_grad_(False)
    for m in trainable:
        for p in m.parameters():
            p.requires_grad_(True)

    def train_mode(m: nn.Module) -> None:
        m.eval()
        for t in trainable:
            t.train()

    return train_mode


def set_bn_momentum(model: nn.Module, momentum: float | None) -> None:
    """Set every BatchNorm's running-statistics momentum (None keeps the model's own).

    The official stems use 0.001, which suits long training; a short CPU run from scratch needs a
    larger value or the running statistics (used in eval mode) never reach the data's.
    """
    if momentum is None:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
