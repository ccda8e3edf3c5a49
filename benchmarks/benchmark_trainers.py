"""Trainers the benchmarks compare against, not shipped in the package (`bench_learning.py`).

- nnUNetTrainer_tinyLength: stock nnUNetTrainer, only shortened to mQSMTrainer_tiny's length.
- nnUNetTrainer_tinyRecipe: stock PlainConvUNet with mQSMTrainer_tiny's recipe (AdamW + poly, width
  cap, no mirroring): separates what the recipe gives from what the mQSM network gives.
- mQSMTrainer_tiny_qsmMapOnly: the paper's two streams, the QSM stream reading the reconstructed map
  instead of the recon skip (400 iterations, one run: 0.381, level with the skip).

Experiments measured no better and removed with the network options only they used (results in
benchmarks/README.md, code at commit cef2241): `_tiny_wideT1` (stream widths), `_tiny_qsmMap` and
`_tiny_inputFusion` (the QSM stream reading map and skip).

nnU-Net finds these through `benchmarks/trainers/` (added to nnUNet_extTrainer by the benchmark
scripts); the classes live here, importable by name (the scripts put `benchmarks/` on PYTHONPATH),
because nnU-Net drops the modules it imported from an extTrainer folder after the lookup and its
spawn pools must pickle the trainer by its real module.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from mqsm_nnunet.training.architecture import cap_features, plans_describing_network
from mqsm_nnunet.training.schedule import TaskPolyLR
from mqsm_nnunet.training.trainer import NoMirroring
from mqsm_nnunet.training.variants import (TINY_LEARNING_RATE, TINY_MAX_FEATURES, TINY_WEIGHT_DECAY, ShortLength,
                                           mQSMTrainer_tiny)


class mQSMTrainer_tiny_qsmMapOnly(mQSMTrainer_tiny):
    """mQSMTrainer_tiny whose QSM stream reads the reconstructed QSM only, not the recon skip."""

    network_overrides = {**mQSMTrainer_tiny.network_overrides, "qsm_stream_input": "map"}


class nnUNetTrainer_tinyLength(ShortLength, nnUNetTrainer):
    """Stock nnUNetTrainer, only shortened to mQSMTrainer_tiny's length (benchmark baseline)."""


class nnUNetTrainer_tinyRecipe(NoMirroring, nnUNetTrainer_tinyLength):
    """Stock PlainConvUNet with mQSMTrainer_tiny's recipe: AdamW + poly, width cap, no mirroring."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        plans = plans_describing_network(plans, configuration, {}, TINY_MAX_FEATURES)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = TINY_LEARNING_RATE
        self.weight_decay = TINY_WEIGHT_DECAY

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs["features_per_stage"] = cap_features(kwargs["features_per_stage"], TINY_MAX_FEATURES)
        return get_network_from_plans(configuration_manager.network_arch_class_name, kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        for group in optimizer.param_groups:
            group.update(name="segmentation", initial_lr=self.initial_lr)
        return optimizer, TaskPolyLR(optimizer, self.num_epochs, lambda task, epoch: False)
