"""QSM from field maps alone, through the real CLIs: prediction without a T1 from a model trained on
T1 + labels, `mqsm_convert --qsm-only` + stock `nnUNetv2_train -tr mQSMTrainer_QSM_tiny` +
`mqsm_predict`, a user's subclass that only shortens mQSMTrainer_QSM, and the B0 conventions.

One module fixture writes one tiny oblique phantom cohort (32 x 32 x 24 at 6 mm, 5 subjects), a copy
of it with field maps and masks only, converts both (full and `--qsm-only`), plans them in one call
and trains one model on each (1 epoch x 2 iterations). The tests without nnU-Net come first.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import run_cli, subprocess_env, tiny_phantom

from mqsm_nnunet.conversion.b0 import b0_direction
from mqsm_nnunet.io.dataset_metadata import MQSMChannels, QSM_ONLY_CHANNELS, channel_names
from mqsm_nnunet.predict.staging import check_channel_files
from mqsm_nnunet.io.nifti import write_volume
from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

FULL_ID, FIELDS_ID = 711, 712
FULL, FIELDS = "Dataset711_Full", "Dataset712_Fields"
B0_DIR = ("0.3", "0", "1")                      # oblique: the affine is rotated
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_def_n_proc")
SHORT_TRAINER = """\
import torch

from mqsm_nnunet.training.qsm_only import mQSMTrainer_QSM


