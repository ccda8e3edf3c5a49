"""`mqsm_qsm` through its console script: subject folders and nnU-Net style inputs with the shipped net,
the field map's grid kept, guarded fine-tuning recorded, and bad input refused in one line."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from helpers import run_cli, subprocess_env, tiny_phantom


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("qsm_cli")
    env = subprocess_env(root)
    return tiny_phantom(root / "cohort", 2, env, "--b0-dir", "0.3", "0", "1"), env


def test_subject_folders_get_a_qsm_on_the_field_grid(cohort, tmp_path):
    folder, env = cohort
    run_cli(["mqsm_qsm", "-i", str(folder), "-o", str(tmp_path / "out"), "--quiet"], env)
    for case in ("sub-001", "sub-002"):
        field = nib.load(folder / case / "field.nii.gz")
        qsm = nib.load(tmp_path / "out" / f"{case}_qsm.nii.gz")
        np.testing.assert_allclose(qsm.affine, field.affine, atol=1e-5)
        chi, mask = qsm.get_fdata(), nib.load(folder / case / "mask.nii.gz").get_fdata() > 0
        assert np.all(chi[~mask] == 0) and np.std(chi[mask]) > 0
        truth = nib.load(folder / case / "chi.nii.gz").get_fdata()
        assert np.corrcoef(chi[mask], truth[mask])[0, 1] > 0.5
    report = json.loads((tmp_path / "out" / "qsm.json").read_text())
    assert report["cases"]["sub-001"]["b0_source"] == "affine"
    np.testing.assert_allclose(report["cases"]["sub-001"]["b0_dir"], np.array([0.3, 0, 1]) / np.hypot(0.3, 1), atol=1e-4)


def test_nnunet_style_inputs_and_finetuning(cohort, tmp_path):
    folder, env = cohort
    flat = tmp_path / "imagesTs"
    flat.mkdir()
    for case in ("sub-001", "sub-002"):
        shutil.copy(folder / case / "field.nii.gz", flat / f"{case}_0000.nii.gz")
        shutil.copy(folder / case / "mask.nii.gz", flat / f"{case}_0002.nii.gz")
    run_cli(["mqsm_qsm", "-i", str(flat), "-o", str(tmp_path / "out"), "--finetune", "2", "--quiet"], env)
    report = json.loads((tmp_path / "out" / "qsm.json").read_text())
    assert report["finetune_steps"] == 2
    assert set(report["cases"]) == {"sub-001", "sub-002"}
    assert all(isinstance(c["finetuned_map_kept"], bool) for c in report["cases"].values())


def test_bad_input_is_refused_in_one_line(cohort, tmp_path):
    folder, env = cohort
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "sub-002" / "mask.nii.gz").unlink()
    output = run_cli(["mqsm_qsm", "-i", str(broken), "-o", str(tmp_path / "out")], env, expect=1)
    assert "mqsm_qsm: error:" in output and "sub-002/mask.nii.gz" in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()
    output = run_cli(["mqsm_qsm", "-i", str(folder), "-o", str(folder / "qsm")], env, expect=1)
    assert "inside it" in output and not (folder / "qsm").exists()
    (tmp_path / "taken").mkdir()
    output = run_cli(["mqsm_qsm", "-i", str(folder), "-o", str(tmp_path / "taken")], env, expect=1)
    assert "--overwrite" in output
