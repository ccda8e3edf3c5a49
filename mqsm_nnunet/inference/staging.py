"""Inputs for prediction: check nnU-Net style folders, or convert in-house subject folders.

In-house folders go through the same per-subject conversion as `mqsm_convert` (unit conversion,
B0 direction, whole-volume QSM-, T1 resampling), so a model sees at prediction exactly the inputs
it was trained on.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from mqsm_nnunet.conversion import ConversionOptions, FileNames, convert_for_inference, discover_inference_subjects

_CHANNEL_FILE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")


def is_inhouse_cohort(input_dir: Path, file_names: FileNames = FileNames()) -> bool:
    """True when `input_dir` holds subject folders with a field map rather than channel files."""
    return any((p / file_names.field).is_file() for p in input_dir.iterdir() if p.is_dir())


def check_channel_files(input_dir: Path, n_channels: int) -> list[str]:
    """Case ids of an nnU-Net style input folder; every case must have all `n_channels` files.

    Raises:
        ValueError: no channel files, or a case lacks some channel (named with the file it needs).
    """
    channels_by_case: dict[str, set[int]] = {}
    for path in input_dir.iterdir():
        match = _CHANNEL_FILE.match(path.name)
        if match:
            channels_by_case.setdefault(match["case"], set()).add(int(match["channel"]))
    if not channels_by_case:
        raise ValueError(f"{input_dir}: no <case>_0000.nii.gz channel files and no subject folders with a "
                         "field map; see `mqsm_predict --help`")
    for case, present in sorted(channels_by_case.items()):
        missing = sorted(set(range(n_channels)) - present)
        if missing:
            files = ", ".join(f"{case}_{c:04d}.nii.gz" for c in missing)
            raise ValueError(f"{input_dir}: case {case} lacks {files}; the model needs {n_channels} channels "
                             "(T1, field, QSM-, mask as mqsm_convert writes them)")
    return sorted(channels_by_case)


def stage_inhouse_cohort(input_dir: Path, staging_dir: Path, model_folder: Path,
                         options: ConversionOptions) -> Path:
    """Convert every subject folder of `input_dir` into channel files under `staging_dir`.

    The QSM- thresholds are the ones the model was trained with (its dataset.json).
    """
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    thresholds = tuple(dataset_json["mqsm"].get("qsm_minus_thresholds", options.thresholds))
    options = ConversionOptions(field_units=options.field_units, b0=options.b0, te=options.te,
                                b0_dir=options.b0_dir, thresholds=thresholds, file_names=options.file_names)
    subjects = discover_inference_subjects(input_dir, options.file_names)
    staging_dir.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        convert_for_inference(subject, options, staging_dir)
    check_channel_files(staging_dir, len(dataset_json["channel_names"]))
    return staging_dir
