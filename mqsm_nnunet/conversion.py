"""In-house cohort (T1 + local field + brain mask + labels) -> nnU-Net v2 raw dataset for mQSM.

Why each step (see docs/conversion.md for the user's view):

- Four image channels per case, in this order: 0 T1 (z-scored by nnU-Net, written as "zscore" so it
  is intentional), 1 local field (ppm), 2 QSM- (ppm, paper Eq. 3), 3 brain mask (0/1). The last three
  are "noNorm" so they keep their physical values; the mask travels as a channel because nnU-Net
  crops and relabels the segmentation outside the nonzero region, and the reconstruction loss needs
  the mask inside every patch.
- QSM- is computed here, on the whole field volume: the dipole field is non-local, so TKD on patches
  would be wrong. B0 comes from the field map's affine (oblique acquisitions) unless given.
- The field map's grid is the reference: the mask and labels must lie on it; a T1 on another grid is
  resampled onto it (linear). Every channel is written with the field map's exact affine.
- nnU-Net wants consecutive labels 0..N; other ids are remapped and the originals recorded.
- The dataset is built in a hidden folder next to the destination and renamed into place only after
  every subject succeeded, so an error or Ctrl-C never leaves a half-written dataset behind.
"""
from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from mqsm_nnunet import physics
from mqsm_nnunet.grid import voxel_size_from_affine
from mqsm_nnunet.nifti import Volume, read_volume, write_volume

CHANNELS = {"t1": 0, "field": 1, "qsm_minus": 2, "mask": 3}
"""Role -> image channel index, recorded in dataset.json's "mqsm" block."""

CHANNEL_NORMALIZATION = {"0": "zscore", "1": "noNorm", "2": "noNorm", "3": "noNorm"}
"""dataset.json "channel_names": nnU-Net reads the values as normalization schemes."""

FIELD_UNITS = ("ppm", "hz", "rad")
PLAUSIBLE_FIELD_PPM = (1e-3, 5.0)
"""Bounds for the robust maximum |local field| in ppm inside the mask (a brain's local field is
about 0.01-1 ppm); outside them the stated units are almost certainly wrong."""
ROBUST_PERCENTILE = 99.9
SPACING_RTOL = 1e-3
ORIGIN_ATOL_MM = 1e-2
DIRECTION_ATOL = 1e-3
MIN_T1_COVERAGE = 0.95
"""Fraction of the brain mask a resampled T1 should cover before a warning is given."""
FILE_ENDING = ".nii.gz"
MQSM_BLOCK_VERSION = 1

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


class ConversionWarning(UserWarning):
    """Something was changed or looks doubtful, but the dataset is still valid (resampling, remapping)."""


@dataclass(frozen=True)
class FileNames:
    """File names (paths relative to a subject folder) of each input."""

    t1: str = "t1.nii.gz"
    field: str = "field.nii.gz"
    mask: str = "mask.nii.gz"
    labels: str = "labels.nii.gz"
    chi: str = "chi.nii.gz"

    def __post_init__(self) -> None:
        for role in ("t1", "field", "mask", "labels", "chi"):
            name = getattr(self, role)
            parts = Path(name).parts
            if not name or Path(name).is_absolute() or ".." in parts:
                raise ValueError(f"--{role}-name must be a file name inside each subject folder; got {name!r}")


