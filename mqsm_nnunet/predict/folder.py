"""One folder of cases through a loaded model: what `mqsm_predict` runs.

Cases with every channel go through nnU-Net's own prediction (segmentation and QSM, published in the
user's label ids: `outputs.py`); cases without a T1, and every case of a model without a
segmentation branch, get the QSM alone (`qsm_only.py`).
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from mqsm_nnunet.command import MQSMWarning
from mqsm_nnunet.predict.outputs import finished_cases, publish_predictions
from mqsm_nnunet.predict.predictor import mQSMPredictor
from mqsm_nnunet.predict.qsm_only import model_segments, predict_qsm_only, split_cases


def predict_folder(predictor: mQSMPredictor, input_dir: Path, out_dir: Path, *, save_probabilities: bool = False,
                   overwrite: bool = True, num_processes_preprocessing: int = 2,
                   num_processes_segmentation_export: int = 2) -> str:
    """Segmentation and QSM for the cases that have every channel (nnU-Net's own prediction, its
    segmentations published in the user's label ids: `outputs.py`), the QSM alone for cases without
    a T1 and for models without a segmentation branch, saying so once. `overwrite=False` skips cases
    whose outputs exist. Returns what was written ("segmentations and QSM maps" or "QSM maps")."""
    complete, without_t1 = split_cases(input_dir, predictor.dataset_json)
    if not model_segments(predictor):
        print(f"{predictor.trainer_name}: a QSM-only model (no segmentation branch); writing <case>_qsm files only")
        segment, qsm_only = [], complete + without_t1
    else:
        segment, qsm_only = complete, without_t1
        if without_t1:
            t1 = predictor.channels.t1
            warnings.warn(f"{len(without_t1)} case(s) without a T1 ({', '.join(without_t1)}): writing "
                          "<case>_qsm.nii.gz only; the segmentation needs a T1 (t1.nii.gz in the subject folder, "
                          f"or the _{t1:04d} channel file)", MQSMWarning, stacklevel=2)
    ending = predictor.dataset_json["file_ending"]
    to_predict = segment if overwrite else sorted(set(segment) - set(finished_cases(out_dir, segment, ending)))
    if to_predict:
        n_channels = len(predictor.dataset_json["channel_names"])
        files = [[str(input_dir / f"{case}_{c:04d}{ending}") for c in range(n_channels)] for case in to_predict]
        with tempfile.TemporaryDirectory(prefix=".mqsm_predict_staging_", dir=out_dir) as staging:
            predictor.predict_from_files(files, [str(Path(staging) / case) for case in to_predict],
                                         save_probabilities=save_probabilities, overwrite=True,
                                         num_processes_preprocessing=num_processes_preprocessing,
                                         num_processes_segmentation_export=num_processes_segmentation_export)
            publish_predictions(Path(staging), out_dir, to_predict, predictor.dataset_json)
    if qsm_only:
        predict_qsm_only(predictor, input_dir, qsm_only, out_dir, overwrite=overwrite)
    return "segmentations and QSM maps" if segment else "QSM maps"
