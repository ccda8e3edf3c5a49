"""One subject: validate its files against the field map and write its channels.

The field map's grid is the reference: the mask, labels and reference QSM must lie on it
(`grid.GRID_TOLERANCE_MM`); a T1 on another grid is resampled onto it (linear). Every channel is
written with the field map's exact affine, in the channel order of `dataset_metadata.channel_layout`
(no T1 and the brain mask as label map for a field-maps-only dataset, `qsm_only`). QSM- is computed
here, on the whole field volume: the dipole field is non-local, so TKD on patches would be wrong.
B0 comes from `b0_dir`, a JSON sidecar or the field map's affine (`conversion.b0`).

Every error names the subject and the file (`<case>: <path>: <problem>; <fix>`).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from mqsm_nnunet import physics
from mqsm_nnunet.command import user_message
from mqsm_nnunet.conversion.b0 import b0_direction
from mqsm_nnunet.conversion.cohort import Subject
from mqsm_nnunet.conversion.field_units import field_in_ppm
from mqsm_nnunet.conversion.options import ConversionOptions, ConversionWarning, FILE_ROLES
from mqsm_nnunet.io.dataset_metadata import channel_layout
from mqsm_nnunet.io.grid import grid_mismatch
from mqsm_nnunet.io.labels import LabelIdMap, as_label_map
from mqsm_nnunet.io.nifti import Volume, read_volume, write_volume

FILE_ENDING = ".nii.gz"
MIN_T1_COVERAGE = 0.95
"""Fraction of the brain mask a resampled T1 should cover before a warning is given."""


@dataclass(frozen=True)
class Job:
    """What a worker needs to convert one subject into the dataset folder `output`."""

    subject: Subject
    options: ConversionOptions
    labels: LabelIdMap | None
    output: Path


@dataclass(frozen=True)
class SubjectResult:
    """What the dataset.json and the cohort-level checks need to know about a converted subject."""

    case_id: str
    training: bool
    b0_direction: tuple[float, float, float]
    b0_source: str
    label_ids_present: frozenset[int]
    has_reference_qsm: bool
    warnings: tuple[str, ...]


def resample_to_grid(volume: Volume, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """`volume` trilinearly sampled at the voxel centres of the grid (`affine`, `shape`), matched in
    world coordinates; 0 outside its field of view (nibabel's `resample_from_to`)."""
    source = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32), volume.affine)
    resampled = resample_from_to(source, (tuple(shape), affine), order=1, mode="constant", cval=0.0)
    return np.asarray(resampled.dataobj, dtype=np.float32)