@dataclass(frozen=True)
class ConversionOptions:
    """How to read the field map and compute QSM-; checked on construction (errors name the CLI flag)."""

    field_units: str = "ppm"
    b0: float | None = None
    te: float | None = None
    b0_dir: tuple[float, float, float] | None = None
    thresholds: tuple[float, float] = (0.1, 0.2)
    file_names: FileNames = FileNames()

    def __post_init__(self) -> None:
        if self.field_units not in FIELD_UNITS:
            raise ValueError(f"--field-units must be one of {', '.join(FIELD_UNITS)}; got {self.field_units!r}")
        for flag, value, unit in (("--b0", self.b0, "tesla"), ("--te", self.te, "seconds")):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be a positive number in {unit}; got {value!r}")
        if self.field_units in ("hz", "rad") and self.b0 is None:
            raise ValueError(f"--field-units {self.field_units} needs the field strength: "
                             "pass --b0 TESLA (e.g. --b0 3)")
        if self.field_units == "rad" and self.te is None:
            raise ValueError("--field-units rad needs the echo time of the phase: pass --te SECONDS (e.g. --te 0.02)")
        if self.b0_dir is not None:
            direction = np.asarray(self.b0_dir, dtype=float)
            if direction.shape != (3,) or not np.all(np.isfinite(direction)) or not np.any(direction):
                raise ValueError(f"--b0-dir must be 3 finite numbers, not all zero; got {self.b0_dir!r}")
            object.__setattr__(self, "b0_dir", tuple(float(v) for v in direction / np.linalg.norm(direction)))
        if len(self.thresholds) != 2 or not all(math.isfinite(t) and 0 < t <= 1 for t in self.thresholds):
            raise ValueError(f"--thresholds must be two TKD thresholds in (0, 1]; got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))

    def unused_arguments(self) -> list[str]:
        """Flags that were given but do not enter the conversion (likely a wrong --field-units)."""
        unused = []
        if self.te is not None and self.field_units != "rad":
            unused.append(f"--te is ignored for --field-units {self.field_units}")
        if self.b0 is not None and self.field_units == "ppm":
            unused.append("--b0 is only recorded (not used) for --field-units ppm")
        return unused


@dataclass(frozen=True)
class LabelTable:
    """The labels JSON, made consecutive for nnU-Net.

    Attributes:
        labels: name -> consecutive id (0..N), sorted by the original id: dataset.json "labels".
        original: name -> id as in the JSON, sorted by id.
        source: the JSON file, named in error messages.
    """

    labels: dict[str, int]
    original: dict[str, int]
    source: str = "labels JSON"

    @property
    def remapped(self) -> bool:
        return self.labels != self.original

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> LabelTable:
        """Read `{"name": id, ...}`; ids must be distinct non-negative integers including 0 (background).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not valid JSON or not a name -> id mapping as described.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"labels JSON {path} not found; pass --labels PATH ({{\"background\": 0, ...}})")
        try:
            content = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"labels JSON {path} is not valid JSON: {error}") from error
        if not isinstance(content, dict) or not content:
            raise ValueError(f"labels JSON {path} must be an object mapping region names to integer ids")
        bad = {k: v for k, v in content.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"labels JSON {path}: ids must be non-negative integers; got {bad}")
        by_id: dict[int, list[str]] = {}
        for name, label in content.items():
            by_id.setdefault(label, []).append(name)
        duplicates = {label: names for label, names in by_id.items() if len(names) > 1}
        if duplicates:
            raise ValueError(f"labels JSON {path}: each id must name one region; shared ids: {duplicates}")
        if 0 not in by_id:
            raise ValueError(f"labels JSON {path} has no id 0; nnU-Net needs 0 as background "
                             "(add e.g. \"background\": 0)")
        ordered = sorted(content.items(), key=lambda item: item[1])
        consecutive = {name: new for new, (name, _) in enumerate(ordered)}
        return cls(labels=consecutive, original=dict(ordered), source=str(path))

    def lookup(self) -> np.ndarray:
        """Array mapping original id -> consecutive id (-1 for ids the JSON does not list)."""
        table = np.full(max(self.original.values()) + 1, -1, dtype=np.int64)
        for name, label in self.original.items():
            table[label] = self.labels[name]
        return table


@dataclass(frozen=True)
class Subject:
    """One subject folder of the cohort; `training` subjects go to imagesTr/labelsTr, others to imagesTs."""

    case_id: str
    folder: Path
    training: bool


@dataclass(frozen=True)
class _Job:
    subject: Subject
    options: ConversionOptions
    labels: LabelTable | None
    output: Path


@dataclass(frozen=True)
class _Result:
    case_id: str
    training: bool
    b0_direction: tuple[float, float, float]
    label_ids_present: frozenset[int]
    has_reference_qsm: bool
    warnings: tuple[str, ...]


# ----------------------------------------------------------------------------------------------------
# cohort discovery
# ----------------------------------------------------------------------------------------------------
def check_case_id(case_id: str) -> str:
    """A case id nnU-Net and file systems take safely: letters, digits, '-', '_', '.', not '.' or '..'."""
    if not _SAFE_ID.fullmatch(case_id) or case_id in (".", ".."):
        raise ValueError(f"subject folder {case_id!r}: its name is the case id and may only hold letters, "
                         "digits, '-', '_' and '.'; rename the folder")
    return case_id


def _subject_folders(cohort: Path, file_names: FileNames) -> list[Path]:
    """Non-hidden subfolders of `cohort`, each with a safe name and its T1, field and mask files."""
    if not cohort.is_dir():
        raise FileNotFoundError(f"cohort folder {cohort} not found (-i)")
    folders = sorted(p for p in cohort.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"no subjects found in {cohort}: expected one folder per subject "
                         f"(e.g. {cohort}/sub-001/{file_names.field})")
    for folder in folders:
        check_case_id(folder.name)
        for role in ("t1", "field", "mask"):
            path = folder / getattr(file_names, role)
            if not path.is_file():
                raise FileNotFoundError(f"{folder.name}: {path}: missing {role} file "
                                        f"(set its name with --{role}-name)")
    return folders


def discover_subjects(cohort: str | os.PathLike, file_names: FileNames = FileNames(),
                      test_subjects: Sequence[str] = ()) -> list[Subject]:
    """Every non-hidden subfolder of `cohort` is a subject; it needs T1, field and mask, labels are optional.

    Subjects with a label map go to training unless named in `test_subjects`.

    Raises:
        FileNotFoundError: no cohort folder, or a subject lacks a required file.
        ValueError: no subjects, an unsafe folder name, unknown test subjects, or no training subject.
    """
    cohort = Path(cohort)
    folders = _subject_folders(cohort, file_names)
    unknown = sorted(set(test_subjects) - {folder.name for folder in folders})
    if unknown:
        raise ValueError(f"--test-subjects names unknown subjects {unknown}; subjects in {cohort}: "
                         f"{[folder.name for folder in folders]}")
    subjects = [Subject(folder.name, folder, (folder / file_names.labels).is_file()
                        and folder.name not in test_subjects) for folder in folders]
    if not any(s.training for s in subjects):
        raise ValueError(f"no training subjects in {cohort}: no subject folder has {file_names.labels} "
                         "(or all are named in --test-subjects); check --labels-name")
    return subjects


# ----------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------
def grid_mismatch(affine: np.ndarray, shape: Sequence[int], reference_affine: np.ndarray,
                  reference_shape: Sequence[int]) -> str | None:
    """How a grid differs from the reference beyond tolerance, or None when they match.

    Compared: shape, spacing (relative `SPACING_RTOL`), origin (`ORIGIN_ATOL_MM`), axis directions
    (unit columns of the affine, `DIRECTION_ATOL`).
    """
    if tuple(shape) != tuple(reference_shape):
        return f"shape {tuple(shape)} vs field map {tuple(reference_shape)}"
    spacing, reference_spacing = (np.asarray(voxel_size_from_affine(a)) for a in (affine, reference_affine))
    if not np.allclose(spacing, reference_spacing, rtol=SPACING_RTOL, atol=0):
        return f"spacing {_fmt(spacing)} mm vs field map {_fmt(reference_spacing)} mm"
    if not np.allclose(affine[:3, 3], reference_affine[:3, 3], rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {_fmt(affine[:3, 3])} mm vs field map {_fmt(reference_affine[:3, 3])} mm"
    directions = affine[:3, :3] / spacing
    reference_directions = reference_affine[:3, :3] / reference_spacing
    if not np.allclose(directions, reference_directions, rtol=0, atol=DIRECTION_ATOL):
        return f"orientation {_fmt(directions.ravel())} vs field map {_fmt(reference_directions.ravel())}"
    return None


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def resample_to_grid(volume: Volume, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """`volume` trilinearly sampled at the voxel centres of the grid (`affine`, `shape`), matched in
    world coordinates; 0 outside its field of view."""
    voxel_map = np.linalg.solve(volume.affine, affine)  # target voxel -> source voxel
    return ndimage.affine_transform(volume.data, voxel_map[:3, :3], offset=voxel_map[:3, 3],
                                    output_shape=tuple(shape), order=1, mode="constant", cval=0.0)


def coverage(volume: Volume, affine: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the mask's voxels (on grid `affine`) that lie inside `volume`'s field of view."""
    voxel_map = np.linalg.solve(volume.affine, affine)
    source = np.argwhere(mask) @ voxel_map[:3, :3].T + voxel_map[:3, 3]
    inside = np.all((source >= -0.5) & (source <= np.asarray(volume.data.shape) - 0.5), axis=1)
    return float(inside.mean())


# ----------------------------------------------------------------------------------------------------
# one subject
# ----------------------------------------------------------------------------------------------------
def _read(subject: Subject, path: Path, dtype: type | None = np.float32) -> Volume:
    try:
        return read_volume(path, dtype=dtype)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as error:
        raise ValueError(f"{subject.case_id}: {path}: cannot read a 3D NIfTI image ({error})") from error


def _fail(subject: Subject, path: Path, problem: str) -> ValueError:
    return ValueError(f"{subject.case_id}: {path}: {problem}")


def _field_in_ppm(subject: Subject, path: Path, field: np.ndarray, mask: np.ndarray,
                  options: ConversionOptions) -> np.ndarray:
    """The field converted to ppm, checked for a plausible range inside the mask.

    Raises:
        ValueError: the robust maximum |field| in ppm lies outside `PLAUSIBLE_FIELD_PPM`.
    """
    if options.field_units == "hz":
        field = physics.hz_to_ppm(field, options.b0)
    elif options.field_units == "rad":
        field = physics.phase_to_ppm(field, options.te, options.b0)
    field = np.asarray(field, dtype=np.float32)
    robust_max = float(np.percentile(np.abs(field[mask]), ROBUST_PERCENTILE))
    low, high = PLAUSIBLE_FIELD_PPM
    if low <= robust_max <= high:
        return field
    hints = {
        "ppm": "a field in Hz or radians? pass --field-units hz --b0 T, or --field-units rad --b0 T --te S",
        "hz": "check --b0, or is the field in ppm or radians? (--field-units)",
        "rad": "check --b0 and --te, or is the field in ppm or Hz? (--field-units)",
    }
    raise _fail(subject, path, f"implausible local field for --field-units {options.field_units}: "
                               f"{ROBUST_PERCENTILE}th percentile of |field| in the mask is {robust_max:.3g} ppm, "
                               f"expected {low:g} to {high:g} ppm; {hints[options.field_units]}")


def _t1_on_field_grid(subject: Subject, path: Path, field: Volume, mask: np.ndarray,
                      warnings_out: list[str]) -> np.ndarray:
    t1 = _read(subject, path)
    if not np.all(np.isfinite(t1.data)):
        raise _fail(subject, path, "T1 contains NaN or Inf voxels; replace them (e.g. with 0)")
    mismatch = grid_mismatch(t1.affine, t1.data.shape, field.affine, field.data.shape)
    if mismatch is None:
        return t1.data
    covered = coverage(t1, field.affine, mask)
    if covered == 0:
        raise _fail(subject, path, "T1 and field map do not overlap in world coordinates (no brain-mask voxel "
                                   "lies inside the T1's field of view); not co-registered? Register the T1 "
                                   "to the field map first")
    message = f"{subject.case_id}: {path}: T1 is on another grid ({mismatch}); resampled (linear) onto the field map"
    if covered < MIN_T1_COVERAGE:
        message += f"; it covers only {covered:.0%} of the brain mask, the rest is 0"
    warnings_out.append(message)
    return resample_to_grid(t1, field.affine, field.data.shape)


def _on_field_grid(subject: Subject, path: Path, field: Volume, what: str, dtype: type | None) -> np.ndarray:
    """Data of a map that must lie on the field map's grid (mask, labels, reference QSM)."""
    volume = _read(subject, path, dtype=dtype)
    mismatch = grid_mismatch(volume.affine, volume.data.shape, field.affine, field.data.shape)
    if mismatch is not None:
        raise _fail(subject, path, f"{what} is not on the field map's grid: {mismatch}; resample it onto the "
                                   "field map (nearest neighbour for masks and labels)")
    return volume.data


def _brain_mask(subject: Subject, path: Path, field: Volume) -> np.ndarray:
    data = _on_field_grid(subject, path, field, "brain mask", dtype=None)
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        raise _fail(subject, path, f"brain mask must hold only 0 and 1; found values "
                                   f"{_fmt(values[:8])}{'...' if values.size > 8 else ''}")
    mask = data == 1
    if not mask.any():
        raise _fail(subject, path, "brain mask is empty (no voxel is 1)")
    return mask


def _label_map(subject: Subject, path: Path, field: Volume, labels: LabelTable) -> np.ndarray:
    """The label map with consecutive ids."""
    data = _on_field_grid(subject, path, field, "label map", dtype=None)
    if not np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float64)
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise _fail(subject, path, "label map holds non-integer values; it must hold integer region ids")
        data = data.astype(np.int64)
    table = labels.lookup()
    unknown = [int(v) for v in np.unique(data) if v < 0 or v >= table.size or table[v] < 0]
    if unknown:
        raise _fail(subject, path, f"label values {unknown} are not in the labels JSON {labels.source}; "
                                   "add them there or fix the label map")
    return table[data]


