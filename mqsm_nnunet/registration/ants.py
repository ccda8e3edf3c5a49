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

Geometry: images go to ANTs with their NIfTI (RAS) affine turned into ITK's LPS origin and
direction, and the labels are written with the subject's affine as nibabel reads it, so the output
sits on exactly the subject's grid whatever the storage orientation.

Repeatability: ANTs samples the metric at random points and sums over threads in an order that
depends on the thread count. Registrations here run with `ANTS_RANDOM_SEED` set (`seed`) and ITK
single-threaded (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1, set before antspyx is first imported:
ITK reads it once per process), so the same inputs give the same labels bit for bit.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mqsm_nnunet.command import MQSMWarning
from mqsm_nnunet.conversion.cohort import check_case_id
from mqsm_nnunet.io.files import atomic_folder, writable_folder
from mqsm_nnunet.io.labels import LabelTable, as_label_map, label_dtype, read_labels
from mqsm_nnunet.io.nifti import Volume, read_volume, write_volume

__all__ = [
    "Method", "METHODS", "DEFAULT_METHODS", "LINEAR_OPTIONS", "SYN_OPTIONS", "SYN_QUICK_OPTIONS", "DEFAULT_SEED", "Template", "SubjectRegistration",
    "CohortRegistration", "FUSIONS", "JOINT_FUSION_OPTIONS", "check_label_sets", "fuse_labels",
    "joint_fusion_radii", "register_and_fuse_jointly", "load_template", "register_labels", "register_cohort",
]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
DEFAULT_SEED = 1
REPORT_NAME = "registration.json"
"""Written into each method folder beside the label maps: method, parameters, seed, seconds per case."""


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


@dataclass
class CohortRegistration:
    """What `register_cohort` wrote: per method, case -> label map file and case -> seconds (all of
    that case's registrations with this method, one per template)."""

    out_dir: Path
    templates: list[Path]
    seed: int
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    each_template: dict[str, list[dict[str, Path]]] = field(default_factory=dict)
    """With `keep_each_template`: per method, per template (in order), case -> its own label map."""

    def seconds_per_subject(self, method: str) -> float:
        """Mean wall-clock seconds per subject of `method`."""
        return float(np.mean(list(self.seconds[method].values())))


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
def _import_ants():
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


def _ants_image(ants, data: np.ndarray, affine: np.ndarray):
    """An ANTs image of a voxel-order array and its NIfTI (RAS) affine: ITK wants LPS origin and direction."""
    affine = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return ants.from_numpy(np.asarray(data, dtype=np.float32), origin=tuple(_RAS_TO_LPS @ affine[:3, 3]),
                           spacing=tuple(spacing), direction=_RAS_TO_LPS @ affine[:3, :3] / spacing)


def _method(method: str | Method) -> Method:
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown registration method {method!r} (`methods`); choose from {', '.join(METHODS)}")
    return METHODS[method]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or int(seed) != seed or seed < 1:
        raise ValueError(f"`seed` must be an integer >= 1 (ANTs reads 0 as 'seed from the clock'), got {seed!r}")
    return int(seed)


