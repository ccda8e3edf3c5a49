"""nnU-Net's dataset folders as our commands meet them: `$nnUNet_raw`, `DatasetXXX_NAME` names,
the dataset-ID lookup, the environment variables nnU-Net reads as process counts, and the folder
its trainer lookup needs (`nnUNet_extTrainer`).

nnU-Net answers an unknown ID or a bad `nnUNet_n_proc_DA` with a traceback deep inside its code;
our commands check these first, here, and say the cause and the fix in one line.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")
PROCESS_COUNT_VARIABLES = ("nnUNet_n_proc_DA", "nnUNet_def_n_proc")
"""nnU-Net reads these with int() and starts that many workers or threads (0 fails deep inside)."""

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
NNUNET_FOLDS = 5
"""nnU-Net's default cross-validation folds; fewer training cases cannot fill them."""


def trainer_folders() -> str:
    """What `nnUNet_extTrainer` must hold for nnU-Net to find our trainers: the user's setting, else
    the `trainers/` folder of this checkout (the README installs the package editable from it; the
    folder is not installed as a package, so that no generic top-level `trainers` name lands in
    site-packages).

    Raises:
        FileNotFoundError: neither is there, with the fix.
    """
    given = os.environ.get("nnUNet_extTrainer")
    if given:
        return given
    folder = Path(__file__).resolve().parents[2] / "trainers"
    if not (folder / "mqsm_trainers.py").is_file():
        raise FileNotFoundError(f"{folder}: no trainers folder here (a non-editable install?); export "
                                "nnUNet_extTrainer=/path/to/mqsm-nnunet/trainers")
    return str(folder)


def nnunet_raw_folder() -> Path:
    """$nnUNet_raw as an absolute path (created if missing).

    Raises:
        ValueError: the variable is not set.
    """
    value = os.environ.get("nnUNet_raw")
    if not value:
        raise ValueError("nnUNet_raw is not set; export nnUNet_raw=/path/to/nnUNet_raw (see nnU-Net's "
                         "documentation/setting_up_paths.md)")
    folder = Path(value).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """`DatasetXXX_NAME` (ID zero-padded to 3 digits), as nnU-Net resolves datasets by ID.

    Raises:
        ValueError: ID outside 1..999 or a name with characters other than letters, digits, '_', '-'.
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"`dataset_id` must be a dataset ID from 1 to 999; got {dataset_id!r}")
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"`name` must be a dataset name of letters, digits, '_' and '-'; got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def existing_datasets(root: Path, dataset_id: int) -> list[Path]:
    """Folders in `root` that nnU-Net would resolve for this ID (any name)."""
    if not root.is_dir():
        return []
    prefix = f"Dataset{dataset_id:03d}_"
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def resolve_dataset(dataset: str | int) -> str:
    """The `DatasetXXX_NAME` that nnU-Net finds for an ID (or a name, returned as is), with nnU-Net's
    own lookup over its three folders, its RuntimeError turned into a message with the fix.

    Raises:
        ValueError: not an ID or a name, no dataset with that ID, or more than one name for it.
    """
    text = str(dataset)
    if text.startswith("Dataset"):
        return text
    if not text.isdigit():
        raise ValueError(f"`dataset_id` must be a dataset ID (e.g. 501) or a name DatasetXXX_NAME; got {text!r}")
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets

    dataset_id = int(text)
    found = [str(name) for name in find_candidate_datasets(dataset_id)]  # nnU-Net's own lookup
    if not found:
        where = ", ".join(f"{variable}={os.environ.get(variable) or '(not set)'}" for variable in NNUNET_FOLDERS)
        raise ValueError(f"no dataset with ID {dataset_id} ({where}); check `dataset_id` and these variables, or "
                         "convert the data first (mqsm_convert)")
    if len(found) > 1:
        raise ValueError(f"more than one dataset name for ID {dataset_id}: {', '.join(found)}; nnU-Net needs one: "
                         "rename or remove the others")
    return found[0]


def check_process_counts() -> None:
    """Refuse `nnUNet_n_proc_DA` / `nnUNet_def_n_proc` values nnU-Net would fail on later.

    Raises:
        ValueError: a set variable that is not a whole number >= 1.
    """
    for variable in PROCESS_COUNT_VARIABLES:
        value = os.environ.get(variable)
        if value is not None and not (value.strip().isdigit() and int(value) >= 1):
            raise ValueError(f"{variable}={value!r}: nnU-Net reads it as a number of processes, which must be a "
                             f"whole number >= 1; unset it or set e.g. {variable}=1")


def folds_warning(n_training: int, qsm_only: bool = False) -> str | None:
    """Why and how to train differently when a dataset has fewer training cases than nnU-Net's
    `NNUNET_FOLDS` cross-validation folds (nnU-Net's split then fails with a scikit-learn error).
    `qsm_only`: a field-map dataset, whose training cases need no labels."""
    if n_training >= NNUNET_FOLDS:
        return None
    return (f"{n_training} training case(s), fewer than nnU-Net's {NNUNET_FOLDS} cross-validation folds: train "
            f"fold 'all' (nnUNetv2_train ID 3d_fullres all ...) or add {'' if qsm_only else 'labelled '}subjects")
