"""Trainer variants: each changes one thing of mQSMTrainer.

- mQSMTrainer_tiny: seconds-to-minutes CPU training for tests and the demo: few epochs and
  iterations, a narrow and shallow reconstruction net, an early schedule.
- Ablations of the paper (Table 3): mQSMTrainer_UNet (two-stream U-Net, no fusion block),
  mQSMTrainer_SA (self-attention per stream, no mutual attention). mQSMTrainer itself is
  U-Net + SA + MA, the full mQSM.
"""
from __future__ import annotations

import os

import torch

from mqsm_nnunet.training.trainer import mQSMTrainer


class mQSMTrainer_tiny(mQSMTrainer):
    """CPU-sized: 3 epochs x 4 iterations, U-Net at most 32 wide, recon net 16 wide x 2 blocks,
    segmentation from epoch 1. MQSM_TINY_EPOCHS / MQSM_TINY_ITERATIONS change the length."""

    network_overrides = {"recon_width": 16, "recon_blocks": 2, "recon_skip_channels": 8}
    max_unet_features = 32
    segmentation_start_epoch = 1
    reconstruction_freeze_epoch = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(self._from_env("MQSM_TINY_EPOCHS", 3))
        self.num_iterations_per_epoch = int(self._from_env("MQSM_TINY_ITERATIONS", 4))
        self.num_val_iterations_per_epoch = 2
        self.save_every = 1

    @staticmethod
    def _from_env(name: str, default: int) -> int:
        """The demo sets the epoch count through the environment: nnUNetv2_train has no such flag."""
        value = os.environ.get(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
        return int(value)


class mQSMTrainer_UNet(mQSMTrainer):
    """Ablation: the two-stream U-Net without any fusion block (paper Table 3, U-Net)."""

    network_overrides = {"fusion": "none"}


class mQSMTrainer_SA(mQSMTrainer):
    """Ablation: self-attention in each stream, no mutual attention (paper Table 3, U-Net + SA)."""

    network_overrides = {"fusion": "sa"}