def _reference_qsm(subject: Subject, path: Path, field: Volume) -> np.ndarray:
    data = _on_field_grid(subject, path, field, "reference QSM", dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise _fail(subject, path, "reference QSM contains NaN or Inf voxels")
    return data


def _convert_subject(subject: Subject, options: ConversionOptions, labels: LabelTable | None, images: Path,
                     dataset: Path | None) -> _Result:
    """Validate one subject and write its channels into `images`; for a training subject also
    `dataset/labelsTr/<case>` and, when the subject has one, the reference QSM `dataset/qsmTr/<case>`."""
    names = options.file_names
    paths = {role: subject.folder / getattr(names, role) for role in ("t1", "field", "mask", "labels", "chi")}
    notes: list[str] = []

    field = _read(subject, paths["field"])
    if not np.all(np.isfinite(field.data)):
        count = int(np.size(field.data) - np.count_nonzero(np.isfinite(field.data)))
        raise _fail(subject, paths["field"], f"field map contains {count} NaN/Inf voxels; set them to 0 "
                                             "(outside the brain) or fix the field estimation")
    mask = _brain_mask(subject, paths["mask"], field)
    field_ppm = _field_in_ppm(subject, paths["field"], field.data, mask, options)
    label_map = _label_map(subject, paths["labels"], field, labels) if subject.training else None
    reference = _reference_qsm(subject, paths["chi"], field) \
        if subject.training and paths["chi"].is_file() else None
    t1 = _t1_on_field_grid(subject, paths["t1"], field, mask, notes)
    b0_dir = options.b0_dir if options.b0_dir is not None else tuple(
        float(v) for v in physics.b0_direction_from_affine(field.affine))
    qsm = physics.qsm_minus(field_ppm, field.voxel_size, b0_dir, mask, thresholds=options.thresholds)

    case_file = f"{subject.case_id}{FILE_ENDING}"
    label_ids: frozenset[int] = frozenset()
    if label_map is not None:
        label_ids = frozenset(int(v) for v in np.unique(label_map))
        dtype = np.uint8 if label_map.max() < 256 else np.uint16
        write_volume(dataset / "labelsTr" / case_file, label_map, field.affine, dtype)
    if reference is not None:
        write_volume(dataset / "qsmTr" / case_file, reference, field.affine, np.float32)
    channels = {"t1": (t1, np.float32), "field": (field_ppm, np.float32), "qsm_minus": (qsm, np.float32),
                "mask": (mask, np.uint8)}
    for role, (data, dtype) in channels.items():
        write_volume(images / f"{subject.case_id}_{CHANNELS[role]:04d}{FILE_ENDING}", data, field.affine, dtype)
    return _Result(subject.case_id, subject.training, b0_dir, label_ids, reference is not None, tuple(notes))


def convert_subject(job: _Job) -> _Result:
    """Worker function of `convert_cohort`: one subject into imagesTr (+ labelsTr, qsmTr) or imagesTs.

    Raises:
        ValueError: any validation failure, naming subject and file.
    """
    images = job.output / ("imagesTr" if job.subject.training else "imagesTs")
    return _convert_subject(job.subject, job.options, job.labels, images, job.output)


def discover_inference_subjects(folder: str | os.PathLike, file_names: FileNames = FileNames()) -> list[Subject]:
    """Subject folders to predict on: the checks of `discover_subjects`, label maps ignored.

    Raises:
        FileNotFoundError / ValueError: as `discover_subjects`, except that no training subject is needed.
    """
    return [Subject(folder.name, folder, training=False) for folder in _subject_folders(Path(folder), file_names)]


def convert_for_inference(subject: Subject, options: ConversionOptions, output: str | os.PathLike) -> None:
    """Write a subject's four channel files into `output` exactly as `convert_cohort` writes them for
    training, so a model sees the same inputs at prediction (warnings as `ConversionWarning`).

    Raises:
        ValueError: any validation failure, naming subject and file.
    """
    test_subject = Subject(subject.case_id, subject.folder, training=False)
    result = _convert_subject(test_subject, options, None, Path(output), None)
    for note in result.warnings:
        warnings.warn(note, ConversionWarning, stacklevel=2)


# ----------------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------------
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
        raise ValueError(f"-d must be a dataset ID from 1 to 999; got {dataset_id!r}")
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"-n must be a dataset name of letters, digits, '_' and '-'; got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def existing_datasets(root: Path, dataset_id: int) -> list[Path]:
    """Folders in `root` that nnU-Net would resolve for this ID (any name)."""
    if not root.is_dir():
        return []
    prefix = f"Dataset{dataset_id:03d}_"
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def _datasets_to_replace(root: Path, dataset_id: int, overwrite: bool) -> list[Path]:
    """The existing datasets with this ID, which only `overwrite` allows to replace.

    Raises:
        FileExistsError: one exists and `overwrite` is false.
    """
    existing = existing_datasets(root, dataset_id)
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(map(str, existing))} already exists (nnU-Net resolves datasets by ID); "
                              "pass --overwrite to replace it, or choose another -d")
    return existing


