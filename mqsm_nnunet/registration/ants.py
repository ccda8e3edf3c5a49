"""Registration-based region labels, the paper's comparison arm (Sect. 3.3, Table 2).

What the field does today instead of segmenting each subject: register a template T1 (an atlas
brain) to the subject's T1 and carry the template's labels over. Here the template T1 is the
moving image and the subject T1 the fixed one (ANTs, through antspyx); the labels are resampled
with ANTs' `genericLabel` interpolator (a label-wise nearest-neighbour choice, no new values) onto
the subject's own grid, the grid of its QSM: the QSM itself is never resampled. The label maps are
what `mqsm_iron --seg` reads.

Brains, not heads: when the template folder has a brain mask (`mask.nii.gz`) and the subject has one
(its `mask.nii.gz`, which QSM needs anyway), both T1s are brain-extracted (T1 x mask) before
registration, as antsRegistrationSyN users register brains to a brain template; otherwise scalp,
skull and neck drive the metric (measured on real anatomies: docs/registration.md).

Several templates, fused: `fusion.py`; a whole cohort, with its outputs and report: `cohort.py`.

Geometry: images go to ANTs with their NIfTI (RAS) affine turned into ITK's LPS origin and
direction, and the labels are written with the subject's affine as nibabel reads it, so the output
sits on exactly the subject's grid whatever the storage orientation.

Repeatability: ANTs samples the metric at random points and sums over threads in an order that
depends on the thread count. Registrations here run with `ANTS_RANDOM_SEED` set (`seed`) and ITK
single-threaded (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1, set before antspyx is first imported:
ITK reads it once per process), so the same inputs give the same labels bit for bit.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mqsm_nnunet.command import MQSMWarning
from mqsm_nnunet.io.labels import LabelTable, as_label_map, read_labels
from mqsm_nnunet.io.nifti import Volume, read_volume

__all__ = [
    "Method", "METHODS", "DEFAULT_METHODS", "LINEAR_OPTIONS", "SYN_OPTIONS", "SYN_QUICK_OPTIONS", "DEFAULT_SEED",
    "Template", "SubjectRegistration", "ants_image", "check_label_sets", "check_seed", "images_to_register",
    "import_ants", "load_template", "register_labels", "registration_transforms", "resolve_method",
]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
DEFAULT_SEED = 1


@dataclass(frozen=True)
class Method:
    """One registration method: a linear ANTs stage (`linear`: 'Rigid' or 'Affine', with `LINEAR_OPTIONS`),
    then, when `deformable` holds `ants.registration` options, ANTs SyN started from the linear result."""

    name: str
    linear: str
    deformable: tuple[tuple[str, object], ...] | None
    description: str


LINEAR_OPTIONS = (("aff_shrink_factors", (4, 2, 1)), ("aff_smoothing_sigmas", (2, 1, 0)),
                  ("aff_iterations", (2100, 1200, 200)))
"""Mattes mutual information (32 bins, 20 % of the voxels), from 1/4 resolution: antspyx's default
pyramid starts at 1/6, too coarse below ~40 voxels a side (it stalls on 4-6 mm grids); on 3 mm
grids both give the same labels."""

SYN_OPTIONS = (("syn_metric", "CC"), ("syn_sampling", 4), ("reg_iterations", (100, 70, 50, 20)),
               ("grad_step", 0.1), ("flow_sigma", 3), ("total_sigma", 0))
"""antsRegistrationSyN.sh's deformable stage for brains: SyN[0.1,3,0], local cross-correlation of radius 4
voxels, 100x70x50x20 iterations at shrink factors 8x4x2x1 with smoothing 3x2x1x0 voxels (antspyx derives
the pyramid from the four iteration counts)."""
SYN_QUICK_OPTIONS = (("syn_metric", "mattes"), ("syn_sampling", 32), ("reg_iterations", (100, 70, 50, 0)),
                     ("grad_step", 0.1), ("flow_sigma", 3), ("total_sigma", 0))
"""antsRegistrationSyNQuick.sh's: the same SyN with Mattes mutual information (32 bins) and no
full-resolution level."""

METHODS: dict[str, Method] = {method.name: method for method in (
    Method("rigid", "Rigid", None, "rigid (6 parameters), mutual information"),
    Method("affine", "Affine", None, "affine (12 parameters), mutual information (as FLIRT)"),
    Method("syn", "Affine", SYN_OPTIONS,
           "affine, then ANTs SyN as antsRegistrationSyN.sh: cross-correlation (radius 4), 100x70x50x20 "
           "iterations at 8x4x2x1"),
    Method("synquick", "Affine", SYN_QUICK_OPTIONS,
           "affine, then ANTs SyN as antsRegistrationSyNQuick.sh: mutual information, 100x70x50x0 iterations"),
)}
"""The methods by name: the paper's FLIRT / NiftyReg / ANTs columns are affine-only and deformable."""
DEFAULT_METHODS = ("affine", "syn")


