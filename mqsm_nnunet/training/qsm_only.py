"""mQSMTrainer_QSM: the reconstruction net alone, trained self-supervised on field maps (no T1, no labels).

The reconstruction loss needs no label and no reference: Eq. 5 (L_C against QSM-, L_M against the
field's edges) plus the dipole data-consistency term (D * QSM against the measured field), all
computed from the network's own inputs. So a cohort's field maps are enough to train it
(`mqsm_convert --qsm-only` writes such a dataset; a full mQSM dataset trains too), and the model
then reconstructs the same or new field maps with `mqsm_predict` (docs/qsm_only.md).

Reused from mQSMTrainer unchanged: the B0 direction per patch (`patch_b0_dir`, through nnU-Net's
transpose and the augmentation), the loss terms (`reconstruction_terms`), the physical-channel-safe
augmentation, the per-task learning-rate schedule (one task here), the gradient clipping and the
validation QSM export (`validation_qsm/`). What differs:
- the network: `ReconstructionOnlyNet`, sized from the plans' reconstruction keys (mQSMPlanner
  writes them for every dataset) and `network_overrides`;
- no segmentation: no segmentation loss, no deep supervision, no segmentation validation;
  `train_loss_seg` is logged as NaN so nnU-Net's log and plots keep their shape;
- nnU-Net's "pseudo Dice" slot (which picks `checkpoint_best.pth`) holds the fraction of the
  validation field that D * QSM explains, 1 - L_DC, so the best checkpoint is the most consistent one;
- the reconstruction net is never frozen.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from mqsm_nnunet.planning import mQSMPlanner
from mqsm_nnunet.network.reconstruction_only import RECONSTRUCTION_ARCH_KEYS, ReconstructionOnlyNet
from mqsm_nnunet.training.trainer import mQSMTrainer
from mqsm_nnunet.training.variants import mQSMTrainer_tiny


class mQSMTrainer_QSM(mQSMTrainer):
    """Self-supervised QSM from field maps alone: the reconstruction net, Eq. 5 + data consistency,
    nnU-Net's SGD recipe and length (as mQSMTrainer)."""

    trains_segmentation: ClassVar[bool] = False
    reconstruction_freeze_epoch: ClassVar[int] = 10 ** 9

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    # ----------------------------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """ReconstructionOnlyNet from the plans' reconstruction keys (mQSMPlans of any mQSM dataset).

        Raises:
            RuntimeError: plans without the QSM- channel (stock nnU-Net plans).
        """
        given = configuration_manager.network_arch_init_kwargs
        if "qsm_minus_channel" not in given:
            raise RuntimeError("these plans do not record the QSM- channel (stock nnU-Net plans?): plan the dataset "
                               "with mqsm_plan_and_preprocess and train with -p mQSMPlans")
        defaults = {k: v for k, v in mQSMPlanner.mqsm_network_kwargs.items() if k in RECONSTRUCTION_ARCH_KEYS}
        kwargs = {**defaults, **{k: given[k] for k in RECONSTRUCTION_ARCH_KEYS if k in given}}
        network = ReconstructionOnlyNet(num_input_channels, num_output_channels, **kwargs)
        network.apply(ReconstructionOnlyNet.initialize)
        return cls.in_memory_layout(network)

    def _parameter_groups(self, network: ReconstructionOnlyNet) -> list[dict]:
        return [{"params": network.reconstruction_parameters(), "name": "reconstruction",
                 "initial_lr": self.initial_lr * self.reconstruction_lr_factor}]

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """Nothing to switch: the network has a single output."""

    # ---------------------------------------------------------------------------------- training
    def train_step(self, batch: dict) -> dict:
        data, coordinates = self.batch_images(batch)
        b0_dir, dc_weights = self.patch_b0_dir(batch["keys"], coordinates)
        self.optimizer.zero_grad(set_to_none=True)
        with self.training_autocast():
            qsm = self.network(data)
        rec = self.reconstruction_terms(qsm.float(), data, b0_dir, dc_weights)
        self.optimizer_step(rec["total"])
        terms = {f"loss_{k}" if k != "total" else "loss_rec": v.detach().cpu().numpy() for k, v in rec.items()}
        return {"loss": terms["loss_rec"], "loss_seg": np.float32(np.nan), **terms}

    def validation_step(self, batch: dict) -> dict:
        """The reconstruction terms on an unaugmented validation batch (no segmentation to score)."""
        result = self._reconstruction_validation(batch)
        return {"loss": result["loss_rec"], **result}

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        explained = 1.0 - self._mean_over_ranks([o["loss_dc"] for o in val_outputs])
        # nnU-Net picks checkpoint_best by the EMA of this slot (its progress.png calls it pseudo Dice):
        # with no segmentation it carries the field explained, logged under its own name too.
        self.logger.log("mean_fg_dice", explained, self.current_epoch)
        self.logger.log("dice_per_class_or_region", [explained], self.current_epoch)
        self.logger.log("val_losses", self._mean_over_ranks([o["loss"] for o in val_outputs]), self.current_epoch)
        self._log_reconstruction_validation(val_outputs)

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Each validation case's QSM (`validation_qsm/`) and its metrics; there is no segmentation."""
        self._validate_qsm()


class mQSMTrainer_QSM_tiny(mQSMTrainer_QSM, mQSMTrainer_tiny):
    """mQSMTrainer_QSM with the short CPU recipe of mQSMTrainer_tiny: AdamW + poly decay, its
    reconstruction-net sizes, its length (the plans' `mqsm_short_training`)."""
