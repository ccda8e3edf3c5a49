"""Final validation's QSM half: each validation case's QSM map in native space, and its metrics.

A mixin of mQSMTrainer (and of mQSMTrainer_QSM, which has no segmentation half). It predicts with
`prediction.mQSMPredictor` (nnU-Net's sliding window), which sits below training and inference both.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from nnunetv2.paths import nnUNet_raw
from torch import distributed as dist

from mqsm_nnunet.io.files import write_text_atomic
from mqsm_nnunet.metrics import qsm_metrics
from mqsm_nnunet.io.nifti import read_volume
from mqsm_nnunet.predict.export import qsm_to_native, write_native_float
from mqsm_nnunet.predict.predictor import mQSMPredictor


class FinalQSMValidation:
    """Mixin for an nnU-Net trainer with `channels` (MQSMChannels) and `mqsm_network`."""

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's validation (segmentations + Dice), then each validation case's QSM and metrics.

        The QSM maps go to `validation_qsm/`, not `validation/`: nnU-Net's tools (validation Dice,
        nnUNetv2_find_best_configuration) score every `*.nii.gz` in `validation/` as a segmentation.
        """
        super().perform_actual_validation(save_probabilities)
        self._validate_qsm()

    def _validate_qsm(self) -> None:
        """Write `validation_qsm/<case>_qsm.nii.gz`; log QSM metrics against the dataset's reference
        QSM where mqsm_convert stored one (`qsmTr/`), else against QSM- (consistency only)."""
        self.set_deep_supervision_enabled(False)
        self.network.eval()
        predictor = mQSMPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                  perform_everything_on_device=True, device=self.device, verbose=False,
                                  verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(self.mqsm_network, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, self.__class__.__name__,
                                        self.inference_allowed_mirroring_axes)
        _, val_keys = self.do_split()
        if self.is_ddp:
            val_keys = val_keys[self.local_rank::dist.get_world_size()]
        dataset_val = self.dataset_class(self.preprocessed_dataset_folder, val_keys,
                                         folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
        out_dir = Path(self.output_folder) / "validation_qsm"
        reference_dir = Path(nnUNet_raw.get(), self.plans_manager.dataset_name, "qsmTr") \
            if nnUNet_raw.is_set() else None
        per_case = {}
        for key in dataset_val.identifiers:
            data, _, _, properties = dataset_val.load_case(key)
            data = torch.from_numpy(np.asarray(data[:]))
            qsm = predictor.predict_qsm(data).float()
            mask = data[self.channels.mask]
            native = qsm_to_native(qsm, mask, properties, self.configuration_manager, self.plans_manager)
            write_native_float(native, properties, out_dir / f"{key}_qsm{self.dataset_json['file_ending']}")
            per_case[key] = self._qsm_case_metrics(key, qsm, data, native, reference_dir)
        self._write_qsm_summary(out_dir, per_case)
        self.set_deep_supervision_enabled(True)

    def _qsm_case_metrics(self, key: str, qsm: torch.Tensor, data: torch.Tensor, native: np.ndarray,
                          reference_dir: Path | None) -> dict:
        reference_file = reference_dir / f"{key}{self.dataset_json['file_ending']}" if reference_dir else None
        if reference_file is not None and reference_file.is_file():
            reference = read_volume(reference_file).data          # (i, j, k) = SimpleITK's (z, y, x) reversed
            prediction = native.transpose(2, 1, 0)
            mask = read_volume(reference_file.parents[1] / "imagesTr" /
                               f"{key}_{self.channels.mask:04d}{self.dataset_json['file_ending']}").data > 0.5
            metrics = qsm_metrics(prediction, reference, mask)
            return {"against": "reference QSM (qsmTr)", **metrics}
        mask = (data[self.channels.mask] > 0.5).numpy()
        metrics = qsm_metrics(qsm.numpy(), data[self.channels.qsm_minus].numpy(), mask)
        return {"against": "QSM- (no reference QSM stored)", **metrics}

    def _write_qsm_summary(self, out_dir: Path, per_case: dict) -> None:
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, per_case)
            per_case = {k: v for part in gathered for k, v in part.items()}
        if self.local_rank != 0 or not per_case:
            return
        names = [k for k, v in next(iter(per_case.values())).items() if isinstance(v, (int, float))]
        mean = {name: float(np.nanmean([case[name] for case in per_case.values()])) for name in names}
        summary = {"mean": mean, "per_case": per_case}
        write_text_atomic(out_dir / "qsm_summary.json", json.dumps(summary, indent=2, default=float))
        self.print_to_log_file("QSM validation (" + next(iter(per_case.values()))["against"] + "): " +
                               ", ".join(f"{k} {v:.4g}" for k, v in mean.items()))
