"""What several test modules share (no tests here): running the venv's commands in a subprocess, the
environment of a private nnU-Net installation for them, a stock nnU-Net 3d_fullres configuration,
and a small ellipsoid susceptibility phantom for the dipole inversions."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def subprocess_env(root: Path, extra_trainer_folders: Sequence[Path] = ()) -> dict:
    """os.environ plus nnU-Net's three folders (created) under `root`, our trainers (and any
    `extra_trainer_folders`) for nnU-Net's lookup, one worker per pool and no torch.compile: what a
    subprocess running the real commands on a small CPU needs."""
    folders = {name: root / name for name in NNUNET_FOLDERS}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in folders.items()},
           "nnUNet_extTrainer": os.pathsep.join(map(str, [REPO / "trainers", *extra_trainer_folders])),
           "nnUNet_n_proc_DA": "1",      # data augmentation workers
           "nnUNet_def_n_proc": "1"}     # validation export / metric pools (default 8 spawned workers)
    env.pop("nnUNet_compile", None)
    return env


TINY_GRID = ("--shape", "32", "32", "24", "--voxel-size", "6", "6", "6")
"""The phantom grid of the end-to-end tests: 32 x 32 x 24 voxels of 6 mm (a training step in well
under a second on 2 cores)."""


def tiny_phantom(cohort: Path, subjects: int, env: dict, *extra: str) -> Path:
    """`mqsm_phantom` on the tiny grid (`extra`: more of its flags); returns the cohort folder."""
    run_cli(["mqsm_phantom", "-o", str(cohort), "-n", str(subjects), "--geometric", *TINY_GRID, "--quiet", *extra], env)
    return cohort


def convert_and_plan(cohort: Path, dataset_id: int, name: str, env: dict, *convert_flags: str) -> None:
    """`mqsm_convert` then `mqsm_plan_and_preprocess`, one process each, as a user runs them."""
    run_cli(["mqsm_convert", "-i", str(cohort), "-d", str(dataset_id), "-n", name, "-np", "1", *convert_flags], env)
    run_cli(["mqsm_plan_and_preprocess", "-d", str(dataset_id), "-np", "1", "--no_pbar"], env)


def run_cli(args: list[str], env: dict, timeout: int = 900, expect: int = 0) -> str:
    """Run a console script of the venv; return its stdout + stderr, fail with its tail unless it
    exits with `expect`."""
    result = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=env["nnUNet_results"])
    output = result.stdout + result.stderr
    assert result.returncode == expect, f"{' '.join(args)} exited with {result.returncode}:\n{output[-6000:]}"
    return output


STAGES = 4
STOCK_3D = {
    "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
    "patch_size": [16, 32, 32], "median_image_size_in_voxels": [16, 32, 32], "spacing": [3.0, 3.0, 3.0],
    "normalization_schemes": ["ZScoreNormalization"] + ["NoNormalization"] * 3,
    "use_mask_for_norm": [False] * 4, "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
    "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {}, "batch_dice": False,
    "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": STAGES, "features_per_stage": [32, 64, 128, 256],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2, 2], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
}


QSM_SHAPE = (32, 32, 24)
QSM_VOXEL_SIZE = (1.0, 1.0, 1.5)
QSM_B0_DIR = (0.1, 0.2, 1.0)  # oblique, as an oblique acquisition gives


def _ellipsoid(center, radii):
    import numpy as np

    idx = np.indices(QSM_SHAPE).astype(float)
    return sum(((idx[a] - center[a]) / radii[a]) ** 2 for a in range(3)) <= 1


def ellipsoid_qsm_phantom():
    """(chi, mask, noiseless field) in ppm: a brain-like ellipsoid (-20 ppb) holding deep-grey-matter-like
    ellipsoids and a 'vein', field by `physics.forward_field` on `QSM_SHAPE`."""
    import numpy as np

    from mqsm_nnunet import physics

    c = [(n - 1) / 2 for n in QSM_SHAPE]
    mask = _ellipsoid(c, (13, 13, 9))
    chi = np.zeros(QSM_SHAPE)
    chi[mask] = -0.02
    chi[_ellipsoid((c[0] - 5, c[1] + 2, c[2]), (3, 2.5, 2))] = 0.13
    chi[_ellipsoid((c[0] + 5, c[1] + 2, c[2]), (3, 2.5, 2))] = 0.05
    chi[_ellipsoid((c[0], c[1] - 6, c[2] + 1), (4, 3, 2))] = 0.03
    chi[_ellipsoid((c[0] + 1, c[1] - 1, c[2] - 3), (1.5, 1.5, 1.5))] = 0.19
    return chi, mask, physics.forward_field(chi, QSM_VOXEL_SIZE, QSM_B0_DIR)
