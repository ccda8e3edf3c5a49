"""mQSMTrainer: nnU-Net's trainer, changed only where mQSM needs it.

Inherited unchanged: planning, preprocessing, splits, 5-fold training, deep-supervision weights,
checkpointing, `--c` resume, `--val`, AMP and the DDP paths. Changed:
- the network (`MQSMNet`, sized from the plans like PlainConvUNet; stock plans train too);
- the loss: Eq. 5 (reconstruction, inside the brain mask) + a dipole data-consistency term (0 in
  the paper-loss variant) + nnU-Net's Dice+CE with deep supervision;
- the optimizer: one parameter group per task, each with its own learning-rate schedule and its own
  gradient clipping (`TaskPolyLR`);
- the schedule: the segmentation branch is frozen for the first epochs and the reconstruction net
  from a later epoch on. Freezing is learning rate 0 for the frozen group, never `requires_grad`:
  DDP without `find_unused_parameters` needs every parameter to get a gradient at every step. A
  frozen segmentation branch gets its loss with weight 0; a frozen reconstruction net runs without
  autograd and gets an explicit zero gradient (its backward at full resolution is skipped);
- augmentation: no mirroring (side and lobe labels); intensity transforms act on T1 only, and
  voxel-coordinate channels tell the loss how each patch was rotated (`mqsm_nnunet.training.augmentation`,
  `training.geometry`);
- logging: both loss terms and an online QSM figure, in the log and in `progress_mqsm.png`;
- final validation also writes each validation case's QSM and its QSM metrics (`qsm_validation`);
- the plans it runs under (and copies into the results folder) carry the variant's network sizes.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch._dynamo import OptimizedModule
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from mqsm_nnunet.training.augmentation import N_COORDINATE_CHANNELS, protect_physical_channels, with_voxel_coordinates
from mqsm_nnunet.io.dataset_metadata import MQSMChannels
from mqsm_nnunet.qsm.losses import DataConsistencyLoss, ReconstructionLoss
from mqsm_nnunet.network import MQSMNet
from mqsm_nnunet.io.nnunet_datasets import folds_warning
from mqsm_nnunet.training.architecture import build_mqsm_network, plans_describing_network
from mqsm_nnunet.training.geometry import (b0_in_patch_frame, b0_in_preprocessed_frame, is_exact_regrid,
                                           sampling_matrix)
from mqsm_nnunet.training.progress import MQSMLocalLogger
from mqsm_nnunet.training.qsm_validation import FinalQSMValidation
from mqsm_nnunet.training.schedule import TaskPolyLR

class NoMirroring:
    """Mixin for an nnU-Net trainer: nnU-Net's rotation and scaling, without mirroring, in training and
    at inference.

    Brain regions are named by side and lobe (caudate_L, frontal_cortex_R): a flip along any axis
    turns a left structure into a right one, or a frontal into an occipital one, under the same
    label, which teaches the network that side and lobe cannot be told apart (and test-time
    mirroring averages the two sides' predictions).
    """

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None


class mQSMTrainer(FinalQSMValidation, NoMirroring, nnUNetTrainer):
    """The paper's mQSM: recon net + two-stream U-Net with mTrans at the bottleneck."""

    #: MQSMNet keyword arguments that this trainer variant fixes over the plans.
    network_overrides: ClassVar[dict] = {}
    #: Cap on the U-Net width per stage (None: as planned).
    max_unet_features: ClassVar[int | tuple[int, ...] | None] = None
    #: Whether this trainer trains the segmentation (which needs a T1; mQSMTrainer_QSM does not).
    trains_segmentation: ClassVar[bool] = True
    #: Epochs [0, segmentation_start_epoch) train the reconstruction only (reference code: 10).
    segmentation_start_epoch: ClassVar[int] = 10
    #: From this epoch on the reconstruction net is frozen (reference code: 150).
    reconstruction_freeze_epoch: ClassVar[int] = 150
    #: Weight of the morphology term L_M in L_rec (paper: 0.01).
    morphology_weight: ClassVar[float] = 0.01
    #: Weight of the dipole data-consistency term (0: the paper's Eq. 5 alone; see DataConsistencyLoss).
    data_consistency_weight: ClassVar[float] = 100.0
    #: Patch voxels next to each face left out of the data-consistency misfit (non-local dipole field).
    data_consistency_margin: ClassVar[int] = 4
    #: Also apply it to rotated / scaled (resampled) patches, where the dipole model holds only roughly.
    data_consistency_on_resampled: ClassVar[bool] = False
    #: Base learning rate of the reconstruction group relative to nnU-Net's initial_lr.
    reconstruction_lr_factor: ClassVar[float] = 1.0
    #: Gradient-norm clip, applied to each task's parameters separately (nnU-Net: 12 for the whole net).
    gradient_clip: ClassVar[float] = 12.0
    #: Weights and batches in channels-last-3d layout: oneDNN's CPU convolutions on few channels (the
    #: dilated recon net, the narrow two-stream stages) run 1.5-3x faster in it, a whole tiny step
    #: about 0.9x as long (bench_train_step, tiny vs tiny_contiguous; docs/training.md).
    channels_last: ClassVar[bool] = False
    #: bfloat16 autocast of the forward pass on the CPU; the short variants set it from the plans.
    cpu_bf16: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # Checked before nnU-Net's constructor, which starts a log file in the results folder.
        n_dims = len(PlansManager(plans).get_configuration(configuration).patch_size)
        if n_dims != 3:
            raise RuntimeError(f"mQSMTrainer needs a 3D configuration (the dipole physics is 3D); "
                               f"'{configuration}' is {n_dims}D: use 3d_fullres")
        self.channels = MQSMChannels.from_dataset_json(dataset_json)
        if self.channels.qsm_only and self.trains_segmentation:
            raise RuntimeError(f"{type(self).__name__} trains a segmentation, which needs a T1, and this dataset "
                               "was made from field maps alone (mqsm_convert --qsm-only): train it with "
                               "-tr mQSMTrainer_QSM")
        # The plans copied into the results folder then describe this variant's network (architecture.py).
        plans = plans_describing_network(plans, configuration, self.network_overrides, self.max_unet_features)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger.local_logger = MQSMLocalLogger(self.logger.local_logger.verbose,
                                                   segments=self.trains_segmentation)
        self.reconstruction_loss = ReconstructionLoss(morph_weight=self.morphology_weight)
        self.data_consistency_loss = DataConsistencyLoss(margin=self.data_consistency_margin)
        transpose = self.plans_manager.transpose_forward
        self.case_b0_dir = {case: b0_in_preprocessed_frame(b, transpose)
                        for case, b in dataset_json["mqsm"].get("b0_direction", {}).items()}

    # ----------------------------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """Called by training and by nnU-Net's predictor alike (so stock prediction gets MQSMNet); the
        plans alone decide the network (this variant's sizes were written into them at __init__)."""
        return cls.in_memory_layout(build_mqsm_network(configuration_manager, num_input_channels, num_output_channels,
                                                       enable_deep_supervision))

    @classmethod
    def in_memory_layout(cls, network: nn.Module) -> nn.Module:
        """The network with its weights in this trainer's layout; a convolution whose weight is
        channels-last returns channels-last, so a predictor's contiguous patches need no conversion."""
        return network.to(memory_format=torch.channels_last_3d) if cls.channels_last else network

    def batch_images(self, batch: dict, augmented: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image channels on the device in the network's memory layout, the voxel-coordinate channels
        the training augmentation appends, or None for unaugmented validation batches)."""
        data, coordinates = batch["data"].to(self.device, non_blocking=True), None
        if augmented:
            data, coordinates = data[:, :-N_COORDINATE_CHANNELS], data[:, -N_COORDINATE_CHANNELS:]
        if self.channels_last:
            data = data.contiguous(memory_format=torch.channels_last_3d)
        return data, coordinates

    @property
    def mqsm_network(self) -> MQSMNet:
        """The bare MQSMNet behind DDP / torch.compile wrappers."""
        module = self.network.module if self.is_ddp else self.network
        return module._orig_mod if isinstance(module, OptimizedModule) else module

    def configure_optimizers(self):
        """nnU-Net's SGD + poly decay, one parameter group per task (own base lr, own freezing)."""
        network = self.network._orig_mod if isinstance(self.network, OptimizedModule) else self.network
        optimizer = torch.optim.SGD(self._parameter_groups(network), self.initial_lr,
                                    weight_decay=self.weight_decay, momentum=0.99, nesterov=True)
        return optimizer, TaskPolyLR(optimizer, self.num_epochs, self.task_frozen)

    def _parameter_groups(self, network: MQSMNet) -> list[dict]:
        """Segmentation first (nnU-Net logs and plots group 0's learning rate)."""
        return [{"params": network.segmentation_parameters(), "name": "segmentation",
                 "initial_lr": self.initial_lr},
                {"params": network.reconstruction_parameters(), "name": "reconstruction",
                 "initial_lr": self.initial_lr * self.reconstruction_lr_factor}]

    def do_split(self):
        """nnU-Net's split; with fewer training cases than its 5 folds and no splits_final.json, a clear
        refusal with the fix instead of scikit-learn's traceback."""
        if self.fold != "all" and not (Path(self.preprocessed_dataset_folder_base) / "splits_final.json").is_file():
            dataset_class = self.dataset_class or infer_dataset_class(self.preprocessed_dataset_folder)
            n_cases = len(dataset_class.get_identifiers(self.preprocessed_dataset_folder))
            problem = folds_warning(n_cases, qsm_only=not self.trains_segmentation)
            if problem:
                raise RuntimeError(f"cannot train fold {self.fold}: {problem}")
        return super().do_split()

    # ---------------------------------------------------------------------------------- schedule
    def segmentation_frozen(self, epoch: int) -> bool:
        return epoch < self.segmentation_start_epoch

    def reconstruction_frozen(self, epoch: int) -> bool:
        return epoch >= self.reconstruction_freeze_epoch

    def task_frozen(self, task: str, epoch: int) -> bool:
        """Whether parameter group `task` ('segmentation' or 'reconstruction') is frozen in `epoch`."""
        return self.segmentation_frozen(epoch) if task == "segmentation" else self.reconstruction_frozen(epoch)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        names = [g["name"] for g in self.optimizer.param_groups if self.task_frozen(g["name"], self.current_epoch)]
        self.print_to_log_file(f"Frozen this epoch: {', '.join(names) if names else 'nothing'}; learning rates "
                               + ", ".join(f"{g['name']} {g['lr']:.3g}" for g in self.optimizer.param_groups))

    # ---------------------------------------------------------------------------------- training
    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        """nnU-Net's pipeline with the physical channels shielded from intensity transforms and voxel-
        coordinate channels appended (they tell the loss how each patch was rotated and flipped)."""
        pipeline = super().get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm, is_cascaded, foreground_labels, regions, ignore_label)
        n_channels = len(self.dataset_json["channel_names"])
        coordinates = tuple(range(n_channels, n_channels + N_COORDINATE_CHANNELS))
        return protect_physical_channels(with_voxel_coordinates(pipeline), self.channels.physical + coordinates,
                                         n_channels + N_COORDINATE_CHANNELS)

    def _split_physical(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.channels
        return (data[:, c.qsm_minus:c.qsm_minus + 1], data[:, c.field:c.field + 1],
                data[:, c.mask:c.mask + 1] > 0.5)

    def patch_b0_dir(self, keys, coordinates: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B0 per sample in the patch's voxel frame (B, 3), data-consistency weight per sample (B,)).

        coordinates None: unaugmented patches (validation). With `data_consistency_on_resampled`
        False, rotated or scaled patches get weight 0 (see `geometry.is_exact_regrid`): the term is
        computed on the patches whose geometry is exact, flips included.
        """
        missing = [k for k in keys if k not in self.case_b0_dir]
        if missing:
            raise RuntimeError(f"dataset.json 'mqsm.b0_direction' has no entry for {missing}: re-run mqsm_convert")
        source = torch.from_numpy(np.stack([self.case_b0_dir[k] for k in keys]))
        if coordinates is None:
            return source.float(), torch.ones(len(keys))
        matrix = sampling_matrix(coordinates.cpu())
        b0_dir = b0_in_patch_frame(source, matrix, self.configuration_manager.spacing)
        weights = torch.ones(len(keys)) if self.data_consistency_on_resampled else is_exact_regrid(matrix).float()
        return b0_dir, weights

    def reconstruction_terms(self, qsm: torch.Tensor, data: torch.Tensor, b0_dir: torch.Tensor,
                             dc_weights: torch.Tensor) -> dict:
        """Eq. 5 (L_C, L_M) and the data-consistency term L_DC of one batch; total = L_rec + w L_DC."""
        qsm_minus, field, mask = self._split_physical(data)
        rec = self.reconstruction_loss(qsm, qsm_minus, field, mask)
        dc = self.data_consistency_loss(qsm, field, mask, b0_dir.to(qsm.device), self.configuration_manager.spacing,
                                        dc_weights)
        return {"total": rec.total + self.data_consistency_weight * dc, "c": rec.consistency,
                "m": rec.morphology, "dc": dc}

    def train_step(self, batch: dict) -> dict:
        data, coordinates = self.batch_images(batch)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        train_segmentation = not self.segmentation_frozen(self.current_epoch)
        train_reconstruction = not self.reconstruction_frozen(self.current_epoch)
        b0_dir, dc_weights = self.patch_b0_dir(batch["keys"], coordinates)

        self.optimizer.zero_grad(set_to_none=True)
        with self.training_autocast():
            segmentation, qsm = self.network(data, with_qsm=True, reconstruction_grad=train_reconstruction)
            loss_seg = self.loss(segmentation, target)
        rec = self.reconstruction_terms(qsm.float(), data, b0_dir, dc_weights)
        # A frozen task still hands every parameter a (zero) gradient, as DDP requires; the frozen
        # reconstruction net is not even back-propagated (its forward ran without autograd).
        loss = (rec["total"] if train_reconstruction else self.mqsm_network.zero_reconstruction_gradient()) \
            + (loss_seg if train_segmentation else 0.0 * loss_seg)

        self.optimizer_step(loss)
        return {"loss": loss.detach().cpu().numpy(), "loss_seg": loss_seg.detach().cpu().numpy(),
                **{f"loss_{k}" if k != "total" else "loss_rec": v.detach().cpu().numpy() for k, v in rec.items()}}

    def training_autocast(self):
        """The forward pass's precision: nnU-Net's AMP on CUDA, bfloat16 on the CPU where the plans' short
        training asks for it (`cpu_bf16`), else float32. The losses are computed in float32 outside it."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", enabled=True)
        if self.cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return dummy_context()

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, per-task clipping and the optimizer step, through the AMP grad scaler on CUDA: the
        one body every mQSM train step ends with."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            self._clip_per_task()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            self._clip_per_task()
            self.optimizer.step()

    def _clip_per_task(self) -> None:
        """Clip each task's gradient norm on its own: one task's large gradients must not shrink the other's."""
        for group in self.optimizer.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], self.gradient_clip)

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        for key, log_key in (("loss_seg", "train_loss_seg"), ("loss_rec", "train_loss_rec"),
                             ("loss_c", "train_loss_c"), ("loss_m", "train_loss_m"), ("loss_dc", "train_loss_dc")):
            self.logger.log(log_key, self._mean_over_ranks([o[key] for o in train_outputs]), self.current_epoch)

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's pseudo-Dice step, plus the reconstruction terms and the QSM/QSM- correlation.

        The reconstruction net runs a second time here (nnU-Net's step only takes the segmentation);
        reusing nnU-Net's step is worth that cost on the validation batches of an epoch. Validation
        patches are not augmented, so B0 is each case's own.
        """
        return {**super().validation_step(batch), **self._reconstruction_validation(batch)}

    def _reconstruction_validation(self, batch: dict) -> dict:
        """L_rec, L_DC and the QSM/QSM- correlation of an (unaugmented) validation batch."""
        data, _ = self.batch_images(batch, augmented=False)
        with torch.no_grad():
            qsm = self.mqsm_network.reconstruct(data).float()
            rec = self.reconstruction_terms(qsm, data, *self.patch_b0_dir(batch["keys"], None))
        qsm_minus, _, mask = self._split_physical(data)
        return {"loss_rec": rec["total"].cpu().numpy(), "loss_dc": rec["dc"].cpu().numpy(),
                "qsm_corr": _masked_correlation(qsm, qsm_minus, mask)}

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        super().on_validation_epoch_end(val_outputs)
        self._log_reconstruction_validation(val_outputs)

    def _log_reconstruction_validation(self, val_outputs: list[dict]) -> None:
        self.logger.log("val_loss_rec", self._mean_over_ranks([o["loss_rec"] for o in val_outputs]),
                        self.current_epoch)
        self.logger.log("val_qsm_corr", self._mean_over_ranks([o["qsm_corr"] for o in val_outputs]),
                        self.current_epoch)
        loss_dc = self._mean_over_ranks([o["loss_dc"] for o in val_outputs])
        self.logger.log("val_loss_dc", loss_dc, self.current_epoch)
        self.logger.log("val_field_explained", 1.0 - loss_dc, self.current_epoch)

    def on_epoch_end(self):
        log = self.logger
        epoch = self.current_epoch
        self.print_to_log_file(
            f"L_seg {log.get_value('train_loss_seg', epoch):.4f}  L_rec {log.get_value('train_loss_rec', epoch):.4f} "
            f"(L_C {log.get_value('train_loss_c', epoch):.4f}, L_M {log.get_value('train_loss_m', epoch):.4f}, "
            f"L_DC {log.get_value('train_loss_dc', epoch):.4f})  "
            f"val L_rec {log.get_value('val_loss_rec', epoch):.4f}  val L_DC {log.get_value('val_loss_dc', epoch):.4f}  "
            f"val QSM/QSM- r {log.get_value('val_qsm_corr', epoch):.3f}")
        super().on_epoch_end()

    def _mean_over_ranks(self, values: list) -> float:
        local = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        if not self.is_ddp:
            return local
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        return float(np.nanmean(gathered)) if np.isfinite(gathered).any() else float("nan")


def _masked_correlation(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Pearson r of two maps over the mask voxels of a batch (NaN when the mask is empty)."""
    x, y = a[mask].double(), b[mask].double()
    if x.numel() < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denominator = torch.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")