def _brain(ants, t1: Volume, mask: Volume):
    """The ANTs image of `t1` times `mask` (resampled onto the T1's grid by nearest neighbour)."""
    image = _ants_image(ants, t1.data, t1.affine)
    on_t1 = ants.resample_image_to_target(_ants_image(ants, (mask.data > 0).astype(np.float32), mask.affine), image,
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
    method, seed = _method(method), _check_seed(seed)
    ants = _import_ants()
    start = time.perf_counter()
    fixed, moving = _fixed_and_moving(ants, template, t1, brain_mask)
    grid = _ants_image(ants, np.zeros(tuple(int(n) for n in grid_shape), np.float32), grid_affine)
    with tempfile.TemporaryDirectory(prefix="mqsm_register_") as scratch:
        transforms = _transforms(ants, fixed, moving, method, seed, scratch)
        warped = ants.apply_transforms(grid, _ants_image(ants, template.labels.data, template.labels.affine),
                                       transforms, interpolator="genericLabel")
        labels = np.rint(warped.numpy()).astype(np.int64)
    return SubjectRegistration(labels, time.perf_counter() - start)


def _fixed_and_moving(ants, template: Template, t1: Volume, brain_mask: Volume | None):
    """The subject's and the template's ANTs images: brains when both masks are there, else heads."""
    if not np.all(np.isfinite(t1.data)):
        raise ValueError("the subject T1 holds NaN or infinite values; ANTs cannot register it")
    if brain_mask is not None and template.mask is not None:
        return _brain(ants, t1, brain_mask), _brain(ants, template.t1, template.mask)
    return _ants_image(ants, t1.data, t1.affine), _ants_image(ants, template.t1.data, template.t1.affine)


def _transforms(ants, fixed, moving, method: Method, seed: int, scratch: str) -> list[str]:
    """The linear stage, then SyN from it when the method has one: ANTs transform files in `scratch`."""
    with _environment("ANTS_RANDOM_SEED", str(seed)):
        transforms = ants.registration(fixed, moving, type_of_transform=method.linear,
                                       outprefix=os.path.join(scratch, "linear_"), **dict(LINEAR_OPTIONS))["fwdtransforms"]
        if method.deformable is not None:
            transforms = ants.registration(fixed, moving, type_of_transform="SyNOnly", initial_transform=transforms,
                                           outprefix=os.path.join(scratch, "syn_"),
                                           **dict(method.deformable))["fwdtransforms"]
    return transforms


JOINT_FUSION_OPTIONS = {"beta": 2.0, "rho": 0.01, "patch_radius_mm": 2.0, "search_radius_mm": 3.0}
"""antsJointFusion's defaults: weight sharpness 2, ridge penalty 0.01, and its patch radius 2 and search
radius 3 voxels, which are made for 1 mm brains, kept in mm (`joint_fusion_radii`): on a 6 mm grid a
search of 1-3 voxels moved labels by 6-18 mm (mean Dice 0.43-0.49 against the three identical atlases'
0.71; no search: 0.70); on 2 mm real anatomies 1 and 1 voxels gave the Dice of 2 and 3 (0.666
against 0.664) in a quarter of the time."""


def joint_fusion_radii(spacing: Sequence[float]) -> tuple[int, int]:
    """(patch radius, search radius) in voxels of a grid with `spacing` (mm) for `JOINT_FUSION_OPTIONS`."""
    voxel = float(min(spacing))
    return (max(1, int(JOINT_FUSION_OPTIONS["patch_radius_mm"] // voxel)),
            int(JOINT_FUSION_OPTIONS["search_radius_mm"] // voxel))


def register_and_fuse_jointly(templates: Sequence[Template], t1: Volume, grid_affine: np.ndarray,
                              grid_shape: Sequence[int], method: str | Method = "syn", seed: int = DEFAULT_SEED,
                              brain_mask: Volume | None = None) -> SubjectRegistration:
    """Multi-atlas registration fused by joint label fusion (Wang et al. 2013, antspyx's
    `joint_label_fusion`): every template registered to the subject as in `register_labels`, its T1
    and labels carried onto the subject's T1 grid, and each voxel labelled by the atlases whose
    local patches look like the subject's there, weighted so that atlases that err alike are not
    counted twice. The fused labels are then carried onto the QSM's grid (nearest label).
    Inside the subject's brain mask (else inside any atlas's labels); 0 outside.

    Raises:
        ValueError / RuntimeError: as `register_labels`.
    """
    method, seed = _method(method), _check_seed(seed)
    ants = _import_ants()
    start = time.perf_counter()
    warped_t1s, warped_labels, each = [], [], []
    grid = _ants_image(ants, np.zeros(tuple(int(n) for n in grid_shape), np.float32), grid_affine)
    with tempfile.TemporaryDirectory(prefix="mqsm_register_") as scratch:
        for number, template in enumerate(templates):
            fixed, moving = _fixed_and_moving(ants, template, t1, brain_mask)
            folder = os.path.join(scratch, f"template{number}")
            os.mkdir(folder)
            transforms = _transforms(ants, fixed, moving, method, seed, folder)
            labels = _ants_image(ants, template.labels.data, template.labels.affine)
            each.append(np.rint(ants.apply_transforms(grid, labels, transforms, interpolator="genericLabel").numpy())
                        .astype(np.int64))
            warped_t1s.append(ants.iMath(ants.apply_transforms(fixed, moving, transforms, interpolator="linear"),
                                         "Normalize"))
            warped_labels.append(ants.apply_transforms(fixed, labels, transforms, interpolator="genericLabel"))
        if brain_mask is not None:
            target_mask = ants.resample_image_to_target(
                _ants_image(ants, (brain_mask.data > 0).astype(np.float32), brain_mask.affine), fixed,
                interp_type="nearestNeighbor")
        else:
            target_mask = fixed.new_image_like((sum(w.numpy() for w in warped_labels) > 0).astype(np.float32))
        patch, search = joint_fusion_radii(fixed.spacing)
        fused = ants.joint_label_fusion(ants.iMath(fixed, "Normalize"), target_mask, warped_t1s,
                                        label_list=warped_labels, beta=JOINT_FUSION_OPTIONS["beta"],
                                        rho=JOINT_FUSION_OPTIONS["rho"], rad=patch, r_search=search)["segmentation"]
        on_grid = ants.resample_image_to_target(fused, grid, interp_type="genericLabel")
    return SubjectRegistration(np.rint(on_grid.numpy()).astype(np.int64), time.perf_counter() - start, tuple(each))


FUSIONS = {"majority": "majority vote (ties: the earliest template)",
           "joint": f"joint label fusion (antsJointFusion, {JOINT_FUSION_OPTIONS})"}
"""The label fusions of multi-atlas registration by name, as registration.json describes them."""


def fuse_labels(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Majority vote of several atlases' label maps on one grid: each voxel takes the label most of them
    give it; a tie goes to the earliest map among those tied (so one map is returned unchanged, and
    with three atlases the first decides only where all three differ).

    Raises:
        ValueError: no maps, or maps of different shapes.
    """
    if not label_maps:
        raise ValueError("no label maps to fuse")
    shapes = {np.shape(m) for m in label_maps}
    if len(shapes) != 1:
        raise ValueError(f"label maps to fuse must share one grid; got shapes {sorted(shapes)}")
    votes = [sum((other == m).astype(np.int16) for other in label_maps) for m in label_maps]
    best = np.max(votes, axis=0)
    fused = np.asarray(label_maps[-1]).copy()
    for m, count in zip(reversed(label_maps), reversed(votes)):
        fused = np.where(count == best, m, fused)
    return fused


# ----------------------------------------------------------------------------------------------------
# a cohort
# ----------------------------------------------------------------------------------------------------
def _subject_folders(cohort: Path, cases: Sequence[str] | None, names: Sequence[str]) -> dict[str, Path]:
    """Case id -> subject folder (non-hidden subfolders of `cohort`, or the named `cases`), each
    holding the files in `names`."""
    if not cohort.is_dir():
        raise FileNotFoundError(f"cohort folder {cohort} not found (`cohort`)")
    folders = {p.name: p for p in sorted(cohort.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if cases is not None:
        unknown = sorted(set(cases) - set(folders))
        if unknown:
            raise ValueError(f"`cases` names subjects not in {cohort}: {unknown}; subjects there: {sorted(folders)}")
        folders = {case: folders[case] for case in sorted(set(cases))}
    if not folders:
        raise ValueError(f"no subjects in {cohort}: expected one folder per subject (e.g. {cohort}/sub-001/{names[0]})")
    for case, folder in folders.items():
        check_case_id(case)
        for name, parameter in zip(names, ("t1_name", "grid_name")):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{case}: {folder / name}: missing (set the file name with `{parameter}`)")
    return folders


def register_cohort(cohort: str | os.PathLike, template: str | os.PathLike | Sequence[str | os.PathLike],
                    out_dir: str | os.PathLike, methods: Sequence[str] = DEFAULT_METHODS, *,
                    cases: Sequence[str] | None = None,
                    labels: str | os.PathLike | None = None, t1_name: str = "t1.nii.gz",
                    grid_name: str = "field.nii.gz", mask_name: str | None = "mask.nii.gz", seed: int = DEFAULT_SEED,
                    overwrite: bool = False, progress: bool = False, keep_each_template: bool = False,
                    fusion: str = "majority") -> CohortRegistration:
    """Carry the template's labels onto every subject (or `cases`) of an in-house cohort with each of
    `methods`, writing `out_dir`/<method>/<case>.nii.gz on the grid of the subject's `grid_name`
    (default: its field map, i.e. its QSM's grid) plus `out_dir`/<method>/registration.json.

    Several templates (a sequence of folders): multi-atlas registration, every template registered to
    every subject and the carried label maps fused (`fusion`: "majority", a vote, `fuse_labels`; or
    "joint", joint label fusion, `register_and_fuse_jointly`), in the same layout.

    All method folders are built aside and moved into `out_dir` only when every registration
    succeeded; other entries of `out_dir` are left alone.

    Args:
        labels: the cohort's labels file (default: `cohort`/labels.json; `labels.read_labels`); the
            template must hold exactly its regions (a colour table's: the template's ids must be in it).
        t1_name, grid_name: file names inside each subject folder.
        mask_name: each subject's brain mask: with the templates' masks (`mask.nii.gz`), brains are
            registered, not heads (module docstring); None registers whole heads. Templates without a
            mask are registered as heads, with a warning.
        overwrite: replace existing method folders in `out_dir`.
        keep_each_template: with several templates, also write each template's own label maps to
            `out_dir`/<method>/template<k>/<case>.nii.gz (k = 1, 2, ... in the order given).

    Raises:
        FileNotFoundError: a missing folder or file.
        ValueError: bad arguments, unreadable images, label sets that differ, existing outputs
            without `overwrite`.
        RuntimeError: ANTs failed on a subject (the message names it).
    """
    cohort, out_dir = Path(cohort), Path(out_dir)
    chosen = [_method(name) for name in dict.fromkeys(methods)]
    if not chosen:
        raise ValueError("no registration method given (`methods`)")
    seed = _check_seed(seed)
    if fusion not in FUSIONS:
        raise ValueError(f"unknown label fusion {fusion!r} (`fusion`); choose from {', '.join(FUSIONS)}")
    table = read_labels(Path(labels) if labels is not None else cohort / "labels.json")
    folders = _subject_folders(cohort, cases, (t1_name, grid_name))
    writable_folder(out_dir)
    existing = [str(out_dir / m.name) for m in chosen if (out_dir / m.name).exists()]
    if existing and not overwrite:
        raise ValueError(f"{', '.join(existing)} already exist(s); pass `overwrite` to replace, or choose another "
                         "`out_dir`")
    folders_given = [template] if isinstance(template, (str, os.PathLike)) else list(template)
    if not folders_given:
        raise ValueError("no template given (`template`)")
    loaded = [load_template(folder, table) for folder in folders_given]
    brains = mask_name is not None and any(t.mask is not None for t in loaded)
    if brains:
        for t in loaded:
            if t.mask is None:
                warnings.warn(MQSMWarning(f"template {t.folder} has no mask.nii.gz: it is registered as a whole head "
                                          "while the others are brain-extracted; add its brain mask for brains "
                                          "(docs/registration.md)"), stacklevel=2)
        for case, folder in folders.items():
            if not (folder / mask_name).is_file():
                raise FileNotFoundError(f"{case}: {folder / mask_name}: missing; the templates have brain masks, "
                                        "so subjects need theirs (`mask_name`), or register whole heads "
                                        "(`mask_name=None`, mqsm_register --whole-head)")
    dtype = label_dtype(sorted(set().union(*(t.label_ids for t in loaded))))
    report = CohortRegistration(out_dir.absolute(), [t.folder.absolute() for t in loaded], seed)
    ants = _import_ants()
    with atomic_folder(out_dir, merge=True) as build, \
            tqdm(total=len(folders) * len(chosen) * len(loaded), desc="mqsm_register", unit="registration",
                 disable=not progress) as bar:
        for case, folder in folders.items():
            t1 = read_volume(folder / t1_name)
            grid = read_volume(folder / grid_name, dtype=None)
            brain_mask = read_volume(folder / mask_name) if brains else None
            for m in chosen:
                if fusion == "joint" and len(loaded) > 1:
                    bar.set_postfix_str(f"{case} {m.name} {len(loaded)} templates, joint label fusion")
                    try:
                        joint = register_and_fuse_jointly(loaded, t1, grid.affine, grid.data.shape, m, seed, brain_mask)
                    except RuntimeError as error:
                        raise RuntimeError(f"{case}: ANTs registration ({m.name}) or joint label fusion failed: "
                                           f"{error}") from None
                    bar.update(len(loaded))
                    fused, each, seconds = joint.labels, joint.each_template, joint.seconds
                else:
                    results = []
                    for number, atlas in enumerate(loaded, 1):
                        bar.set_postfix_str(f"{case} {m.name}" + (f" template {number}" if len(loaded) > 1 else ""))
                        try:
                            results.append(register_labels(atlas, t1, grid.affine, grid.data.shape, m, seed,
                                                           brain_mask))
                        except RuntimeError as error:
                            raise RuntimeError(f"{case}: ANTs registration ({m.name}) of {atlas.folder} failed: "
                                               f"{error}") from None
                        bar.update()
                    each = [r.labels for r in results]
                    fused, seconds = fuse_labels(each), sum(r.seconds for r in results)
                if keep_each_template and len(loaded) > 1:
                    for number, labels_of_one in enumerate(each, 1):
                        name = f"template{number}/{case}.nii.gz"
                        write_volume(build / m.name / name, labels_of_one, grid.affine, dtype)
                        each = report.each_template.setdefault(m.name, [{} for _ in loaded])
                        each[number - 1][case] = report.out_dir / m.name / name
                write_volume(build / m.name / f"{case}.nii.gz", fused, grid.affine, dtype)
                report.files.setdefault(m.name, {})[case] = report.out_dir / m.name / f"{case}.nii.gz"
                report.seconds.setdefault(m.name, {})[case] = seconds
        for m in chosen:
            (build / m.name / REPORT_NAME).write_text(json.dumps({
                "method": m.name, "description": m.description, "ants_linear": m.linear,
                "ants_linear_options": dict(LINEAR_OPTIONS),
                "ants_syn_options": None if m.deformable is None else dict(m.deformable),
                "interpolator": "genericLabel", "antspyx": ants.__version__,
                "brain_extracted": [brains and t.mask is not None for t in loaded],
                "seed": seed, "itk_threads": 1, "templates": [str(t) for t in report.templates],
                "fusion": FUSIONS[fusion] if len(loaded) > 1 else None,
                "cohort": str(cohort.absolute()),
                "grid_file": grid_name, "seconds_per_case": report.seconds[m.name],
                "seconds_per_subject": report.seconds_per_subject(m.name)}, indent=2) + "\n")
    return report
