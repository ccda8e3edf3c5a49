"""Trainer variants: each changes one thing of mQSMTrainer (or of its short CPU recipe).

- mQSMTrainer_tiny: the short-budget recipe for CPU minutes (tests, the demo, bench_learning):
  AdamW instead of nnU-Net's SGD (which is tuned for 250,000 iterations), no frozen epochs, narrow
  stages and a light reconstruction net. Its length (and intermediate checkpoints for learning
  curves) comes from the plans entry `mqsm_short_training` (`short_training.py`; nnUNetv2_train has
  no flag for it).
- `_tiny_inputFusionMap`: one segmentation stream over T1 and the reconstructed QSM, fused at the
  input (not in the paper): the demo's trainer, the one short-budget form measured ahead of the stock
  network (benchmarks/README.md); `mQSMTrainer_inputFusionMap` is the same network at nnU-Net's
  recipe and length.
- Ablations of the paper (Table 3): `_UNet` (two-stream U-Net, no fusion block), `_SA` (self-
  attention per stream, no mutual attention); mQSMTrainer itself is U-Net + SA + MA, the full mQSM.
- `_paperLoss`: the paper's Eq. 5 alone, without the data-consistency term.
The benchmarks' own trainers (stock nnU-Net at the same length, experiments) are in
`benchmarks/benchmark_trainers.py`.
"""
from __future__ import annotations

import os

import torch

from mqsm_nnunet.training.schedule import TaskPolyLR
from mqsm_nnunet.training.initial_weights import load_matching_weights
from mqsm_nnunet.training.short_training import ShortTraining, check_no_retired_variables
from mqsm_nnunet.training.trainer import mQSMTrainer

TINY_LEARNING_RATE = 3e-3
TINY_WEIGHT_DECAY = 1e-4
TINY_MAX_FEATURES = (16, 32)   # full-resolution stage 16 wide, deeper stages 32


SNAPSHOT_PATTERN = "checkpoint_epoch{epoch}.pth"


class ShortLength:
    """Mixin: the length from the plans' `mqsm_short_training` entry (`short_training.py`), and
    `checkpoint_epoch<E>.pth` kept every `snapshot_every` epochs, so that held-out scores can be drawn
    against iterations (nnU-Net overwrites checkpoint_latest)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        check_no_retired_variables(os.environ)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.short_training = ShortTraining.from_configuration(self.configuration_manager.configuration)
        self.num_epochs = self.short_training.epochs
        self.num_iterations_per_epoch = self.short_training.iterations_per_epoch
        self.cpu_bf16 = self.short_training.cpu_bf16
        self.num_val_iterations_per_epoch = 2

    def on_train_start(self):
        super().on_train_start()
        path = self.short_training.initial_weights
        if path is not None and self.current_epoch == 0:
            copied, total = load_matching_weights(self.network, path)
            self.print_to_log_file(f"Initial weights from {path}: {copied} of {total} tensors (all whose name and "
                                   "shape match, segmentation outputs included)")

    def on_epoch_end(self):
        super().on_epoch_end()               # nnU-Net counts current_epoch up at its end
        every, done = self.short_training.snapshot_every, self.current_epoch
        if every > 0 and done % every == 0 and done < self.num_epochs:
            self.save_checkpoint(os.path.join(self.output_folder, SNAPSHOT_PATTERN.format(epoch=done)))


class mQSMTrainer_tiny(ShortLength, mQSMTrainer):
    """CPU-sized mQSM: AdamW (lr 3e-3, poly decay), both tasks from the first step, U-Net 16 wide at
    full resolution and at most 32 below, reconstruction net 8 wide x 2 dilated blocks (at 16 wide it
    cost as much as the whole U-Net at this patch); 3 epochs x 4 iterations unless the plans say.

    Streams: the paper's equal halves of each stage (8 + 8 wide at full resolution, 16 + 16 below)."""

    network_overrides = {"recon_width": 8, "recon_blocks": 2, "recon_skip_channels": 8,
                         "recon_dilations": (1, 2, 4, 8)}
    max_unet_features = TINY_MAX_FEATURES
    channels_last = True
    segmentation_start_epoch = 0
    reconstruction_freeze_epoch = 10 ** 9

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = TINY_LEARNING_RATE
        self.weight_decay = TINY_WEIGHT_DECAY
        self.save_every = 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Skipped for fold 'all': its validation cases are its own training cases, so the scores say
        nothing (nnU-Net warns as much), and on the CPU they cost minutes of the demo's budget."""
        if self.fold == "all":
            self.print_to_log_file("Final validation skipped: fold 'all' would score its own training cases; "
                                   "score held-out subjects with mqsm_predict + mqsm_evaluate")
            return
        super().perform_actual_validation(save_probabilities)

    def configure_optimizers(self):
        network = self.mqsm_network
        optimizer = torch.optim.AdamW(self._parameter_groups(network), self.initial_lr,
                                      weight_decay=self.weight_decay)
        return optimizer, TaskPolyLR(optimizer, self.num_epochs, self.task_frozen)


class mQSMTrainer_inputFusionMap(mQSMTrainer):
    """mQSMTrainer (nnU-Net's recipe and length) with a segmentation that is one stream (PlainConvUNet's
    encoder and decoder) over T1 and the reconstructed QSM (detached), fused at the input instead of
    the paper's two streams and mTrans; the same reconstruction net and loss. Not in the paper.

    Why: with the short recipe it is the only form measured ahead of the stock network on T1
    (bench_learning, benchmarks/README.md): 0.509 against 0.438 held-out mean Dice at 400 iterations
    (deep nuclei 0.18 against 0.10), 0.953 against 0.941 at 2000 (0.940 against 0.926), where the
    paper's two streams reach 0.353 and 0.898. At nnU-Net's full length it has not been measured."""

    network_overrides = {"fusion": "input", "qsm_stream_input": "map"}


class mQSMTrainer_tiny_inputFusionMap(mQSMTrainer_tiny):
    """The demo's trainer: mQSMTrainer_inputFusionMap with the short recipe."""

    network_overrides = {**mQSMTrainer_tiny.network_overrides, **mQSMTrainer_inputFusionMap.network_overrides}


class mQSMTrainer_UNet(mQSMTrainer):
    """Ablation: the two-stream U-Net without any fusion block (paper Table 3, U-Net)."""

    network_overrides = {"fusion": "none"}


class mQSMTrainer_SA(mQSMTrainer):
    """Ablation: self-attention in each stream, no mutual attention (paper Table 3, U-Net + SA)."""

    network_overrides = {"fusion": "sa"}


class mQSMTrainer_paperLoss(mQSMTrainer):
    """The paper's reconstruction loss (Eq. 5) alone: no data-consistency term."""

    data_consistency_weight = 0.0


class mQSMTrainer_tiny_UNet(mQSMTrainer_tiny):
    """mQSMTrainer_UNet with the short recipe."""

    network_overrides = {**mQSMTrainer_tiny.network_overrides, **mQSMTrainer_UNet.network_overrides}


class mQSMTrainer_tiny_SA(mQSMTrainer_tiny):
    """mQSMTrainer_SA with the short recipe."""

    network_overrides = {**mQSMTrainer_tiny.network_overrides, **mQSMTrainer_SA.network_overrides}


class mQSMTrainer_tiny_paperLoss(mQSMTrainer_tiny):
    """mQSMTrainer_paperLoss with the short recipe."""

    data_consistency_weight = mQSMTrainer_paperLoss.data_consistency_weight
