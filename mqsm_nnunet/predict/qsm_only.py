"""QSM without segmentation: cases that have no T1, and models trained on field maps alone.

The reconstruction net reads QSM- only (paper Sec. 3.2), so a case needs its field, QSM- and mask
channels and nothing else. nnU-Net's preprocessing (transpose, crop to the nonzero region,
resampling, per-channel normalization) addresses channels by position, so for a model trained with
a T1 the T1 slot is filled with zeros in memory: the reconstruction never reads it and the
segmentation branch is not run. Each case then goes through nnU-Net's sliding window (one patch at
a time, the output preallocated at the case's size: memory bounded by the patch, not the volume)
with fold ensembling, and `<case>_qsm.nii.gz` is written with the input's geometry, 0 outside the
brain mask. No segmentation file is written for these cases.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mqsm_nnunet.io.dataset_metadata import MQSMChannels
from mqsm_nnunet.predict.export import export_qsm
from mqsm_nnunet.predict.predictor import mQSMPredictor
from mqsm_nnunet.network.reconstruction_only import ReconstructionOnlyNet


def model_segments(predictor: mQSMPredictor) -> bool:
    """Whether the loaded model has a segmentation branch (not one trained by mQSMTrainer_QSM)."""
    network = getattr(predictor.network, "_orig_mod", predictor.network)   # torch.compile wrapper
    return not isinstance(network, ReconstructionOnlyNet)


def split_cases(input_dir: Path, dataset_json: dict) -> tuple[list[str], list[str]]:
    """(cases with every channel, cases without the T1) of a checked nnU-Net style folder
    (`staging.check_channel_files`: every case has all other channels, the mask among them)."""
    channels = MQSMChannels.from_dataset_json(dataset_json)
    ending = dataset_json.get("file_ending", ".nii.gz")
    suffix = f"_{channels.mask:04d}{ending}"
    cases = sorted(p.name[:-len(suffix)] for p in input_dir.iterdir() if p.name.endswith(suffix))
    if channels.t1 is None:
        return cases, []
    has_t1 = {case: (input_dir / f"{case}_{channels.t1:04d}{ending}").is_file() for case in cases}
    return [c for c in cases if has_t1[c]], [c for c in cases if not has_t1[c]]


def _read_case(predictor: mQSMPredictor, input_dir: Path, case: str) -> tuple[np.ndarray, dict]:
    """The case's channels as nnU-Net reads them ((C, z, y, x), properties), absent ones (the T1) zero."""
    ending = predictor.dataset_json["file_ending"]
    n_channels = len(predictor.dataset_json["channel_names"])
    present = [c for c in range(n_channels) if (input_dir / f"{case}_{c:04d}{ending}").is_file()]
    reader = predictor.plans_manager.image_reader_writer_class()
    data, properties = reader.read_images([str(input_dir / f"{case}_{c:04d}{ending}") for c in present])
    if len(present) < n_channels:
        full = np.zeros((n_channels, *data.shape[1:]), dtype=np.float32)
        full[present] = data
        data = full
    return data, properties


def predict_qsm_only(predictor: mQSMPredictor, input_dir: Path, cases: Sequence[str], out_dir: Path,
                     overwrite: bool = True) -> list[Path]:
    """Write `<case>_qsm.nii.gz` for each case from the reconstruction net alone; returns the files.

    `overwrite=False` skips cases whose QSM file exists (mqsm_predict --continue_prediction).
    """
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=predictor.verbose_preprocessing)
    mask_channel = predictor.channels.mask
    written = []
    for case in cases:
        out_file = out_dir / f"{case}_qsm{predictor.dataset_json['file_ending']}"
        if not overwrite and out_file.is_file():
            continue
        data, properties = _read_case(predictor, input_dir, case)
        data, _, properties = preprocessor.run_case_npy(data, None, properties, predictor.plans_manager,
                                                        predictor.configuration_manager, predictor.dataset_json)
        data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        qsm = predictor.predict_qsm_ensemble(data)
        export_qsm(qsm, data[mask_channel], properties, predictor.configuration_manager, predictor.plans_manager,
                   out_file)
        print(f"{case}: wrote {out_file.name} (QSM only)")
        written.append(out_file)
    return written
