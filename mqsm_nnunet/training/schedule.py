"""Learning rates per task: nnU-Net's poly decay, applied to each parameter group on its own.

mQSM trains two sub-networks with one optimizer, one parameter group each ("segmentation",
"reconstruction"), possibly with different base learning rates, and freezes each for some epochs.
nnU-Net's PolyLRScheduler writes one learning rate into every group, so it can express neither.
Freezing is learning rate 0 (never `requires_grad` or `no_grad`, which DDP rejects).
"""
from __future__ import annotations

from typing import Callable

import torch


class TaskPolyLR:
    """lr_g(epoch) = initial_lr_g * (1 - epoch / num_epochs) ** exponent, or 0 while group g is frozen.

    Args:
        optimizer: each parameter group has a "name" and an "initial_lr".
        num_epochs: length of the decay (nnU-Net: the training's epoch count).
        frozen: frozen(group_name, epoch) -> True while that group must not move.
        exponent: 0.9 as nnU-Net's PolyLRScheduler.

    `step(epoch)` is what nnU-Net's `on_train_epoch_start` calls.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, num_epochs: int, frozen: Callable[[str, int], bool],
                 exponent: float = 0.9) -> None:
        for group in optimizer.param_groups:
            if "name" not in group or "initial_lr" not in group:
                raise ValueError("every parameter group needs a 'name' and an 'initial_lr'")
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
        self.optimizer = optimizer
        self.num_epochs = int(num_epochs)
        self.frozen = frozen
        self.exponent = float(exponent)

    def learning_rate(self, group: dict, epoch: int) -> float:
        if self.frozen(group["name"], epoch):
            return 0.0
        remaining = max(0.0, 1.0 - epoch / self.num_epochs)
        return float(group["initial_lr"]) * remaining ** self.exponent

    def step(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(group, epoch)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]
