"""Inputs for prediction: check nnU-Net style folders, or convert in-house subject folders.

In-house folders go through the same per-subject conversion as `mqsm_convert` (unit conversion,
B0 direction, whole-volume QSM-, T1 resampling), so a model sees at prediction exactly the inputs
it was trained on. nnU-Net style folders are checked file by file before nnU-Net sees them: a
file that does not fit the `<case>_XXXX` pattern, a missing or extra channel, a corrupted file or
channels of one case on different grids would otherwise fail deep inside nnU-Net, or not at all.
"""
from __future__ import annotations

import re
from pathlib import Path

from mqsm_nnunet.conversion import ConversionOptions, FileNames, convert_for_inference, discover_inference_subjects
from mqsm_nnunet.io.dataset_metadata import MQSMChannels, qsm_minus_thresholds
from mqsm_nnunet.io.grid import check_same_grid
from mqsm_nnunet.io.nifti import read_volume


def is_inhouse_cohort(input_dir: Path, file_names: FileNames = FileNames()) -> bool:
    """True when `input_dir` holds subject folders with a field map rather than channel files."""
    return any((p / file_names.field).is_file() for p in input_dir.iterdir() if p.is_dir())


def _channel_files(input_dir: Path, file_ending: str) -> dict[str, dict[int, Path]]:
    """Case -> channel index -> file, for every file ending in `file_ending`.

    Raises:
        ValueError: files ending in `file_ending` that are not `<case>_XXXX<ending>`.
    """
    pattern = re.compile(rf"(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(file_ending)}")
    files: dict[str, dict[int, Path]] = {}
    stray = []
    for path in sorted(input_dir.iterdir()):
        if not path.name.endswith(file_ending) or path.name.startswith("."):
            continue
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_file():
            stray.append(path.name)
        else:
            files.setdefault(match["case"], {})[int(match["channel"])] = path
    if stray:
        raise ValueError(f"{input_dir}: {', '.join(stray)} do not fit the <case>_XXXX{file_ending} channel pattern; "
                         "move them out of the input folder")
    return files


def check_channel_files(input_dir: Path, dataset_json: dict) -> list[str]:
    """Case ids of an nnU-Net style input folder, after checking every file: each case has exactly
    the model's channels, except that the T1 may be missing (such a case gets the QSM only, which
    never reads the T1), each file reads completely (`nifti.read_volume`), and the channels of a
    case lie on one grid.

    Raises:
        ValueError: what does not fit, naming the folder or file.
    """
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    layout = MQSMChannels.from_dataset_json(dataset_json).layout()
    n_channels = len(dataset_json["channel_names"])
    files = _channel_files(input_dir, file_ending)
    if not files:
        raise ValueError(f"{input_dir}: no <case>_0000{file_ending} channel files and no subject folders with a "
                         "field map; see `mqsm_predict --help`")
    roles = ", ".join(f"_{index:04d} {role}" for role, index in layout.items())
    for case, channels in sorted(files.items()):
        missing = sorted(set(range(n_channels)) - set(channels) - {layout.get("t1")})
        extra = sorted(set(channels) - set(range(n_channels)))
        if missing or extra:
            need = ", ".join(f"{case}_{c:04d}{file_ending}" for c in missing)
            more = ", ".join(channels[c].name for c in extra)
            raise ValueError(f"{input_dir}: case {case} " + (f"lacks {need}" if missing else f"has extra {more}")
                             + f"; the model takes {n_channels} channels ({roles}, as mqsm_convert writes them; "
                               "only the T1 may be left out, for the QSM alone)")
        present = sorted(channels)
        first = read_volume(channels[present[0]], dtype=None)
        for index in present[1:]:
            other = read_volume(channels[index], dtype=None)
            check_same_grid(channels[index], other.affine, other.data.shape, channels[present[0]], first.affine,
                            first.data.shape)
    return sorted(files)


def stage_inhouse_cohort(input_dir: Path, staging_dir: Path, dataset_json: dict,
                         options: ConversionOptions) -> Path:
    """Convert every subject folder of `input_dir` into the model's channel files under `staging_dir`,
    with the QSM- thresholds the model was trained with (its dataset.json; refused when it does not
    say). A subject folder without a T1 gets no T1 file (QSM only).

    Raises:
        ValueError: channel files mixed with subject folders, or any conversion error (naming subject and file).
    """
    mixed = sorted(p.name for p in input_dir.iterdir() if p.is_file() and p.name.endswith(".nii.gz"))
    if mixed:
        raise ValueError(f"{input_dir}: holds subject folders and also NIfTI files ({', '.join(mixed[:3])}"
                         f"{', ...' if len(mixed) > 3 else ''}); keep one kind of input per folder")
    options = ConversionOptions(field_units=options.field_units, b0=options.b0, te=options.te,
                                b0_dir=options.b0_dir, thresholds=qsm_minus_thresholds(dataset_json),
                                file_names=options.file_names)
    subjects = discover_inference_subjects(input_dir, options.file_names)
    staging_dir.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        convert_for_inference(subject, options, staging_dir, MQSMChannels.from_dataset_json(dataset_json).layout())
    check_channel_files(staging_dir, dataset_json)
    return staging_dir
