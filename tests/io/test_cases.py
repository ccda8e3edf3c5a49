"""cases: pairing files of one case across folders; no silent fallback from QSM maps to segmentations."""
from __future__ import annotations

import numpy as np
import pytest

from mqsm_nnunet.io.cases import collect_cases, pair_cases, qsm_files_in, segmentation_files_in
from mqsm_nnunet.io.nifti import write_volume


def touch(folder, *names):
    for name in names:
        write_volume(folder / name, np.zeros((2, 2, 2), np.uint8), np.eye(4))


def test_prediction_folders_split_into_qsm_maps_and_segmentations(tmp_path):
    touch(tmp_path, "a.nii.gz", "a_qsm.nii.gz", "b.nii.gz", "b_qsm.nii.gz")
    assert {c: p.name for c, p in qsm_files_in(tmp_path).items()} == {"a": "a_qsm.nii.gz", "b": "b_qsm.nii.gz"}
    assert {c: p.name for c, p in segmentation_files_in(tmp_path).items()} == {"a": "a.nii.gz", "b": "b.nii.gz"}


def test_a_folder_without_qsm_suffixes_holds_qsm_maps_by_any_role_name(tmp_path):
    touch(tmp_path, "a_chi.nii.gz", "b.nii.gz")
    assert sorted(qsm_files_in(tmp_path)) == ["a", "b"]


def test_two_files_for_one_case_are_an_error_not_a_fallback(tmp_path):
    touch(tmp_path, "a_qsm.nii.gz", "a_qsm.nii")
    with pytest.raises(ValueError, match="both"):
        qsm_files_in(tmp_path)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="no NIfTI files"):
        collect_cases(tmp_path)
    with pytest.raises(FileNotFoundError):
        qsm_files_in(tmp_path / "nowhere")


def test_pair_cases_names_what_is_missing_on_each_side():
    with pytest.raises(ValueError, match="in x but not in y: b; in y but not in x: c"):
        pair_cases({"a": 1, "b": 2}, {"a": 1, "c": 3}, ("x", "y"))
