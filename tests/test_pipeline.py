"""End to end through the real CLIs: phantom -> mqsm_convert -> mqsm_plan_and_preprocess ->
`nnUNetv2_train ... -tr mQSMTrainer_tiny` (stock nnU-Net entry point) -> validation, `--c`, `--val`,
mqsm_predict (nnU-Net folders and in-house subject folders) and stock nnUNetv2_predict.

One module-scoped fixture trains once (a 32 x 32 x 24 phantom at 6 mm, 6 subjects, the last one
without labels so it lands in imagesTs); a second one caches the mqsm_predict output on imagesTs.
The `--c` / `--val` test works on a copy of the results folder so the other tests see the model
the fixture trained, whatever the test order.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import NNUNET_FOLDERS, convert_and_plan, run_cli, subprocess_env, tiny_phantom

from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

pytestmark = pytest.mark.slow

DATASET_ID = 501
DATASET = "Dataset501_Phantom"
TRAINER, PLANS, CONFIG = "mQSMTrainer_tiny", "mQSMPlans", "3d_fullres"
EPOCHS = 2                      # tiny trainer: epoch 0 reconstruction only, epoch 1 both tasks
N_SUBJECTS = 6                  # 5 labelled (nnU-Net's 5-fold split needs 5) + 1 unlabelled
TEST_CASE = f"sub-{N_SUBJECTS:03d}"
# Set in this process for the in-process mqsm_predict / trainer calls (nnunetv2.paths reads them on every use).
IN_PROCESS_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_def_n_proc")
MODEL_ARGS = ["-d", str(DATASET_ID), "-c", CONFIG, "-tr", TRAINER, "-p", PLANS]


@dataclass(frozen=True)
class Pipeline:
    root: Path
    cohort: Path
    raw: Path            # $nnUNet_raw/Dataset501_Phantom
    preprocessed: Path   # $nnUNet_preprocessed/Dataset501_Phantom
    results: Path        # $nnUNet_results
    env: dict
    train_output: str    # stdout + stderr of nnUNetv2_train

    @property
    def model_folder(self) -> Path:
        return self.results / DATASET / f"{TRAINER}__{PLANS}__{CONFIG}"

    @property
    def fold0(self) -> Path:
        return self.model_folder / "fold_0"

    def env_with(self, **changes: str) -> dict:
        return {**self.env, **changes}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    root = tmp_path_factory.mktemp("mqsm_pipeline")
    env = subprocess_env(root)
    folders = {name: root / name for name in NNUNET_FOLDERS}
    cohort = tiny_phantom(root / "cohort", N_SUBJECTS, env)
    (cohort / TEST_CASE / "labels.nii.gz").unlink()
    convert_and_plan(cohort, DATASET_ID, "Phantom", env)
    write_short_training(folders["nnUNet_preprocessed"] / DATASET / f"{PLANS}.json", ShortTraining(EPOCHS, 2))
    output = run_cli(["nnUNetv2_train", str(DATASET_ID), CONFIG, "0", "-tr", TRAINER, "-p", PLANS,
                      "-device", "cpu"], env)
    return Pipeline(root, cohort, folders["nnUNet_raw"] / DATASET, folders["nnUNet_preprocessed"] / DATASET,
                    folders["nnUNet_results"], env, output)


@pytest.fixture
def nnunet_env(pipeline, monkeypatch):
    """The pipeline's nnU-Net variables in this process."""
    for name in IN_PROCESS_VARS:
        monkeypatch.setenv(name, pipeline.env[name])
    return pipeline


def mqsm_predict(*args: str) -> int:
    from mqsm_nnunet.cli.predict import main

    return main([*args, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar",
                 *MODEL_ARGS])


@pytest.fixture(scope="module")
def prediction(pipeline) -> Path:
    """mqsm_predict on the converted imagesTs (the unlabelled subject)."""
    out = pipeline.root / "pred_mqsm"
    with pytest.MonkeyPatch.context() as patch:
        for name in IN_PROCESS_VARS:
            patch.setenv(name, pipeline.env[name])
        assert mqsm_predict("-i", str(pipeline.raw / "imagesTs"), "-o", str(out)) == 0
    return out


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def geometry(path: Path) -> tuple:
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def assert_qsm_map(qsm_file: Path, mask_file: Path) -> np.ndarray:
    """A float32 map, finite, exactly 0 outside the brain mask, not all 0 inside it."""
    image = sitk.ReadImage(str(qsm_file))
    assert image.GetPixelID() == sitk.sitkFloat32, image.GetPixelIDTypeAsString()
    qsm, mask = sitk.GetArrayFromImage(image), array(mask_file) > 0.5
    assert np.isfinite(qsm).all()
    assert mask.any() and (~mask).any()
    assert np.count_nonzero(qsm[~mask]) == 0
    assert np.count_nonzero(qsm[mask]) > 0.9 * mask.sum()
    return qsm