def _stale_nnunet_folders(dataset_id: int, folder_name: str) -> list[str]:
    """Warnings about preprocessed/results folders for this ID that will clash with the new dataset."""
    notes = []
    for variable in ("nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(variable)
        for path in existing_datasets(Path(value), dataset_id) if value else []:
            if path.name == folder_name:
                notes.append(f"{path} exists from an earlier conversion; rerun planning and preprocessing "
                             "(and retrain) so it matches the new data")
            else:
                notes.append(f"{path} has the same ID under another name; nnU-Net will refuse ID {dataset_id} "
                             f"(more than one dataset name) until it is renamed or removed")
    return notes


def mqsm_block(options: ConversionOptions, labels: LabelTable, results: Sequence[_Result]) -> dict:
    """The "mqsm" block of dataset.json: what later steps (training, prediction, iron) need to know."""
    block = {
        "version": MQSM_BLOCK_VERSION,
        "channels": dict(CHANNELS),
        "field_units_input": options.field_units,
        "map_units": "ppm",
        "b0_tesla": options.b0,
        "te_seconds": options.te,
        "qsm_minus_thresholds": list(options.thresholds),
        "b0_direction_source": "affine" if options.b0_dir is None else "--b0-dir",
        "b0_direction": {r.case_id: list(r.b0_direction) for r in sorted(results, key=lambda r: r.case_id)},
    }
    if labels.remapped:
        block["label_ids_original"] = dict(labels.original)
    references = sorted(r.case_id for r in results if r.has_reference_qsm)
    if references:
        block["reference_qsm"] = {"folder": "qsmTr", "cases": references}
    return block


def dataset_json(name: str, options: ConversionOptions, labels: LabelTable, results: Sequence[_Result]) -> dict:
    """The stock nnU-Net keys plus the "mqsm" block."""
    return {
        "channel_names": dict(CHANNEL_NORMALIZATION),
        "labels": dict(labels.labels),
        "numTraining": sum(r.training for r in results),
        "file_ending": FILE_ENDING,
        "name": name,
        "description": "mQSM: T1 (zscore), local field (ppm), QSM- (ppm), brain mask (0/1); written by mqsm_convert",
        "mqsm": mqsm_block(options, labels, results),
    }


def _install(built: Path, destination: Path, replaced: Sequence[Path]) -> None:
    """Rename the built dataset into place; old datasets with the same ID are removed only once it is there."""
    parked: list[tuple[Path, Path]] = []
    try:
        for old in replaced:
            hidden = old.with_name(f".{old.name}.replaced-{uuid.uuid4().hex[:8]}")
            os.rename(old, hidden)
            parked.append((old, hidden))
        os.rename(built, destination)
    except BaseException:
        for old, hidden in reversed(parked):
            os.rename(hidden, old)
        raise
    for _, hidden in parked:
        shutil.rmtree(hidden, ignore_errors=True)


@contextlib.contextmanager
def _mapped(function: Callable[[_Job], _Result], jobs: Sequence[_Job], processes: int) -> Iterator[Iterator[_Result]]:
    """Results of `function` over `jobs` in completion order; in-process for one process.

    Leaving the block terminates the pool, so no worker writes after an error or Ctrl-C.
    """
    if processes == 1:
        yield map(function, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_ignore_interrupt) as pool:
        yield pool.imap_unordered(function, jobs)


def _ignore_interrupt() -> None:
    """Workers leave Ctrl-C to the main process, which terminates them (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _default_folder_mode() -> int:
    """0o777 minus the process umask: the mode os.mkdir would give."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def default_num_processes() -> int:
    """min(4, CPU count): conversion is FFT and I/O bound; more processes mostly cost memory."""
    return max(1, min(4, os.cpu_count() or 1))


def convert_cohort(cohort: str | os.PathLike, dataset_id: int, name: str, *,
                   labels_json: str | os.PathLike | None = None,
                   options: ConversionOptions = ConversionOptions(), test_subjects: Sequence[str] = (),
                   overwrite: bool = False, num_processes: int | None = None, progress: bool = True) -> Path:
    """Convert an in-house cohort into `$nnUNet_raw/DatasetXXX_NAME`; returns that folder.

    Warnings (`ConversionWarning`): a T1 resampled, labels remapped to consecutive ids, JSON labels
    absent from every training subject, ignored flags, clashing nnU-Net folders for the same ID.

    Raises:
        ValueError / FileNotFoundError: bad arguments or input (the message names subject and file).
        FileExistsError: a dataset with this ID exists and `overwrite` is false.
    """
    folder_name = dataset_folder_name(dataset_id, name)
    if num_processes is None:
        num_processes = default_num_processes()
    if num_processes < 1:
        raise ValueError(f"-np must be at least 1; got {num_processes}")
    root = nnunet_raw_folder()
    _datasets_to_replace(root, dataset_id, overwrite)
    cohort = Path(cohort)
    labels = LabelTable.from_json(cohort / "labels.json" if labels_json is None else labels_json)
    subjects = discover_subjects(cohort, options.file_names, test_subjects)
    for note in options.unused_arguments() + _stale_nnunet_folders(dataset_id, folder_name):
        warnings.warn(note, ConversionWarning, stacklevel=2)
    if labels.remapped:
        warnings.warn(f"labels JSON ids {sorted(labels.original.values())} are not consecutive; label maps are "
                      "remapped to 0..N in id order (originals in dataset.json mqsm.label_ids_original)",
                      ConversionWarning, stacklevel=2)

    build = Path(tempfile.mkdtemp(prefix=f".{folder_name}.partial-", dir=root))
    try:
        os.chmod(build, _default_folder_mode())  # mkdtemp makes it private; the dataset is ordinary data
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (build / sub).mkdir()  # qsmTr only where a subject has a reference QSM
        jobs = [_Job(subject, options, labels, build) for subject in subjects]
        results = []
        with tqdm(total=len(jobs), desc=folder_name, unit="subject", disable=not progress) as bar, \
                _mapped(convert_subject, jobs, min(num_processes, len(jobs))) as done:
            for result in done:
                for note in result.warnings:
                    warnings.warn(note, ConversionWarning, stacklevel=2)
                results.append(result)
                bar.update()
        present = set().union(*(r.label_ids_present for r in results if r.training))
        absent = [label for label, new in labels.labels.items() if new not in present]
        if absent:
            warnings.warn(f"labels {absent} occur in no training subject's label map", ConversionWarning, stacklevel=2)
        (build / "dataset.json").write_text(json.dumps(dataset_json(name, options, labels, results), indent=2) + "\n")
        _install(build, root / folder_name, _datasets_to_replace(root, dataset_id, overwrite))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return root / folder_name
