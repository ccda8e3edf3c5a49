"""Models that ship inside the package (nothing is downloaded at run time).

`demo_model/`: mQSMTrainer_tiny_inputFusionMap pretrained on the real-anatomy cohort by
`scripts/pretrain_demo_model.py` (its `record.json` gives the command, seed, length and machine): the
start the demo fine-tunes from, and a start for users' trainings (nnU-Net's `-pretrained_weights`).
`qsm_net/`: the learned QSM of `mqsm_qsm`, made by `scripts/pretrain_qsm_net.py` (read and written by
`learned_qsm.inference`; its `record.json` likewise).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from mqsm_nnunet.io.files import write_text_atomic

PRETRAINED_DIR = Path(__file__).resolve().parent / "demo_model"
PRETRAINED_FILES = {"weights": "checkpoint.pth", "plans": "plans.json", "dataset": "dataset.json",
                    "record": "record.json"}


def pretrained_file(role: str) -> Path:
    """The shipped demo model's file for `role` (a key of `PRETRAINED_FILES`).

    Raises:
        FileNotFoundError: this installation has no pretrained model (run scripts/pretrain_demo_model.py).
    """
    path = PRETRAINED_DIR / PRETRAINED_FILES[role]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained demo model in this installation; make it with "
                                "scripts/pretrain_demo_model.py, or run the demo with --from-scratch")
    return path


ADOPTED_KEYS = ("architecture", "patch_size", "batch_size")
"""What a dataset's plans take from the pretrained model's so that its weights fit: the network and
what it is trained on. What decides the preprocessed data must already agree (`MUST_AGREE`)."""
MUST_AGREE = ("spacing", "normalization_schemes", "use_mask_for_norm")


def adopt_pretrained_plans(plans_file: str | os.PathLike, configuration: str = "3d_fullres") -> Path:
    """Rewrite a preprocessed plans file so the shipped model's weights fit it: its configuration takes
    the pretrained model's network, patch and batch size (`ADOPTED_KEYS`).

    Raises:
        FileNotFoundError: no plans file, or no pretrained model in this installation.
        ValueError: spacing or normalization differ from the pretrained model's (the preprocessed data
            would not be what it was trained on; resample the cohort to its 2 mm grid or train from scratch).
    """
    plans_file = Path(plans_file)
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no plans file; run mqsm_plan_and_preprocess first")
    plans = json.loads(plans_file.read_text())
    shipped = json.loads(pretrained_file("plans").read_text())["configurations"][configuration]
    ours = plans["configurations"][configuration]
    differing = [key for key in MUST_AGREE if ours.get(key) != shipped.get(key)]
    if differing:
        raise ValueError(f"{plans_file}: {', '.join(differing)} differ from the pretrained model's "
                         f"({', '.join(f'{k}: {ours.get(k)} vs {shipped.get(k)}' for k in differing)}); the pretrained "
                         "model needs data preprocessed as its own (2 mm, its channels); train from scratch instead")
    ours.update({key: shipped[key] for key in ADOPTED_KEYS})
    return write_text_atomic(plans_file, json.dumps(plans, indent=4))


def check_same_labels(dataset_json: Mapping) -> None:
    """Raises ValueError unless a dataset's labels and channels are the pretrained model's (its outputs
    and inputs mean the same)."""
    shipped = json.loads(pretrained_file("dataset").read_text())
    for key in ("labels", "channel_names"):
        if dataset_json.get(key) != shipped.get(key):
            raise ValueError(f"the dataset's {key} are not the pretrained model's ({pretrained_file('dataset')}); "
                             "fine-tuning keeps its outputs only for the same regions: train from scratch instead")


def pretrained_model_folder(parent: str | os.PathLike) -> Path:
    """The shipped model as a folder nnU-Net's predictor reads (plans.json, dataset.json,
    fold_all/checkpoint_final.pth), made of links under `parent`; returns the folder."""
    folder = Path(parent) / "mqsm_pretrained_model"
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    for role, name in (("plans", "plans.json"), ("dataset", "dataset.json"), ("weights", "fold_all/checkpoint_final.pth")):
        link = folder / name
        if not link.exists():
            link.symlink_to(pretrained_file(role))
    return folder