def assert_segmentation(seg_file: Path, n_labels: int) -> np.ndarray:
    seg = array(seg_file)
    assert np.issubdtype(seg.dtype, np.integer)
    assert seg.min() >= 0 and seg.max() < n_labels
    return seg


def n_labels(pipeline: Pipeline) -> int:
    return len(json.loads((pipeline.raw / "dataset.json").read_text())["labels"])


def validation_cases(pipeline: Pipeline) -> list[str]:
    splits = json.loads((pipeline.preprocessed / "splits_final.json").read_text())
    return splits[0]["val"]


def load_checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def no_files(folder: Path) -> bool:
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


# ----------------------------------------------------------------------------------------------------
# 1. training
# ----------------------------------------------------------------------------------------------------
def test_training_runs_to_the_end(pipeline):
    checkpoint = load_checkpoint(pipeline.fold0 / "checkpoint_final.pth")
    assert checkpoint["trainer_name"] == TRAINER
    assert checkpoint["current_epoch"] == EPOCHS
    keys = list(checkpoint["network_weights"])
    assert any(k.startswith("recon.") for k in keys), keys[:10]
    assert any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys)
    log = checkpoint["logging"]
    assert len(log["train_loss_rec"]) == EPOCHS and np.isfinite(log["train_loss_rec"]).all()
    assert len(log["val_loss_rec"]) == EPOCHS
    for name in ("progress.png", "progress_mqsm.png"):
        assert (pipeline.fold0 / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not (pipeline.fold0 / "checkpoint_latest.pth").exists()  # nnU-Net removes it after the last epoch
    logs = sorted(pipeline.fold0.glob("training_log_*.txt"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "L_rec" in text and f"Epoch {EPOCHS - 1}" in text and "Training done." in text


# ----------------------------------------------------------------------------------------------------
# 2. final validation
# ----------------------------------------------------------------------------------------------------
def test_validation_writes_segmentation_and_qsm_in_native_geometry(pipeline):
    validation = pipeline.fold0 / "validation"
    validation_qsm = pipeline.fold0 / "validation_qsm"
    cases = validation_cases(pipeline)
    assert cases
    for case in cases:
        reference = geometry(pipeline.raw / "imagesTr" / f"{case}_0000.nii.gz")
        assert geometry(validation / f"{case}.nii.gz") == reference
        assert geometry(validation_qsm / f"{case}_qsm.nii.gz") == reference
        assert_segmentation(validation / f"{case}.nii.gz", n_labels(pipeline))
        assert_qsm_map(validation_qsm / f"{case}_qsm.nii.gz", pipeline.raw / "imagesTr" / f"{case}_0003.nii.gz")
    # validation/ holds only segmentations, so nnU-Net's tools that score it keep working
    assert not list(validation.glob("*_qsm.nii.gz"))
    assert (validation / "summary.json").is_file()
    summary = json.loads((validation_qsm / "qsm_summary.json").read_text())
    assert sorted(summary["per_case"]) == sorted(cases)
    assert all(np.isfinite(v) for v in summary["mean"].values())
    assert not list(validation_qsm.glob(".*tmp*"))


# ----------------------------------------------------------------------------------------------------
# 3. --c and --val through nnUNetv2_train
# ----------------------------------------------------------------------------------------------------
def test_continue_and_validation_only(pipeline, tmp_path):
    results, preprocessed = tmp_path / "nnUNet_results", tmp_path / "nnUNet_preprocessed"
    shutil.copytree(pipeline.results, results)
    shutil.copytree(pipeline.preprocessed, preprocessed / DATASET)
    write_short_training(preprocessed / DATASET / f"{PLANS}.json", ShortTraining(EPOCHS + 1, 2))   # one more epoch
    fold0 = results / pipeline.fold0.relative_to(pipeline.results)
    train = ["nnUNetv2_train", str(DATASET_ID), CONFIG, "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu"]

    env = pipeline.env_with(nnUNet_results=str(results), nnUNet_preprocessed=str(preprocessed))
    output = run_cli([*train, "--c"], env)
    assert f"Epoch {EPOCHS}" in output and "Epoch 0" not in output  # resumed, not restarted
    assert "Training done." in output
    checkpoint = load_checkpoint(fold0 / "checkpoint_final.pth")
    assert checkpoint["current_epoch"] == EPOCHS + 1
    assert len(checkpoint["logging"]["train_loss_rec"]) == EPOCHS + 1  # the mQSM log was restored and extended

    validation, validation_qsm = fold0 / "validation", fold0 / "validation_qsm"
    shutil.rmtree(validation)
    shutil.rmtree(validation_qsm)
    final = hashlib.sha256((fold0 / "checkpoint_final.pth").read_bytes()).hexdigest()
    output = run_cli([*train, "--val"], env)
    assert "Epoch " not in output
    assert hashlib.sha256((fold0 / "checkpoint_final.pth").read_bytes()).hexdigest() == final
    for case in validation_cases(pipeline):
        assert geometry(validation_qsm / f"{case}_qsm.nii.gz") == geometry(
            pipeline.raw / "imagesTr" / f"{case}_0000.nii.gz")
        assert (validation / f"{case}.nii.gz").is_file()
    assert (validation / "summary.json").is_file() and (validation_qsm / "qsm_summary.json").is_file()


# ----------------------------------------------------------------------------------------------------
# 4. mqsm_predict vs stock nnUNetv2_predict
# ----------------------------------------------------------------------------------------------------
def test_mqsm_predict_matches_stock_segmentation(pipeline, prediction):
    images = pipeline.raw / "imagesTs"
    assert sorted(p.name for p in prediction.glob("*.nii.gz")) == [f"{TEST_CASE}.nii.gz", f"{TEST_CASE}_qsm.nii.gz"]
    assert not [p for p in prediction.iterdir() if p.name.startswith(".")]  # staging / tmp files removed
    for channel in range(4):
        reference = geometry(images / f"{TEST_CASE}_{channel:04d}.nii.gz")
        assert geometry(prediction / f"{TEST_CASE}.nii.gz") == reference
        assert geometry(prediction / f"{TEST_CASE}_qsm.nii.gz") == reference
    ours = assert_segmentation(prediction / f"{TEST_CASE}.nii.gz", n_labels(pipeline))
    assert_qsm_map(prediction / f"{TEST_CASE}_qsm.nii.gz", images / f"{TEST_CASE}_0003.nii.gz")

    stock = pipeline.root / "pred_stock"
    run_cli(["nnUNetv2_predict", "-i", str(images), "-o", str(stock), "-f", "0", "-device", "cpu",
             "-npp", "0", "-nps", "0", "--disable_progress_bar", *MODEL_ARGS], pipeline.env)
    assert not (stock / f"{TEST_CASE}_qsm.nii.gz").exists()
    assert geometry(stock / f"{TEST_CASE}.nii.gz") == geometry(prediction / f"{TEST_CASE}.nii.gz")
    assert np.array_equal(array(stock / f"{TEST_CASE}.nii.gz"), ours)


def test_mutual_attention_of_a_trained_model(nnunet_env):
    """The paper's Fig. 4 matrix: T1-stream x QSM-stream channels of the deepest mTrans block, tanh-bounded."""
    from mqsm_nnunet.predict.attention import mutual_attention_of_case

    pipeline = nnunet_env
    matrix = mutual_attention_of_case(pipeline.model_folder, sorted((pipeline.raw / "imagesTs").glob("*.nii.gz")),
                                      fold=0)
    plans = json.loads((pipeline.model_folder / "plans.json").read_text())["configurations"][CONFIG]
    deepest = plans["architecture"]["arch_kwargs"]["features_per_stage"][-1]
    assert matrix.shape == (deepest // 2, deepest // 2)
    assert np.isfinite(matrix).all() and np.abs(matrix).max() <= 1.0 and np.abs(matrix).max() > 0


def test_results_folder_alone_rebuilds_the_short_variant(pipeline, prediction, tmp_path, monkeypatch):
    """The results folder's plans.json names the variant's own network and length, and both predictors
    rebuild it from that folder alone (no preprocessed or raw dataset around)."""
    plans = json.loads((pipeline.model_folder / "plans.json").read_text())["configurations"][CONFIG]
    arch = plans["architecture"]["arch_kwargs"]
    assert (arch["recon_width"], arch["recon_blocks"], arch["recon_dilations"]) == (8, 2, [1, 2, 4, 8])
    assert arch["features_per_stage"][0] == 16 and max(arch["features_per_stage"]) <= 32
    assert plans["mqsm_short_training"] == {"epochs": EPOCHS, "iterations_per_epoch": 2, "snapshot_every": 0,
                                            "cpu_bf16": False, "initial_weights": None}

    results, images = tmp_path / "results", tmp_path / "images"
    shutil.copytree(pipeline.model_folder, results / DATASET / pipeline.model_folder.name)
    shutil.copytree(pipeline.raw / "imagesTs", images)
    empty = {"nnUNet_raw": tmp_path / "raw", "nnUNet_preprocessed": tmp_path / "pre"}
    for folder in empty.values():
        folder.mkdir()
    env = pipeline.env_with(nnUNet_results=str(results), **{k: str(v) for k, v in empty.items()})

    stock = tmp_path / "stock"
    run_cli(["nnUNetv2_predict_from_modelfolder", "-i", str(images), "-o", str(stock), "-m",
             str(results / DATASET / pipeline.model_folder.name), "-f", "0", "-device", "cpu", "-npp", "1", "-nps",
             "1", "--disable_progress_bar"], env)
    assert np.array_equal(array(stock / f"{TEST_CASE}.nii.gz"), array(prediction / f"{TEST_CASE}.nii.gz"))

    for name in IN_PROCESS_VARS:
        monkeypatch.setenv(name, env[name])
    ours = tmp_path / "ours"
    assert mqsm_predict("-i", str(images), "-o", str(ours)) == 0
    assert np.array_equal(array(ours / f"{TEST_CASE}.nii.gz"), array(prediction / f"{TEST_CASE}.nii.gz"))
    np.testing.assert_allclose(array(ours / f"{TEST_CASE}_qsm.nii.gz"), array(prediction / f"{TEST_CASE}_qsm.nii.gz"),
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# 5. in-house subject folders
# ----------------------------------------------------------------------------------------------------
def test_inhouse_subject_folders_give_the_same_outputs(nnunet_env, prediction, tmp_path):
    pipeline = nnunet_env
    subject = tmp_path / "cohort" / TEST_CASE
    subject.mkdir(parents=True)
    for name in ("t1.nii.gz", "field.nii.gz", "mask.nii.gz"):
        shutil.copy(pipeline.cohort / TEST_CASE / name, subject / name)
    out = tmp_path / "pred"
    assert mqsm_predict("-i", str(subject.parent), "-o", str(out)) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz")) == [
        f"{TEST_CASE}.nii.gz", f"{TEST_CASE}_qsm.nii.gz"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # staging folder removed
    for name in (f"{TEST_CASE}.nii.gz", f"{TEST_CASE}_qsm.nii.gz"):
        assert geometry(out / name) == geometry(subject / "field.nii.gz")
    assert np.array_equal(array(out / f"{TEST_CASE}.nii.gz"), array(prediction / f"{TEST_CASE}.nii.gz"))
    np.testing.assert_allclose(array(out / f"{TEST_CASE}_qsm.nii.gz"), array(prediction / f"{TEST_CASE}_qsm.nii.gz"),
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# 6. bad input
# ----------------------------------------------------------------------------------------------------
def test_missing_fold_checkpoint_is_named(nnunet_env, tmp_path, capsys):
    from mqsm_nnunet.cli.predict import main

    out = tmp_path / "pred"
    status = main(["-i", str(nnunet_env.raw / "imagesTs"), "-o", str(out), "-f", "3", "-device", "cpu", *MODEL_ARGS])
    assert status != 0
    message = capsys.readouterr().err
    assert "fold_3/checkpoint_final.pth" in message and "fold_0" in message  # what is missing, what exists
    assert no_files(out)


def test_missing_channel_file_is_named(nnunet_env, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for channel in range(3):
        name = f"{TEST_CASE}_{channel:04d}.nii.gz"
        shutil.copy(nnunet_env.raw / "imagesTs" / name, images / name)
    out = tmp_path / "pred"
    assert mqsm_predict("-i", str(images), "-o", str(out)) != 0
    message = capsys.readouterr().err
    assert f"{TEST_CASE}_0003.nii.gz" in message
    assert no_files(out)
    assert not list(out.rglob("*_qsm.nii.gz")) and not list(out.rglob("*tmp*"))


# ----------------------------------------------------------------------------------------------------
# 7. 2D configuration
# ----------------------------------------------------------------------------------------------------
def test_trainer_refuses_2d_configuration(nnunet_env, tmp_path, monkeypatch):
    import torch

    from mqsm_nnunet.training.trainer import mQSMTrainer

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans = json.loads((nnunet_env.preprocessed / f"{PLANS}.json").read_text())
    plans["continue_training"] = False  # nnU-Net 2.8's trainer pops this; nnUNetv2_train's get_trainer_from_args sets it
    dataset_json = json.loads((nnunet_env.preprocessed / "dataset.json").read_text())
    assert "2d" in plans["configurations"]
    with pytest.raises(RuntimeError) as error:
        mQSMTrainer(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
    message = str(error.value)
    assert "'2d'" in message and "3D" in message and "3d_fullres" in message
    assert not any(tmp_path.iterdir())  # refused before nnU-Net's constructor starts a log in nnUNet_results
