"""Writing a phantom cohort in the in-house layout and its template (`mqsm_phantom`: `cli/phantom.py`).

Layout: OUT/labels.json ({"background": 0, region: id, ...}) and OUT/sub-001/{t1, field, mask,
labels, chi}.nii.gz; a template folder holds {t1, labels, mask, chi}.nii.gz and labels.json (what
`mqsm_register --template` reads). Each folder is written under a hidden temporary name and renamed
when complete, so an interrupted run never leaves a half-written subject or template.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mqsm_nnunet.io.files import atomic_folder, write_text_atomic
from mqsm_nnunet.io.nifti import write_volume
from mqsm_nnunet.phantom.anatomy import LABELS, SUSCEPTIBILITY_PPB
from mqsm_nnunet.io.grid import check_voxel_size
from mqsm_nnunet.phantom.freesurfer import REGIONS, region_table
from mqsm_nnunet.phantom.field_imperfections import FieldImperfections
from mqsm_nnunet.phantom.label_maps import anatomy_files, embedded_anatomies, label_map_stem, load_anatomy
from mqsm_nnunet.phantom.real_subject import DEFAULT_REAL_VOXEL_SIZE, make_real_subject
from mqsm_nnunet.phantom.subject import (DEFAULT_CHI_VARIATION, DEFAULT_FIELD_NOISE, DEFAULT_SHAPE, DEFAULT_T1_NOISE,
                                         DEFAULT_VOXEL_SIZE, PhantomSubject, check_grid, check_levels,
                                         check_shape, check_supersampling, make_subject, make_template)
from mqsm_nnunet.phantom.tissue_values import STRUCTURE_OF_REGION, chi_ppb
from mqsm_nnunet.physics import unit_b0_direction

# Entries of OUT that the generator owns (replaced with --overwrite); anything else is left alone.
_OWNED = re.compile(r"^(labels\.json|sub-[A-Za-z0-9_-]+|\.sub-[A-Za-z0-9_-]+\..+)$")
B0_SIDECAR_KEY = "B0_dir"
"""field.json's key for B0 in voxel axes (QSM-CI's convention, what mqsm_convert reads)."""
ANATOMY_ORDER_STREAM = (0x616E6174, 0x6F6D79)
"""Entropy words after the seed for the order in which the embedded anatomies are dealt to subjects."""
TEMPLATE_FILES = ("t1.nii.gz", "labels.nii.gz", "mask.nii.gz", "chi.nii.gz", "labels.json")


@dataclass(frozen=True)
class CohortSummary:
    """What `write_cohort` or `write_real_cohort` wrote: grid (`shape` None when each subject has its
    own), B0 (None when each subject's comes from its affine), per-region true susceptibility (ppb, mean
    over subjects of each subject's regional mean) beside the literature value, the range of the written
    field (ppm) and, for real anatomy, the label map of each subject."""

    out_dir: Path
    n_subjects: int
    seed: int
    shape: tuple[int, int, int] | None
    voxel_size: tuple[float, float, float]
    b0_dir: tuple[float, float, float] | None
    noise: float
    mean_chi_ppb: dict[str, float]
    field_range_ppm: tuple[float, float]
    seconds_per_subject: float
    region_ids: dict[str, int] = field(default_factory=lambda: dict(LABELS))
    literature_ppb: dict[str, float] = field(default_factory=lambda: dict(SUSCEPTIBILITY_PPB))
    anatomies: dict[str, str] = field(default_factory=dict)
    imperfections: FieldImperfections = FieldImperfections()

    def report(self) -> str:
        """Human-readable cohort summary (what `mqsm_phantom` prints)."""
        voxel = " x ".join(f"{v:g}" for v in self.voxel_size)
        if self.shape is None:
            grid = f"  voxels of {voxel} mm; each subject's grid is its brain plus a margin, in its label map's axes"
        else:
            fov = " x ".join(f"{n * v:g}" for n, v in zip(self.shape, self.voxel_size))
            grid = f"  grid {' x '.join(map(str, self.shape))} voxels of {voxel} mm (field of view {fov} mm)"
        b0 = ("from each subject's affine (world z)" if self.b0_dir is None
              else f"({', '.join(f'{v:.4g}' for v in self.b0_dir)})")
        lines = [
            f"mqsm_phantom: {self.n_subjects} subject(s) in {self.out_dir} (seed {self.seed}, "
            f"{self.seconds_per_subject:.2f} s per subject)",
            grid,
            f"  B0 direction (voxel axes i, j, k): {b0}",
            f"  field: {self.field_range_ppm[0]:.4f} .. {self.field_range_ppm[1]:.4f} ppm"
            f" (noise sd {100 * self.noise:g} % of the in-brain field sd"
            + (f"; residual background field {100 * self.imperfections.background:g} %, non-dipolar edge phase "
               f"{100 * self.imperfections.edge:g} %, root mean squares" if self.imperfections.any else "") + ")",
            f"  {len(self.mean_chi_ppb)} regions (labels.json); true susceptibility in ppb,"
            " mean over subjects | literature:",
        ]
        for name, value in self.mean_chi_ppb.items():
            lines.append(f"    {self.region_ids[name]:3d} {name:<29s} {value:8.1f} | {self.literature_ppb[name]:6.0f}")
        if self.anatomies:
            lines.append("  anatomy of each subject: " + ", ".join(f"{k} <- {v}" for k, v in self.anatomies.items()))
        return "\n".join(lines)


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {out_dir} exists and is not a folder; choose another -o/--output")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"output folder {out_dir} is not empty; pass --overwrite (overwrite=True) "
                             "to replace its cohort, or choose another -o/--output")
        for entry in out_dir.iterdir():
            if _OWNED.match(entry.name):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_labels_json(out_dir: Path, regions: dict[str, int] = LABELS) -> None:
    write_text_atomic(out_dir / "labels.json", json.dumps(regions, indent=2) + "\n")


def _write_subject(folder: Path, subject: PhantomSubject, b0_sidecar: Sequence[float] | None = None) -> None:
    """One subject folder, built hidden and renamed into place; `b0_sidecar` writes field.json's B0_dir."""
    with atomic_folder(folder) as build:
        label_type = np.uint8 if int(subject.labels.max()) <= 255 else np.uint16
        for role, data, dtype in (("t1", subject.t1, np.float32), ("field", subject.field, np.float32),
                                  ("mask", subject.mask, np.uint8), ("labels", subject.labels, label_type),
                                  ("chi", subject.chi, np.float32)):
            write_volume(build / f"{role}.nii.gz", data, subject.affine, dtype)
        if b0_sidecar is not None:
            write_text_atomic(build / "field.json", json.dumps({B0_SIDECAR_KEY: [float(v) for v in b0_sidecar]}) + "\n")


class _Tally:
    """Per-region mean true chi over subjects (ppb) and the written field's range (ppm)."""

    def __init__(self) -> None:
        self.sums: dict[int, float] = {}
        self.present: dict[int, int] = {}
        self.low, self.high = np.inf, -np.inf

    def add(self, subject: PhantomSubject) -> None:
        ids, inverse = np.unique(subject.labels.ravel(), return_inverse=True)
        counts = np.bincount(inverse)
        totals = np.bincount(inverse, weights=subject.chi.ravel())
        for region_id, count, total in zip(ids.tolist(), counts, totals):
            self.sums[region_id] = self.sums.get(region_id, 0.0) + 1000.0 * total / count
            self.present[region_id] = self.present.get(region_id, 0) + 1
        self.low, self.high = min(self.low, float(subject.field.min())), max(self.high, float(subject.field.max()))

    def mean_chi(self, regions: dict[str, int], literature: dict[str, float]) -> dict[str, float]:
        return {name: self.sums[regions[name]] / self.present[regions[name]]
                for name in literature if regions[name] in self.present}


def _check_count_and_seed(n_subjects: int, seed: int) -> None:
    if int(n_subjects) != n_subjects or n_subjects < 1:
        raise ValueError(f"n_subjects (-n/--subjects) must be an integer >= 1; got {n_subjects}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed}")


def write_cohort(out_dir: str | os.PathLike, n_subjects: int, shape: Sequence[int] = DEFAULT_SHAPE,
                 voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE, b0_dir: Sequence[float] | None = None,
                 seed: int = 0, *, noise: float = DEFAULT_FIELD_NOISE, t1_noise: float = DEFAULT_T1_NOISE,
                 chi_variation: float = DEFAULT_CHI_VARIATION, supersampling: int | None = None,
                 overwrite: bool = False, progress: bool = False) -> CohortSummary:
    """Write subjects 1..n_subjects of the geometric phantom's cohort `seed` (see `make_subject`).

    Raises:
        ValueError: n_subjects < 1, a bad grid / B0 / level, or a non-empty `out_dir` without
            `overwrite` (with it, labels.json and sub-* folders are replaced, other files kept).
    """
    _check_count_and_seed(n_subjects, seed)
    shape, voxel_size, b0 = check_grid(shape, voxel_size, b0_dir)
    check_levels(noise, t1_noise, chi_variation)
    check_supersampling(supersampling)
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    _write_labels_json(out_dir)

    tally = _Tally()
    start = time.perf_counter()
    for index in tqdm(range(1, int(n_subjects) + 1), desc="mqsm_phantom", unit="subject", disable=not progress):
        subject = make_subject(index, shape, voxel_size, b0, seed, noise=noise, t1_noise=t1_noise,
                               chi_variation=chi_variation, supersampling=supersampling)
        _write_subject(out_dir / f"sub-{index:03d}", subject)
        tally.add(subject)
    return CohortSummary(out_dir, int(n_subjects), int(seed), shape, voxel_size, b0, float(noise),
                         tally.mean_chi(LABELS, SUSCEPTIBILITY_PPB), (tally.low, tally.high),
                         (time.perf_counter() - start) / n_subjects)


def _subject_folder_name(stem: str) -> str:
    """`sub-<stem>` with every character outside letters, digits, '-' and '_' made '_'."""
    return "sub-" + re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def write_real_cohort(out_dir: str | os.PathLike, n_subjects: int | None = None, anatomy_dir: str | os.PathLike | None = None,
                      voxel_size: Sequence[float] = DEFAULT_REAL_VOXEL_SIZE, b0_dir: Sequence[float] | None = None,
                      shape: Sequence[int] | None = None,
                      seed: int = 0, *, anatomies: Sequence[str] | None = None, noise: float = DEFAULT_FIELD_NOISE, t1_noise: float = DEFAULT_T1_NOISE,
                      chi_variation: float = DEFAULT_CHI_VARIATION, overwrite: bool = False,
                      progress: bool = False,
                      imperfections: FieldImperfections = FieldImperfections()) -> CohortSummary:
    """Write a cohort simulated from real label maps (`real_subject.make_real_subject`), FreeSurfer ids.

    Without `anatomy_dir`: subjects sub-001 ... from the 16 embedded anatomies, each randomly deformed,
    subject k taking the ((k-1) mod 16)-th anatomy of a seed-dependent order (so the first 16 are 16
    different brains); `b0_dir` (voxel axes) turns each affine (an oblique acquisition). With `anatomy_dir`:
    one subject per label map there (`label_maps.anatomy_files`), `sub-<file stem>`, undeformed, in the
    label map's own physical space (`n_subjects` must be None); `b0_dir` goes to each subject's field.json
    (`B0_dir`) so the affine stays the label map's. `shape`: a fixed grid centred on each brain.
    `anatomies`: deal only these embedded label maps (names as "anatomy_03"), in the seed's order.
    `imperfections`: a residual background field and non-dipolar edge phase in every field
    (`field_imperfections`).

    Raises:
        ValueError: a bad count, seed, voxel size, B0 or level, an unreadable label map (naming it), or a
            non-empty `out_dir` without `overwrite`.
    """
    if anatomy_dir is None:
        if n_subjects is None:
            raise ValueError("give -n/--subjects (subjects drawn from the embedded anatomies) or --anatomy DIR")
        _check_count_and_seed(n_subjects, seed)
        files = [p for p in _anatomy_order(seed) if anatomies is None or label_map_stem(p) in set(anatomies)]
        if not files:
            raise ValueError(f"`anatomies` names none of the embedded label maps (anatomy_01 ... anatomy_16): {anatomies}")
        plan = [(f"sub-{k:03d}", files[(k - 1) % len(files)], k) for k in range(1, int(n_subjects) + 1)]
    else:
        if n_subjects is not None:
            raise ValueError("--anatomy makes one subject per label map; leave out -n/--subjects")
        _check_count_and_seed(1, seed)
        plan = [(_subject_folder_name(label_map_stem(path)), path, k)
                for k, path in enumerate(anatomy_files(anatomy_dir), start=1)]
        if len({name for name, _, _ in plan}) < len(plan):
            raise ValueError(f"--anatomy {anatomy_dir}: two label maps give the same subject name; rename one")
    voxel_size = check_voxel_size(voxel_size)
    b0 = None if b0_dir is None else unit_b0_direction(b0_dir)
    shape = None if shape is None else check_shape(shape)
    check_levels(noise, t1_noise, chi_variation)
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    regions = region_table()
    _write_labels_json(out_dir, regions)

    tally = _Tally()
    start = time.perf_counter()
    for name, path, index in tqdm(plan, desc="mqsm_phantom", unit="subject", disable=not progress):
        embedded = anatomy_dir is None
        subject = make_real_subject(load_anatomy(path), index, seed, voxel_size=voxel_size, shape=shape, b0_dir=b0,
                                    b0_in_affine=embedded, deform=embedded, noise=noise, t1_noise=t1_noise,
                                    chi_variation=chi_variation, imperfections=imperfections)
        _write_subject(out_dir / name, subject, None if embedded else b0)
        tally.add(subject)
    literature = {REGIONS[i]: chi_ppb(STRUCTURE_OF_REGION[i]) for i in REGIONS}
    return CohortSummary(out_dir, len(plan), int(seed), shape, voxel_size, b0, float(noise),
                         tally.mean_chi(regions, literature), (tally.low, tally.high),
                         (time.perf_counter() - start) / len(plan), regions, literature,
                         {name: label_map_stem(path) for name, path, _ in plan}, imperfections)


def _write_template_folder(out_dir: Path, arrays: dict[str, np.ndarray], affine: np.ndarray,
                           regions: dict[str, int], overwrite: bool) -> Path:
    """`TEMPLATE_FILES` into `out_dir`, built under a hidden name beside it and renamed into place; with
    `overwrite`, the template files of an existing folder are replaced one by one, other files kept."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"template output {out_dir} exists and is not a folder; choose another --template")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"template folder {out_dir} is not empty; pass --overwrite (overwrite=True) to replace "
                         "its template files, or choose another --template folder")
    label_type = np.uint8 if int(arrays["labels"].max()) <= 255 else np.uint16
    with atomic_folder(out_dir, merge=True, owned=TEMPLATE_FILES) as build:
        for role, dtype in (("t1", np.float32), ("labels", label_type), ("mask", np.uint8), ("chi", np.float32)):
            write_volume(build / f"{role}.nii.gz", arrays[role], affine, dtype)
        _write_labels_json(build, regions)
    return out_dir


def write_template(out_dir: str | os.PathLike, shape: Sequence[int] = DEFAULT_SHAPE,
                   voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE, seed: int = 0, *, t1_noise: float = 0.0,
                   overwrite: bool = False) -> Path:
    """Write the geometric phantom's template of cohort `seed` (`make_template`) as `TEMPLATE_FILES`.

    Raises:
        ValueError: a bad grid / seed / noise level, or a non-empty `out_dir` without `overwrite`.
    """
    template = make_template(shape, voxel_size, seed, t1_noise=t1_noise)
    arrays = {"t1": template.t1, "labels": template.labels, "mask": template.mask, "chi": template.chi}
    return _write_template_folder(Path(out_dir), arrays, template.affine, LABELS, overwrite)


def write_real_template(out_dir: str | os.PathLike, voxel_size: Sequence[float] = DEFAULT_REAL_VOXEL_SIZE,
                        seed: int = 0, *, shape: Sequence[int] | None = None, overwrite: bool = False,
                        from_last: int = 1) -> Path:
    """Write a registration template for the real-anatomy cohort `seed` as `TEMPLATE_FILES`: the embedded
    anatomy dealt `from_last`-th from the end in the seed's order (a cohort of 16 - `from_last` or fewer
    never uses it; templates 1, 2, 3 are three atlases for multi-atlas registration), undeformed, with
    literature chi (no per-subject variation), no field noise and a noise-free T1, as an atlas would be.

    Raises:
        ValueError: a bad seed, voxel size or `from_last`, or a non-empty `out_dir` without `overwrite`.
    """
    _check_count_and_seed(1, seed)
    order = _anatomy_order(seed)
    if int(from_last) != from_last or not 1 <= from_last <= len(order):
        raise ValueError(f"`from_last` must be an integer from 1 to {len(order)} (the embedded anatomies), "
                         f"got {from_last!r}")
    subject = make_real_subject(load_anatomy(order[-int(from_last)]), 0, seed, voxel_size=voxel_size,
                                shape=shape, deform=False, noise=0.0, t1_noise=0.0, chi_variation=0.0)
    arrays = {"t1": subject.t1, "labels": subject.labels, "mask": subject.mask, "chi": subject.chi}
    return _write_template_folder(Path(out_dir), arrays, subject.affine, region_table(), overwrite)


def template_anatomy(seed: int, from_last: int = 1) -> str:
    """Which embedded anatomy (its stem, e.g. 'anatomy_16') `write_real_template` uses for `seed` and
    `from_last`: what a held-out evaluation must not register to itself."""
    return label_map_stem(_anatomy_order(seed)[-int(from_last)])


def _anatomy_order(seed: int) -> list[Path]:
    """The embedded anatomies in the order cohort `seed` deals them to subjects."""
    files = embedded_anatomies()
    order = np.random.default_rng(np.random.SeedSequence([int(seed), *ANATOMY_ORDER_STREAM])).permutation(len(files))
    return [files[i] for i in order]
