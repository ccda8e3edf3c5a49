"""Publishing mqsm_predict's outputs: segmentations in the user's own label ids, every file whole.

nnU-Net predicts and writes nnU-Net's consecutive ids 0..N. mqsm_predict lets it write into a hidden
staging folder inside the output folder, then writes each segmentation again in the ids of the
user's label maps (`labels.LabelIdMap`, from the model's dataset.json), with the geometry nnU-Net
wrote, and moves the QSM maps and nnU-Net's other files beside it. Every file lands by one rename,
so the output folder never holds a segmentation in nnU-Net's ids or a half-written file.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mqsm_nnunet.io.files import atomic_file
from mqsm_nnunet.io.labels import LabelIdMap

NNUNET_RUN_FILES = ("dataset.json", "plans.json", "predict_from_raw_data_args.json")
"""What nnU-Net writes once per prediction folder (the model's dataset.json and plans, the arguments)."""
PER_CASE_SUFFIXES = ("_qsm{ending}", ".npz", ".pkl")
"""What nnU-Net and the QSM export write per case besides the segmentation, moved as they are."""


def finished_cases(out_dir: Path, cases: Sequence[str], file_ending: str) -> list[str]:
    """Cases whose segmentation and QSM both exist in `out_dir` (skipped by --continue_prediction)."""
    return [case for case in cases if (out_dir / f"{case}{file_ending}").is_file()
            and (out_dir / f"{case}_qsm{file_ending}").is_file()]


def write_in_user_ids(staged: Path, target: Path, label_ids: LabelIdMap) -> Path:
    """Read the segmentation nnU-Net wrote (its ids), write it to `target` in the user's ids, same geometry."""
    image = sitk.ReadImage(str(staged))
    labels = label_ids.to_user(sitk.GetArrayFromImage(image).astype(np.int64))
    user = sitk.GetImageFromArray(labels.astype(label_ids.user_dtype()))
    user.CopyInformation(image)
    with atomic_file(target) as tmp:
        sitk.WriteImage(user, str(tmp), True)
    return target


def publish_predictions(staging: Path, out_dir: Path, cases: Sequence[str], dataset_json: dict) -> None:
    """Move the staged predictions of `cases` into `out_dir`, segmentations translated to the user's ids."""
    label_ids = LabelIdMap.from_dataset_json(dataset_json, "the model's dataset.json")
    ending = dataset_json["file_ending"]
    for case in cases:
        write_in_user_ids(staging / f"{case}{ending}", out_dir / f"{case}{ending}", label_ids)
        for suffix in PER_CASE_SUFFIXES:
            name = case + suffix.format(ending=ending)
            if (staging / name).is_file():
                os.replace(staging / name, out_dir / name)
    for name in NNUNET_RUN_FILES:
        if (staging / name).is_file():
            os.replace(staging / name, out_dir / name)
