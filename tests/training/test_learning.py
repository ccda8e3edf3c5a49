"""Tests that fail when learning breaks, on the real nnU-Net trainer, data loader and augmentation.

One module fixture builds a tiny noiseless phantom dataset through the real CLIs (phantom ->
mqsm_convert -> mqsm_plan_and_preprocess) with an oblique B0 and `--supersampling 1` (the field is
the grid's exact dipole model of chi, so the truth's misfit can be held to zero), and a twin dataset whose QSM- channel
holds the true susceptibility (so the truth travels through preprocessing and augmentation exactly
like the network's own QSM would). The trainer is built in this process from that dataset.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, subprocess_env, tiny_phantom

pytestmark = pytest.mark.slow

B0_DIR = (0.0, 0.42, 0.91)          # about 25 degrees oblique
N_SUBJECTS = 5
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_def_n_proc")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """(env, id of the real dataset, id of the dataset with the true chi in the QSM- channel)."""
    root = tmp_path_factory.mktemp("learning")
    env = subprocess_env(root)
    cohort = tiny_phantom(root / "cohort", N_SUBJECTS, env, "--b0-dir", *map(str, B0_DIR), "--noise", "0",
                          "--supersampling", "1", "--seed", "41")
    for dataset_id, name in ((771, "Learn"), (772, "Truth")):
        run_cli(["mqsm_convert", "-i", str(cohort), "-d", str(dataset_id), "-n", name, "-np", "1"], env)
    truth_raw = root / "nnUNet_raw" / "Dataset772_Truth"
    channels = json.loads((truth_raw / "dataset.json").read_text())["mqsm"]["channels"]
    for case in sorted(p.name for p in cohort.glob("sub-*")):
        target = truth_raw / "imagesTr" / f"{case}_{channels['qsm_minus']:04d}.nii.gz"
        target.write_bytes((cohort / case / "chi.nii.gz").read_bytes())   # same grid and affine as the field
    for dataset_id in (771, 772):
        run_cli(["mqsm_plan_and_preprocess", "-d", str(dataset_id), "-np", "1", "--no_pbar"], env)
    return env, cohort


@pytest.fixture
def nnunet_env(datasets, monkeypatch):
    env, cohort = datasets
    for name in NNUNET_VARS:
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")   # augmentation in this process: batches on demand
    return cohort


def _trainer(trainer_class, dataset_id: int, fold="all"):
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.paths import nnUNet_preprocessed

    folder = Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(dataset_id)
    plans = {**json.loads((folder / "mQSMPlans.json").read_text()), "continue_training": False}  # as nnUNetv2_train
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = trainer_class(plans, "3d_fullres", fold, dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    return trainer


def test_true_chi_explains_the_augmented_field_only_with_the_b0_the_loss_uses(nnunet_env):
    """Noiseless phantom, true chi through preprocessing and the training augmentation. Exact patches
    (crops; no mirroring is trained): the misfit of the truth with the loss's B0 is near zero, large
    with a wrong B0. Rotated and scaled patches (resampled, so the misfit only drops to a few %, and
    the loss leaves them out): the tracked B0 still explains the field far better than the unrotated one."""
    from mqsm_nnunet.training.augmentation import N_COORDINATE_CHANNELS
    from mqsm_nnunet.training.trainer import mQSMTrainer

    trainer = _trainer(mQSMTrainer, 772)
    loader, _ = trainer.get_dataloaders()
    spatial = _spatial_transform(loader)
    # Seeded (the augmentation runs in this process, nnUNet_n_proc_DA=0, so the seeds reach it): the
    # ratio below depends on how far each patch was turned; runs have given medians of 2.5 to over 3.
    # A B0 that did not follow the rotation would give about 1.
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    loss, spacing = trainer.data_consistency_loss, trainer.configuration_manager.spacing
    misfits = {}
    for mode, p in (("exact", 0.0), ("resampled", 1.0)):
        spatial.p_rotation = spatial.p_scaling = p
        for _ in range(3):
            batch = next(loader)
            data = batch["data"]
            data, coordinates = data[:, :-N_COORDINATE_CHANNELS], data[:, -N_COORDINATE_CHANNELS:]
            chi, field, mask = trainer._split_physical(data)   # this dataset carries the true chi as "QSM-"
            b0_dir, weights = trainer.patch_b0_dir(batch["keys"], coordinates)
            assert weights.tolist() == [1.0 if mode == "exact" else 0.0] * len(weights)
            source, _ = trainer.patch_b0_dir(batch["keys"], None)
            other = torch.linalg.cross(source, torch.tensor([[1.0, 0.0, 0.0]]).expand_as(source))
            for i in range(len(b0_dir)):
                one = (chi[i:i + 1], field[i:i + 1], mask[i:i + 1])
                misfits.setdefault(mode, []).append(
                    [float(loss(*one, direction[i:i + 1], spacing)) for direction in
                     (b0_dir, source, other / other.norm(dim=1, keepdim=True))])
    exact, resampled = np.array(misfits["exact"]), np.array(misfits["resampled"])
    # Relative squared misfit: 0 = the field explained exactly, 1 = not at all (QSM = 0).
    assert exact[:, 0].max() < 0.02, exact
    assert exact[:, 2].min() > 0.3, exact
    assert np.median(resampled[:, 1] / resampled[:, 0]) > 2, resampled
    assert resampled[:, 2].min() > 0.3, resampled


def _spatial_transform(loader):
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    data_loader = loader.data_loader if hasattr(loader, "data_loader") else loader
    spatial = [t for t in data_loader.transforms.transforms if isinstance(t, SpatialTransform)]
    assert spatial, "the training pipeline has no SpatialTransform"
    return spatial[0]


def _nrmse_on_case(trainer, case: str, cohort: Path) -> tuple[float, float]:
    """(NRMSE of the network's QSM, NRMSE of QSM-) against the true chi on the case's whole volume."""
    from mqsm_nnunet.metrics import nrmse

    data, _, _, properties = trainer.dataset_class(trainer.preprocessed_dataset_folder, [case]).load_case(case)
    data = torch.from_numpy(np.asarray(data[:]))
    bbox = properties["bbox_used_for_cropping"]
    chi = np.asarray(__import__("SimpleITK").GetArrayFromImage(
        __import__("SimpleITK").ReadImage(str(cohort / case / "chi.nii.gz"))))
    chi = chi[tuple(slice(a, b) for a, b in bbox)]
    c = trainer.channels
    mask = data[c.mask].numpy() > 0.5
    trainer.network.eval()
    with torch.no_grad():
        qsm = trainer.mqsm_network.reconstruct(data[None])[0, 0].numpy()
    return nrmse(qsm * mask, chi, mask), nrmse(data[c.qsm_minus].numpy() * mask, chi, mask)


@pytest.mark.parametrize("cpu_bf16", [False, True], ids=["float32", "bfloat16"])
def test_a_short_cpu_training_brings_the_qsm_closer_to_the_truth_than_qsm_minus(nnunet_env, cpu_bf16):
    """Also with the forward pass in bfloat16 (the demo's `cpu_bf16`): the QSM still learns."""
    from mqsm_nnunet.training.variants import mQSMTrainer_tiny

    cohort = nnunet_env
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)   # 40 unseeded steps once moved the float32 run only 0.16 points
    trainer = _trainer(mQSMTrainer_tiny, 771)
    trainer.cpu_bf16 = cpu_bf16
    trainer.on_train_start()
    before, qsm_minus = _nrmse_on_case(trainer, "sub-001", cohort)
    assert before == pytest.approx(qsm_minus, abs=1e-4)          # an untrained net returns QSM-
    trainer.network.train()
    for _ in range(40):
        trainer.train_step(next(trainer.dataloader_train))
    after, _ = _nrmse_on_case(trainer, "sub-001", cohort)
    trainer.on_train_end()
    print(f"NRMSE against the truth ({'bfloat16' if cpu_bf16 else 'float32'}): QSM- {qsm_minus:.2f} %, "
          f"after 40 steps {after:.2f} %")
    assert after < qsm_minus - 0.25, (after, qsm_minus)   # a learning rate of 0 leaves it equal


def test_channels_last_layout_changes_the_speed_not_the_outputs(nnunet_env):
    """The tiny trainer's weights and batches are channels-last (oneDNN is faster on it); the same
    weights in nnU-Net's contiguous layout give the same segmentation and QSM on the same batch."""
    import copy

    from mqsm_nnunet.training.variants import mQSMTrainer_tiny

    trainer = _trainer(mQSMTrainer_tiny, 771)
    trainer.on_train_start()
    batch = next(trainer.dataloader_train)
    data, _ = trainer.batch_images(batch)
    trainer.on_train_end()
    channels_last = trainer.mqsm_network.eval()
    convs = [m for m in channels_last.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    assert data.is_contiguous(memory_format=torch.channels_last_3d)
    contiguous = copy.deepcopy(channels_last).to(memory_format=torch.contiguous_format)
    assert all(m.weight.is_contiguous() for m in contiguous.modules() if isinstance(m, torch.nn.Conv3d))
    with torch.no_grad():
        (seg_a, *_), qsm_a = channels_last(data, with_qsm=True)
        (seg_b, *_), qsm_b = contiguous(data.contiguous(), with_qsm=True)
    torch.testing.assert_close(seg_a, seg_b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(qsm_a, qsm_b, rtol=1e-4, atol=1e-6)


def test_learning_rates_follow_each_tasks_schedule_epoch_by_epoch(nnunet_env):
    from mqsm_nnunet.training.trainer import mQSMTrainer

    class Scheduled(mQSMTrainer):
        segmentation_start_epoch = 2
        reconstruction_freeze_epoch = 4
        reconstruction_lr_factor = 0.5

    trainer = _trainer(Scheduled, 771)
    trainer.num_epochs = 6
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    seen = []
    for epoch in range(6):
        trainer.current_epoch = epoch
        trainer.lr_scheduler.step(epoch)
        seen.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
    poly = [trainer.initial_lr * (1 - e / 6) ** 0.9 for e in range(6)]
    for epoch, lrs in enumerate(seen):
        assert lrs["segmentation"] == pytest.approx(0.0 if epoch < 2 else poly[epoch])
        assert lrs["reconstruction"] == pytest.approx(0.0 if epoch >= 4 else 0.5 * poly[epoch])


def test_fewer_cases_than_folds_is_refused_with_the_fix(nnunet_env, tmp_path):
    import shutil

    from nnunetv2.paths import nnUNet_preprocessed

    from mqsm_nnunet.training.variants import mQSMTrainer_tiny

    trainer = _trainer(mQSMTrainer_tiny, 771, fold=0)
    four_cases = tmp_path / "Dataset771_Learn"
    shutil.copytree(Path(nnUNet_preprocessed) / "Dataset771_Learn", four_cases)
    (four_cases / "splits_final.json").unlink(missing_ok=True)
    for leftover in (four_cases / Path(trainer.preprocessed_dataset_folder).name).glob("sub-005*"):
        leftover.unlink()
    trainer.preprocessed_dataset_folder_base = str(four_cases)
    trainer.preprocessed_dataset_folder = str(four_cases / Path(trainer.preprocessed_dataset_folder).name)
    with pytest.raises(RuntimeError, match=r"cannot train fold 0: 4 training case\(s\).*fold 'all'"):
        trainer.do_split()


def test_the_short_recipe_trains_and_predicts_without_mirroring(nnunet_env):
    from mqsm_nnunet.training.variants import mQSMTrainer_tiny

    trainer = _trainer(mQSMTrainer_tiny, 771)
    *_, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert mirror_axes is None and trainer.inference_allowed_mirroring_axes is None