class mQSMTrainer_QSM_userShort(mQSMTrainer_QSM):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
"""


# ----------------------------------------------------------------------------------------------------
# without nnU-Net
# ----------------------------------------------------------------------------------------------------
def test_qsm_only_channel_roles_have_no_t1():
    dataset_json = {"channel_names": channel_names(qsm_only=True),
                    "mqsm": {"qsm_only": True, "channels": QSM_ONLY_CHANNELS}}
    channels = MQSMChannels.from_dataset_json(dataset_json)
    assert channels.qsm_only and channels.t1 is None
    assert channels.layout() == {"field": 0, "qsm_minus": 1, "mask": 2}
    assert channels.physical == (0, 1, 2)
    with pytest.raises(ValueError, match="name a t1"):
        MQSMChannels.from_dataset_json({"mqsm": {"qsm_only": True, "channels": {**QSM_ONLY_CHANNELS, "t1": 3}}})


def test_only_the_t1_channel_may_be_missing(tmp_path):
    dataset_json = {"channel_names": channel_names(), "file_ending": ".nii.gz",
                    "mqsm": {"channels": {"t1": 0, "field": 1, "qsm_minus": 2, "mask": 3}}}
    for channel in (1, 2, 3):
        write_volume(tmp_path / f"a_{channel:04d}.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4))
    assert check_channel_files(tmp_path, dataset_json) == ["a"]
    (tmp_path / "a_0002.nii.gz").unlink()
    with pytest.raises(ValueError, match="lacks a_0002.nii.gz"):
        check_channel_files(tmp_path, dataset_json)


def test_b0_direction_precedence_flag_then_sidecar_then_affine(tmp_path):
    field = tmp_path / "field.nii.gz"
    affine = np.eye(4)
    assert b0_direction(field, affine, None) == ((0.0, 0.0, 1.0), "affine")
    (tmp_path / "params.json").write_text(json.dumps({"B0_dir": [0, 3, 4], "EchoTime": 0.02}))
    assert b0_direction(field, affine, None) == ((0.0, 0.6, 0.8), "sidecar params.json")
    (tmp_path / "field.json").write_text(json.dumps({"B0_dir": [1, 0, 0]}))
    assert b0_direction(field, affine, None) == ((1.0, 0.0, 0.0), "sidecar field.json")
    assert b0_direction(field, affine, (0.0, 1.0, 0.0)) == ((0.0, 1.0, 0.0), "--b0-dir")
    (tmp_path / "field.json").write_text(json.dumps({"B0_dir": [0, 0]}))
    with pytest.raises(ValueError, match="field.json: 'B0_dir' must be 3 numbers"):
        b0_direction(field, affine, None)
    (tmp_path / "field.json").write_text("{not json")
    with pytest.raises(ValueError, match="field.json: not valid JSON"):
        b0_direction(field, affine, None)


# ----------------------------------------------------------------------------------------------------
# through nnU-Net
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Models:
    root: Path
    cohort: Path          # T1, field, mask, labels, chi
    fields: Path          # the same subjects: field and mask only
    env: dict

    def raw(self, name: str) -> Path:
        return Path(self.env["nnUNet_raw"]) / name

    def model(self, name: str, trainer: str) -> Path:
        return Path(self.env["nnUNet_results"]) / name / f"{trainer}__mQSMPlans__3d_fullres"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    root = tmp_path_factory.mktemp("qsm_only")
    extra = root / "user_trainers"
    extra.mkdir()
    (extra / "user_short.py").write_text(SHORT_TRAINER)
    env = subprocess_env(root, [extra])
    cohort, fields = root / "cohort", root / "fields"
    tiny_phantom(cohort, 5, env, "--b0-dir", *B0_DIR, "--seed", "3")
    for subject in sorted(cohort.glob("sub-*")):
        (fields / subject.name).mkdir(parents=True)
        for name in ("field.nii.gz", "mask.nii.gz"):
            shutil.copy(subject / name, fields / subject.name / name)
    (fields / "sub-005" / "params.json").write_text(json.dumps({"B0_dir": [0, 0, 2]}))   # QSM-CI style sidecar
    run_cli(["mqsm_convert", "-i", str(cohort), "-d", str(FULL_ID), "-n", "Full", "-np", "1"], env)
    run_cli(["mqsm_convert", "-i", str(fields), "-d", str(FIELDS_ID), "-n", "Fields", "--qsm-only", "-np", "1"], env)
    run_cli(["mqsm_plan_and_preprocess", "-d", str(FULL_ID), str(FIELDS_ID), "-np", "1", "--no_pbar"], env)
    for dataset in (f"Dataset{FULL_ID}_Full", f"Dataset{FIELDS_ID}_Fields"):
        write_short_training(root / "nnUNet_preprocessed" / dataset / "mQSMPlans.json", ShortTraining(1, 2))
    run_cli(["nnUNetv2_train", str(FULL_ID), "3d_fullres", "0", "-tr", "mQSMTrainer_tiny", "-p", "mQSMPlans",
          "-device", "cpu"], env)
    run_cli(["nnUNetv2_train", str(FIELDS_ID), "3d_fullres", "0", "-tr", "mQSMTrainer_QSM_tiny", "-p", "mQSMPlans",
          "-device", "cpu"], env)
    return Models(root, cohort, fields, env)


@pytest.fixture
def nnunet_env(models, monkeypatch) -> Models:
    for name in NNUNET_VARS:
        monkeypatch.setenv(name, models.env[name])
    return models


def mqsm_predict(dataset_id: int, trainer: str, *args: str) -> int:
    from mqsm_nnunet.cli.predict import main

    return main(["-d", str(dataset_id), "-tr", trainer, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1",
                 "--disable_progress_bar", *args])


def assert_qsm_on_the_field_grid(qsm_file: Path, field_file: Path, mask_file: Path) -> np.ndarray:
    """Same shape, voxel size and orientation as the field map; float32, 0 outside the mask, finite."""
    qsm, field, mask = nib.load(qsm_file), nib.load(field_file), nib.load(mask_file)
    assert qsm.shape == field.shape
    np.testing.assert_allclose(qsm.affine, field.affine, atol=1e-5)
    np.testing.assert_allclose(qsm.header.get_zooms(), field.header.get_zooms(), atol=1e-6)
    assert nib.aff2axcodes(qsm.affine) == nib.aff2axcodes(field.affine)
    assert qsm.get_data_dtype() == np.float32
    data, inside = np.asarray(qsm.dataobj), np.asarray(mask.dataobj) > 0
    assert np.isfinite(data).all() and not data[~inside].any() and np.count_nonzero(data[inside]) > 0.9 * inside.sum()
    return data


@pytest.mark.slow
def test_field_only_subjects_get_the_qsm_alone_from_a_model_trained_on_t1_and_labels(nnunet_env, tmp_path, capsys):
    """A folder with one complete subject and one with only field + mask: both QSMs, one segmentation,
    one clear note that the segmentation needs a T1."""
    inputs = tmp_path / "inputs"
    shutil.copytree(nnunet_env.fields / "sub-002", inputs / "sub-002")
    shutil.copytree(nnunet_env.cohort / "sub-001", inputs / "sub-001", ignore=shutil.ignore_patterns("labels*", "chi*"))
    out = tmp_path / "pred"
    assert mqsm_predict(FULL_ID, "mQSMTrainer_tiny", "-i", str(inputs), "-o", str(out)) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "segmentation needs a T1" in line]
    assert len(notes) == 1 and "sub-002" in notes[0] and "sub-001" not in notes[0]
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == ["sub-001.nii.gz", "sub-001_qsm.nii.gz", "sub-002_qsm.nii.gz"]
    qsm = assert_qsm_on_the_field_grid(out / "sub-002_qsm.nii.gz", inputs / "sub-002" / "field.nii.gz",
                                       inputs / "sub-002" / "mask.nii.gz")
    chi = np.asarray(nib.load(nnunet_env.cohort / "sub-002" / "chi.nii.gz").dataobj)
    inside = chi != 0
    assert np.corrcoef(qsm[inside], chi[inside])[0, 1] > 0.5


@pytest.mark.slow
def test_nnunet_style_inputs_without_the_t1_channel_get_the_qsm_alone(nnunet_env, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    train = nnunet_env.raw(FULL) / "imagesTr"
    for channel in (1, 2, 3):
        shutil.copy(train / f"sub-003_{channel:04d}.nii.gz", images / f"sub-003_{channel:04d}.nii.gz")
    out = tmp_path / "pred"
    assert mqsm_predict(FULL_ID, "mQSMTrainer_tiny", "-i", str(images), "-o", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sub-003_qsm.nii.gz"]
    assert_qsm_on_the_field_grid(out / "sub-003_qsm.nii.gz", nnunet_env.cohort / "sub-003" / "field.nii.gz",
                                 nnunet_env.cohort / "sub-003" / "mask.nii.gz")


@pytest.mark.slow
def test_qsm_only_conversion_planning_and_training(nnunet_env):
    raw = nnunet_env.raw(FIELDS)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "brain": 1}
    assert dataset_json["mqsm"]["qsm_only"] is True and dataset_json["mqsm"]["channels"] == QSM_ONLY_CHANNELS
    sources = dataset_json["mqsm"]["b0_direction_source"]
    assert sources["sub-005"] == "sidecar params.json" and sources["sub-001"] == "affine"
    assert dataset_json["mqsm"]["b0_direction"]["sub-005"] == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(dataset_json["mqsm"]["b0_direction"]["sub-001"],
                               np.array([0.3, 0, 1]) / np.hypot(0.3, 1), atol=1e-4)
    assert sorted(p.name for p in (raw / "imagesTr").iterdir())[:3] == [f"sub-001_000{c}.nii.gz" for c in range(3)]
    label_map = np.asarray(nib.load(raw / "labelsTr" / "sub-001.nii.gz").dataobj)
    mask = np.asarray(nib.load(nnunet_env.fields / "sub-001" / "mask.nii.gz").dataobj)
    np.testing.assert_array_equal(label_map, mask)
    plans = json.loads((Path(nnunet_env.env["nnUNet_preprocessed"]) / FIELDS / "mQSMPlans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    assert architecture["network_class_name"].endswith("ReconstructionOnlyNet")
    assert architecture["arch_kwargs"]["qsm_minus_channel"] == QSM_ONLY_CHANNELS["qsm_minus"]

    import torch

    fold = nnunet_env.model(FIELDS, "mQSMTrainer_QSM_tiny") / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "mQSMTrainer_QSM_tiny"
    assert all(key.startswith("recon.") for key in checkpoint["network_weights"])
    assert np.isfinite(checkpoint["logging"]["train_loss_rec"]).all()
    recorded = json.loads((fold.parent / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert recorded["architecture"]["arch_kwargs"]["recon_width"] == 8     # the variant's net, in its results folder
    assert recorded["mqsm_short_training"]["epochs"] == 1
    assert list((fold / "validation_qsm").glob("sub-*_qsm.nii.gz"))
    assert json.loads((fold / "validation_qsm" / "qsm_summary.json").read_text())["mean"]["nrmse"] > 0


@pytest.mark.slow
def test_a_qsm_only_model_reconstructs_the_field_maps_it_was_trained_on(nnunet_env, tmp_path):
    out = tmp_path / "pred"
    assert mqsm_predict(FIELDS_ID, "mQSMTrainer_QSM_tiny", "-i", str(nnunet_env.fields), "-o", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"sub-00{i}_qsm.nii.gz" for i in range(1, 6)]
    for case in ("sub-001", "sub-004"):
        assert_qsm_on_the_field_grid(out / f"{case}_qsm.nii.gz", nnunet_env.fields / case / "field.nii.gz",
                                     nnunet_env.fields / case / "mask.nii.gz")


@pytest.mark.slow
def test_a_subclass_that_only_shortens_mqsm_trainer_qsm_trains(nnunet_env):
    run_cli(["nnUNetv2_train", str(FIELDS_ID), "3d_fullres", "1", "-tr", "mQSMTrainer_QSM_userShort", "-p",
          "mQSMPlans", "-device", "cpu"], nnunet_env.env)
    fold = nnunet_env.model(FIELDS, "mQSMTrainer_QSM_userShort") / "fold_1"
    assert (fold / "checkpoint_final.pth").is_file()
    assert list((fold / "validation_qsm").glob("sub-*_qsm.nii.gz"))


@pytest.mark.slow
def test_segmentation_trainers_refuse_a_qsm_only_dataset(nnunet_env):
    import torch

    from mqsm_nnunet.training.variants import mQSMTrainer_tiny

    folder = Path(nnunet_env.env["nnUNet_preprocessed"]) / FIELDS
    plans = json.loads((folder / "mQSMPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    with pytest.raises(RuntimeError, match="-tr mQSMTrainer_QSM"):
        mQSMTrainer_tiny(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
