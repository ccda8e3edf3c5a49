"""inference.staging (and the dataset.json facts it needs): input folders checked before nnU-Net."""
from __future__ import annotations

import numpy as np
import pytest

from mqsm_nnunet.io.dataset_metadata import DEFAULT_CHANNELS, channel_names, qsm_minus_thresholds
from mqsm_nnunet.predict.staging import check_channel_files, is_inhouse_cohort
from mqsm_nnunet.io.nifti import write_volume

DATASET_JSON = {"channel_names": channel_names(), "file_ending": ".nii.gz",
                "mqsm": {"channels": DEFAULT_CHANNELS, "qsm_minus_thresholds": [0.1, 0.2]}}


def write_case(folder, case, channels=range(4), affine=np.eye(4)):
    for channel in channels:
        write_volume(folder / f"{case}_{channel:04d}.nii.gz", np.zeros((3, 3, 3), np.float32), affine)


def test_complete_cases_pass_and_other_files_are_ignored(tmp_path):
    write_case(tmp_path, "a")
    write_case(tmp_path, "b")
    (tmp_path / "README.txt").write_text("notes")
    assert check_channel_files(tmp_path, DATASET_JSON) == ["a", "b"]
    assert not is_inhouse_cohort(tmp_path)


@pytest.mark.parametrize("prepare, words", [
    (lambda f: write_case(f, "a", range(3)), "case a lacks a_0003.nii.gz"),
    (lambda f: write_case(f, "a", range(5)), "case a has extra a_0004.nii.gz"),
    (lambda f: (write_case(f, "a"), write_volume(f / "notes.nii.gz", np.zeros((3, 3, 3)), np.eye(4))),
     "notes.nii.gz do not fit"),
    (lambda f: (write_case(f, "a", range(3)), write_case(f, "a", [3], np.diag([2.0, 1, 1, 1]))),
     "a_0003.nii.gz is not on the grid of .*a_0000.nii.gz"),
    (lambda f: None, "no <case>_0000.nii.gz channel files"),
])
def test_what_nnunet_would_trip_over_is_refused(tmp_path, prepare, words):
    prepare(tmp_path)
    with pytest.raises(ValueError, match=words):
        check_channel_files(tmp_path, DATASET_JSON)


def test_the_qsm_minus_thresholds_have_no_silent_default():
    assert qsm_minus_thresholds(DATASET_JSON) == (0.1, 0.2)
    for block in ({}, {"qsm_minus_thresholds": [0.1]}, {"qsm_minus_thresholds": "0.1 0.2"}):
        with pytest.raises(ValueError, match="qsm_minus_thresholds"):
            qsm_minus_thresholds({"mqsm": block})


def test_channel_names_follow_the_channel_roles():
    assert channel_names() == {"0": "zscore", "1": "noNorm", "2": "noNorm", "3": "noNorm"}
