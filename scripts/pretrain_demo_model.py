"""Pretrain the model the demo fine-tunes from, on the real-anatomy cohort, and ship it in the package.

Why: on a 2-core CPU no 15-minute training from scratch segments 36 real-anatomy regions well (a
step of the demo's network at 2 mm takes about 2 s); a model pretrained on subjects drawn from the
embedded anatomies gives the demo, and users' own trainings (nnU-Net's -pretrained_weights), a start.
The anatomies the demo holds out with its default seed (and its registration template) are left out
here, so the demo's held-out figures are on brains this model never saw.

What it does, reproducibly (command, seed and length are recorded in the shipped MODEL.md):
  1. `write_real_cohort`: --subjects subjects of seed --seed, 2 mm, from the embedded anatomies minus
     `HELD_OUT` (each drawn with its own random deformation, contrast, B0 tilt none: B0 along world z);
  2. mqsm_convert (all subjects train) and mqsm_plan_and_preprocess;
  3. the plans' patch set to --patch, the short training length and `cpu_bf16` written into them;
  4. mQSMTrainer_tiny_inputFusionMap trained on fold "all" through nnU-Net's trainer API (the final
     sliding-window validation over the training cases is skipped: it scores nothing new);
  5. the final weights (no optimizer state), plans and dataset.json copied to `mqsm_nnunet/pretrained/`.

Run from the repository root (about --epochs x --iterations x 2.3 s on a 2-core AVX512-BF16 CPU):
    python scripts/pretrain_demo_model.py --work /tmp/mqsm_pretrain [--subjects 26 --epochs 40 --iterations 50]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from mqsm_nnunet.pretrained import PRETRAINED_DIR, PRETRAINED_FILES  # noqa: E402

DATASET_ID, DATASET_NAME = 991, "MQSMPretrain"
TRAINER, PLANS = "mQSMTrainer_tiny_inputFusionMap", "mQSMPlans"
HELD_OUT = ("anatomy_03", "anatomy_06", "anatomy_16")
"""The demo's default seed (0) holds out subjects from anatomy_06 and anatomy_03 and registers the
template made of anatomy_16: none of them is seen here."""


def export(model_folder: Path, checkpoint_name: str, args: argparse.Namespace) -> dict:
    """Copy a checkpoint's weights (the optimizer's state left out), the plans and dataset.json of a
    trained model folder into the package, with record.json (how it was made); returns the record."""
    import torch

    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    checkpoint = torch.load(model_folder / "fold_all" / checkpoint_name, map_location="cpu", weights_only=False)
    log = checkpoint["logging"]
    kept = {k: v for k, v in checkpoint.items() if k not in ("optimizer_state", "grad_scaler_state", "logging")}
    torch.save(kept, PRETRAINED_DIR / PRETRAINED_FILES["weights"])
    shutil.copy(model_folder / "plans.json", PRETRAINED_DIR / PRETRAINED_FILES["plans"])
    shutil.copy(model_folder / "dataset.json", PRETRAINED_DIR / PRETRAINED_FILES["dataset"])
    epochs_done = len(log["epoch_end_timestamps"])   # (the checkpoint's current_epoch is nnU-Net's resume point)
    record = {
        "command": "python scripts/pretrain_demo_model.py " + " ".join(sys.argv[1:]),
        "subjects": args.subjects, "seed": args.seed, "held_out": list(HELD_OUT),
        "anatomies": [f"anatomy_{k:02d}" for k in range(1, 17) if f"anatomy_{k:02d}" not in HELD_OUT],
        "epochs": epochs_done, "planned_epochs": args.epochs, "iterations_per_epoch": args.iterations,
        "checkpoint": checkpoint_name, "patch": args.patch, "cpu_bf16": True, "trainer": TRAINER, "plans": PLANS,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
                   f"{platform.python_version()}, torch {torch.__version__}",
        "seconds_training": round(log["epoch_end_timestamps"][epochs_done - 1] - log["epoch_start_timestamps"][0]),
        "ema_pseudo_dice": float(log["ema_fg_dice"][epochs_done - 1]),
    }
    (PRETRAINED_DIR / PRETRAINED_FILES["record"]).write_text(json.dumps(record, indent=2) + "\n")
    return record


def use_work_folder(work: Path) -> dict[str, Path]:
    """nnU-Net's three folders under `work`, set in this process's environment (and its children's),
    with the settings of a 2-core CPU run; returns them."""
    env = {"nnUNet_raw": work / "nnUNet_raw", "nnUNet_preprocessed": work / "nnUNet_preprocessed",
           "nnUNet_results": work / "nnUNet_results"}
    for folder in env.values():
        folder.mkdir(parents=True, exist_ok=True)
    from mqsm_nnunet.io.nnunet_datasets import trainer_folders

    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.update({"nnUNet_extTrainer": trainer_folders(), "nnUNet_n_proc_DA": "1", "nnUNet_compile": "false",
                       "nnUNet_def_n_proc": "1"})
    return env


def prepare_dataset(work: Path, subjects: int, seed: int) -> None:
    """The pretraining cohort (`subjects` of `seed`, 2 mm, anatomies minus HELD_OUT) under work/cohort,
    converted to Dataset991 and preprocessed with mQSMPlans (environment from `use_work_folder`)."""
    from mqsm_nnunet.conversion import convert_cohort
    from mqsm_nnunet.phantom.cohort import write_real_cohort
    from mqsm_nnunet.phantom.label_maps import embedded_anatomies, label_map_stem

    cohort = work / "cohort"
    kept = [label_map_stem(p) for p in embedded_anatomies() if label_map_stem(p) not in HELD_OUT]
    write_real_cohort(cohort, subjects, seed=seed, anatomies=kept, overwrite=True, progress=True)
    convert_cohort(cohort, DATASET_ID, DATASET_NAME, overwrite=True, num_processes=2, progress=True)
    subprocess.run([str(Path(sys.executable).parent / "mqsm_plan_and_preprocess"), "-d", str(DATASET_ID), "-np", "2",
                    "--no_pbar", "--clean"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="working folder (cohort, nnU-Net folders); required unless --export-only")
    parser.add_argument("--subjects", type=int, default=26)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--snapshot-every", type=int, default=5)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--export-only", type=Path, metavar="MODEL_FOLDER",
                        help="only copy a trained model folder (nnUNet_results/.../<trainer>__<plans>__3d_fullres) in, "
                             "with the other flags as the training had them")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth",
                        help="with --export-only: which checkpoint (e.g. checkpoint_epoch30.pth of a stopped run)")
    args = parser.parse_args()
    if args.export_only is not None:
        print(json.dumps(export(args.export_only, args.checkpoint, args), indent=2))
        return
    if args.work is None:
        parser.error("--work is required")
    env = use_work_folder(args.work.resolve())
    prepare_dataset(args.work.resolve(), args.subjects, args.seed)

    from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

    preprocessed = env["nnUNet_preprocessed"] / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    plans_file = preprocessed / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = list(args.patch)
    plans_file.write_text(json.dumps(plans, indent=4))
    write_short_training(plans_file, ShortTraining(args.epochs, args.iterations, args.snapshot_every, cpu_bf16=True))

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", "all", TRAINER, PLANS, device=torch.device("cpu"))
    trainer.run_training()
    print(json.dumps(export(Path(trainer.output_folder_base), "checkpoint_final.pth", args), indent=2))


if __name__ == "__main__":
    main()