def coverage(volume: Volume, affine: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the mask's voxels (on grid `affine`) that lie inside `volume`'s field of view."""
    voxel_map = np.linalg.solve(volume.affine, affine)
    source = np.argwhere(mask) @ voxel_map[:3, :3].T + voxel_map[:3, 3]
    inside = np.all((source >= -0.5) & (source <= np.asarray(volume.data.shape) - 0.5), axis=1)
    return float(inside.mean())


class _Reader:
    """Reads and checks one subject's files; every error is `<case>: <path>: <problem>`."""

    def __init__(self, subject: Subject, options: ConversionOptions):
        self.subject = subject
        self.paths = {role: subject.folder / getattr(options.file_names, role) for role in FILE_ROLES}

    def fail(self, role: str, problem: str) -> ValueError:
        return ValueError(f"{self.subject.case_id}: {self.paths[role]}: {problem}")

    def read(self, role: str, dtype: type | None = np.float32) -> Volume:
        try:
            return read_volume(self.paths[role], dtype=dtype)
        except (ValueError, OSError) as error:  # the message already names the file
            raise ValueError(f"{self.subject.case_id}: {user_message(error)}") from None

    def on_field_grid(self, role: str, field: Volume, what: str, dtype: type | None) -> np.ndarray:
        """Data of a map that must lie on the field map's grid (mask, labels, reference QSM)."""
        volume = self.read(role, dtype=dtype)
        mismatch = grid_mismatch(volume.affine, volume.data.shape, field.affine, field.data.shape, "the field map")
        if mismatch is not None:
            raise self.fail(role, f"{what} is not on the field map's grid: {mismatch}; resample it onto the field "
                                  "map (nearest neighbour for masks and labels)")
        return volume.data

    def field(self) -> Volume:
        field = self.read("field")
        if not np.all(np.isfinite(field.data)):
            count = int(np.size(field.data) - np.count_nonzero(np.isfinite(field.data)))
            raise self.fail("field", f"field map contains {count} NaN/Inf voxels; set them to 0 (outside the brain) "
                                     "or fix the field estimation")
        return field

    def brain_mask(self, field: Volume) -> np.ndarray:
        data = self.on_field_grid("mask", field, "brain mask", dtype=None)
        values = np.unique(data)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(f"{v:.4g}" for v in values[:8])
            raise self.fail("mask", f"brain mask must hold only 0 and 1; found values ({shown}"
                                    f"{', ...' if values.size > 8 else ''})")
        mask = data == 1
        if not mask.any():
            raise self.fail("mask", "brain mask is empty (no voxel is 1)")
        return mask

    def field_ppm(self, field: Volume, mask: np.ndarray, options: ConversionOptions, notes: list[str]) -> np.ndarray:
        try:
            ppm, warning = field_in_ppm(field.data, mask, options.field_units, options.b0, options.te,
                                         check_size=not options.skip_field_size_check)
        except ValueError as error:
            raise self.fail("field", str(error)) from None
        if warning:
            notes.append(f"{self.subject.case_id}: {self.paths['field']}: {warning}")
        return ppm

    def label_map(self, field: Volume, labels: LabelIdMap) -> np.ndarray:
        """The label map in nnU-Net's consecutive ids."""
        data = self.on_field_grid("labels", field, "label map", dtype=None)
        try:
            return labels.to_nnunet(as_label_map(data, "label map"))
        except ValueError as error:
            raise self.fail("labels", str(error)) from None

    def reference_qsm(self, field: Volume) -> np.ndarray:
        data = self.on_field_grid("chi", field, "reference QSM", dtype=np.float32)
        if not np.all(np.isfinite(data)):
            raise self.fail("chi", "reference QSM contains NaN or Inf voxels")
        return data

    def t1_on_field_grid(self, field: Volume, mask: np.ndarray, notes: list[str]) -> np.ndarray:
        t1 = self.read("t1")
        if not np.all(np.isfinite(t1.data)):
            raise self.fail("t1", "T1 contains NaN or Inf voxels; replace them (e.g. with 0)")
        mismatch = grid_mismatch(t1.affine, t1.data.shape, field.affine, field.data.shape, "the field map")
        if mismatch is None:
            return t1.data
        covered = coverage(t1, field.affine, mask)
        if covered == 0:
            raise self.fail("t1", "T1 and field map do not overlap in world coordinates (no brain-mask voxel lies "
                                  "inside the T1's field of view); not co-registered? Register the T1 to the field "
                                  "map first")
        message = (f"{self.subject.case_id}: {self.paths['t1']}: T1 is on another grid ({mismatch}); resampled "
                   "(linear) onto the field map")
        if covered < MIN_T1_COVERAGE:
            message += f"; it covers only {covered:.0%} of the brain mask, the rest is 0"
        notes.append(message)
        return resample_to_grid(t1, field.affine, field.data.shape)


def _convert(subject: Subject, options: ConversionOptions, labels: LabelIdMap | None, images: Path,
             dataset: Path | None, layout: dict[str, int]) -> SubjectResult:
    """Validate one subject and write its channels (`layout`: role -> index) into `images`; for a
    training subject also `dataset/labelsTr/<case>` (the brain mask for `qsm_only`) and, when the
    subject has one, the reference QSM `dataset/qsmTr/<case>`. A T1 is written where `layout` has
    a slot for it and the subject has one."""
    reader = _Reader(subject, options)
    notes: list[str] = []
    field = reader.field()
    mask = reader.brain_mask(field)
    field_ppm = reader.field_ppm(field, mask, options, notes)
    if not subject.training:
        label_map = None
    else:
        label_map = mask.astype(np.uint8) if options.qsm_only else reader.label_map(field, labels)
    reference = reader.reference_qsm(field) if subject.training and reader.paths["chi"].is_file() else None
    with_t1 = "t1" in layout and reader.paths["t1"].is_file()
    t1 = reader.t1_on_field_grid(field, mask, notes) if with_t1 else None
    try:
        b0_dir, b0_source = b0_direction(reader.paths["field"], field.affine, options.b0_dir)
    except ValueError as error:
        raise ValueError(f"{subject.case_id}: {error}") from None
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
    for role, index in layout.items():
        data, dtype = channels[role]
        if data is not None:
            write_volume(images / f"{subject.case_id}_{index:04d}{FILE_ENDING}", data, field.affine, dtype)
    return SubjectResult(subject.case_id, subject.training, b0_dir, b0_source, label_ids, reference is not None,
                         tuple(notes))


def convert_subject(job: Job) -> SubjectResult:
    """Worker function of `convert_cohort`: one subject into imagesTr (+ labelsTr, qsmTr) or imagesTs.

    Raises:
        ValueError: any validation failure, naming subject and file.
    """
    images = job.output / ("imagesTr" if job.subject.training else "imagesTs")
    return _convert(job.subject, job.options, job.labels, images, job.output, channel_layout(job.options.qsm_only))


def convert_for_inference(subject: Subject, options: ConversionOptions, output: str | Path,
                          layout: dict[str, int] | None = None) -> None:
    """Write a subject's channel files (`layout`: the model's role -> index, by default what
    `convert_cohort` writes) into `output` exactly as `convert_cohort` writes them for training, so
    a model sees the same inputs at prediction (warnings as `ConversionWarning`). A subject without
    a T1 gets no T1 file (QSM only).

    Raises:
        ValueError: any validation failure, naming subject and file.
    """
    test_subject = Subject(subject.case_id, subject.folder, training=False)
    result = _convert(test_subject, options, None, Path(output), None,
                      channel_layout(options.qsm_only) if layout is None else layout)
    for note in result.warnings:
        warnings.warn(note, ConversionWarning, stacklevel=2)
