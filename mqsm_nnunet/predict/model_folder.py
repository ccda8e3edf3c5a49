"""Checks on a trained-model folder before prediction starts (clear errors instead of tracebacks)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mqsm_nnunet.io.dataset_metadata import MQSMChannels


def check_model_folder(model_folder: Path, folds: Sequence[int | str], checkpoint_name: str) -> dict:
    """The model's dataset.json, after checking the folder, its dataset.json (valid JSON with the
    mqsm block) and plans.json, and the checkpoint of every requested fold.

    Raises:
        FileNotFoundError / ValueError: naming what is missing in `model_folder` and the argument to fix.
    """
    if not model_folder.is_dir():
        raise FileNotFoundError(f"{model_folder}: no trained model here; check `dataset_id`, `trainer`, `plans` and "
                                "`configuration` (and nnUNet_results), or train first")
    for name in ("dataset.json", "plans.json"):
        if not (model_folder / name).is_file():
            raise FileNotFoundError(f"{model_folder / name}: missing; this folder was not written by nnU-Net training")
    try:
        dataset_json = json.loads((model_folder / "dataset.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{model_folder / 'dataset.json'}: not valid JSON ({error})") from None
    MQSMChannels.from_dataset_json(dataset_json)
    missing = [f"fold_{f}/{checkpoint_name}" for f in folds
               if not (model_folder / f"fold_{f}" / checkpoint_name).is_file()]
    if missing:
        present = sorted(p.parent.name for p in model_folder.glob(f"fold_*/{checkpoint_name}"))
        raise FileNotFoundError(
            f"{model_folder}: no checkpoint {', '.join(missing)}; folds with {checkpoint_name}: "
            f"{', '.join(present) if present else 'none'} (pick folds with `folds`, or another checkpoint with "
            "`checkpoint_name`)")
    return dataset_json