@dataclass(frozen=True)
class Template:
    """A registration template: T1 and label map (any grids in one physical space), its label ids, and its
    brain mask when the folder has one (`mask.nii.gz`)."""

    folder: Path
    t1: Volume
    labels: Volume
    label_ids: tuple[int, ...]
    mask: Volume | None = None


@dataclass(frozen=True)
class SubjectRegistration:
    """Template labels on one subject's grid (voxel order), and the seconds registration and resampling took;
    for a joint fusion, also each template's own labels on that grid (in the templates' order)."""

    labels: np.ndarray
    seconds: float
    each_template: tuple[np.ndarray, ...] = ()


# ----------------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------------
def _names(ids: set[int], labels: Mapping[str, int]) -> str:
    by_id = {label: name for name, label in labels.items()}
    return ", ".join(f"{by_id[i]} ({i})" if i in by_id else str(i) for i in sorted(ids))


def check_label_sets(template_ids: Sequence[int], labels: LabelTable | Mapping[str, int], source: str) -> None:
    """Refuse a template whose label map does not hold exactly the regions of the cohort's labels table:
    an unknown id would end up in no region, a missing one would leave that region empty in every subject.

    Raises:
        ValueError: naming `source`, the table's file, the ids on either side only, and the fix.
    """
    table = LabelTable.of(labels, "the cohort's labels table")
    labels = table.ids
    expected = {label for label in labels.values() if label != 0}
    present = {int(label) for label in template_ids if label != 0}
    unknown, missing = present - expected, expected - present
    if unknown or missing:
        parts = ([f"ids only in the template: {_names(unknown, labels)}"] if unknown else []) + \
                ([f"regions of the labels table missing from the template: {_names(missing, labels)}"] if missing
                 else [])
        raise ValueError(f"{source}: the template's label set differs from {table.source} "
                         f"({'; '.join(parts)}); use a template labelled with the same table, or pass `labels` "
                         "with exactly the template's regions")


def _check_same_table(template_table: Mapping[str, int], labels: Mapping[str, int], source: str) -> None:
    """A template's own labels JSON must name every id as the cohort's does."""
    if dict(template_table) == dict(labels):
        return
    differences = [f"{name}: {template_table.get(name, '-')} vs {labels.get(name, '-')}"
                   for name in sorted(set(template_table) | set(labels)) if template_table.get(name) != labels.get(name)]
    raise ValueError(f"{source} and the cohort's labels table differ (name: template id vs cohort id; "
                     f"{'; '.join(differences[:8])}{' ...' if len(differences) > 8 else ''}); relabel the template "
                     "or pass the matching table as `labels`")


def load_template(folder: str | os.PathLike, labels: LabelTable | Mapping[str, int]) -> Template:
    """Read `folder`/t1.nii.gz, `folder`/labels.nii.gz (and `folder`/mask.nii.gz when it is there), and check the labels against `labels` (the
    cohort's table; a colour table cut down to the template's ids) and against `folder`/labels.json
    when the template has one.

    Raises:
        FileNotFoundError: no such folder or file.
        ValueError: unreadable images, a label map that is not integer, or label sets that differ.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"template folder {folder} not found (`template`); it must hold t1.nii.gz and "
                                "labels.nii.gz (e.g. written by mqsm_phantom --template DIR)")
    t1 = read_volume(folder / "t1.nii.gz")
    volume = read_volume(folder / "labels.nii.gz", dtype=None)
    label_map = as_label_map(volume.data, str(folder / "labels.nii.gz"))
    ids = tuple(int(label) for label in np.unique(label_map))
    table = LabelTable.of(labels, "the cohort's labels table")
    check_label_sets(ids, table.found_in(ids), str(folder / "labels.nii.gz"))
    if (folder / "labels.json").is_file():
        _check_same_table(read_labels(folder / "labels.json").ids, table.found_in(ids).ids,
                          str(folder / "labels.json"))
    mask = read_volume(folder / "mask.nii.gz") if (folder / "mask.nii.gz").is_file() else None
    return Template(folder, t1, Volume(label_map, volume.affine), ids, mask)


# ----------------------------------------------------------------------------------------------------
# one registration
# ----------------------------------------------------------------------------------------------------
def import_ants():
    """antspyx, with ITK single-threaded when this is the process's first import of it (see the module
    docstring); a warning when it was imported before with another thread count."""
    if "ants" not in sys.modules:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    elif os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS") != "1":
        warnings.warn(MQSMWarning("antspyx was imported before mqsm_nnunet.registration.ants without "
                                  "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1: registrations may not repeat bit for bit"),
                      stacklevel=3)
    import ants

    return ants


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def ants_image(ants, data: np.ndarray, affine: np.ndarray):
    """An ANTs image of a voxel-order array and its NIfTI (RAS) affine: ITK wants LPS origin and direction."""
    affine = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return ants.from_numpy(np.asarray(data, dtype=np.float32), origin=tuple(_RAS_TO_LPS @ affine[:3, 3]),
                           spacing=tuple(spacing), direction=_RAS_TO_LPS @ affine[:3, :3] / spacing)


def resolve_method(method: str | Method) -> Method:
    """A `Method`, or the one of `METHODS` by that name (ValueError naming the choices otherwise)."""
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown registration method {method!r} (`methods`); choose from {', '.join(METHODS)}")
    return METHODS[method]


def check_seed(seed: int) -> int:
    """The ANTs random seed as an int >= 1 (ValueError otherwise: ANTs reads 0 as "from the clock")."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 1:
        raise ValueError(f"`seed` must be an integer >= 1 (ANTs reads 0 as 'seed from the clock'), got {seed!r}")
    return int(seed)


def _brain(ants, t1: Volume, mask: Volume):
    """The ANTs image of `t1` times `mask` (resampled onto the T1's grid by nearest neighbour)."""
    image = ants_image(ants, t1.data, t1.affine)
    on_t1 = ants.resample_image_to_target(ants_image(ants, (mask.data > 0).astype(np.float32), mask.affine), image,
                                          interp_type="nearestNeighbor")
    return image * on_t1


def register_labels(template: Template, t1: Volume, grid_affine: np.ndarray, grid_shape: Sequence[int],
                    method: str | Method = "syn", seed: int = DEFAULT_SEED,
                    brain_mask: Volume | None = None) -> SubjectRegistration:
    """Register the template T1 to the subject `t1` and carry the template labels onto the subject grid
    (`grid_affine`, `grid_shape`: the grid of the subject's QSM, in the T1's physical space). With the
    subject's `brain_mask` (any grid in that space) and a template mask, brains are registered, not
    heads (module docstring).

    Returns the labels as an int64 array in voxel order of that grid.

    Raises:
        ValueError: unknown method, bad seed, or a T1 holding NaN.
        RuntimeError: ANTs failed.
    """
    method, seed = resolve_method(method), check_seed(seed)
    ants = import_ants()
    start = time.perf_counter()
    fixed, moving = images_to_register(ants, template, t1, brain_mask)
    grid = ants_image(ants, np.zeros(tuple(int(n) for n in grid_shape), np.float32), grid_affine)
    with tempfile.TemporaryDirectory(prefix="mqsm_register_") as scratch:
        transforms = registration_transforms(ants, fixed, moving, method, seed, scratch)
        warped = ants.apply_transforms(grid, ants_image(ants, template.labels.data, template.labels.affine),
                                       transforms, interpolator="genericLabel")
        labels = np.rint(warped.numpy()).astype(np.int64)
    return SubjectRegistration(labels, time.perf_counter() - start)


def images_to_register(ants, template: Template, t1: Volume, brain_mask: Volume | None):
    """The subject's and the template's ANTs images: brains when both masks are there, else heads."""
    if not np.all(np.isfinite(t1.data)):
        raise ValueError("the subject T1 holds NaN or infinite values; ANTs cannot register it")
    if brain_mask is not None and template.mask is not None:
        return _brain(ants, t1, brain_mask), _brain(ants, template.t1, template.mask)
    return ants_image(ants, t1.data, t1.affine), ants_image(ants, template.t1.data, template.t1.affine)


def registration_transforms(ants, fixed, moving, method: Method, seed: int, scratch: str) -> list[str]:
    """The linear stage, then SyN from it when the method has one: ANTs transform files in `scratch`."""
    with _environment("ANTS_RANDOM_SEED", str(seed)):
        transforms = ants.registration(fixed, moving, type_of_transform=method.linear,
                                       outprefix=os.path.join(scratch, "linear_"), **dict(LINEAR_OPTIONS))["fwdtransforms"]
        if method.deformable is not None:
            transforms = ants.registration(fixed, moving, type_of_transform="SyNOnly", initial_transform=transforms,
                                           outprefix=os.path.join(scratch, "syn_"),
                                           **dict(method.deformable))["fwdtransforms"]
    return transforms
