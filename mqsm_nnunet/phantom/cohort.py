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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mqsm_nnunet.io.files import atomic_folder, write_text_atomic
from mqsm_nnunet.io.nifti import write_volume
from mqsm_nnunet.phantom.anatomy import LABELS, SUSCEPTIBILITY_PPB
from mqsm_nnunet.phantom.subject import (DEFAULT_CHI_VARIATION, DEFAULT_FIELD_NOISE, DEFAULT_SHAPE, DEFAULT_T1_NOISE,
                                         DEFAULT_VOXEL_SIZE, check_grid, check_levels, check_supersampling,
                                         make_subject, make_template)

# Entries of OUT that the generator owns (replaced with --overwrite); anything else is left alone.
_OWNED = re.compile(r"^(labels\.json|sub-\d+|\.sub-\d+\..+)$")
TEMPLATE_FILES = ("t1.nii.gz", "labels.nii.gz", "mask.nii.gz", "chi.nii.gz", "labels.json")


@dataclass(frozen=True)
class CohortSummary:
    """What `write_cohort` wrote: grid, B0, per-region true susceptibility (ppb, mean over subjects of
    each subject's regional mean) and the range of the written field (ppm)."""

    out_dir: Path
    n_subjects: int
    seed: int
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    b0_dir: tuple[float, float, float]
    noise: float
    mean_chi_ppb: dict[str, float]
    field_range_ppm: tuple[float, float]
    seconds_per_subject: float

    def report(self) -> str:
        """Human-readable cohort summary (what `mqsm_phantom` prints)."""
        fov = " x ".join(f"{n * v:g}" for n, v in zip(self.shape, self.voxel_size))
        lines = [
            f"mqsm_phantom: {self.n_subjects} subject(s) in {self.out_dir} (seed {self.seed}, "
            f"{self.seconds_per_subject:.2f} s per subject)",
            f"  grid {' x '.join(map(str, self.shape))} voxels of {' x '.join(f'{v:g}' for v in self.voxel_size)} mm"
            f" (field of view {fov} mm)",
            f"  B0 direction (voxel axes i, j, k): ({', '.join(f'{v:.4g}' for v in self.b0_dir)})",
            f"  field: {self.field_range_ppm[0]:.4f} .. {self.field_range_ppm[1]:.4f} ppm"
            f" (noise sd {100 * self.noise:g} % of the in-brain field sd)",
            f"  {len(self.mean_chi_ppb)} regions (labels.json); true susceptibility in ppb,"
            " mean over subjects | literature:",
        ]
        for name, value in self.mean_chi_ppb.items():
            lines.append(f"    {LABELS[name]:3d} {name:<22s} {value:8.1f} | {SUSCEPTIBILITY_PPB[name]:6.0f}")
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


def _write_labels_json(out_dir: Path) -> None:
    write_text_atomic(out_dir / "labels.json", json.dumps(LABELS, indent=2) + "\n")


def write_cohort(out_dir: str | os.PathLike, n_subjects: int, shape: Sequence[int] = DEFAULT_SHAPE,
                 voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE, b0_dir: Sequence[float] | None = None,
                 seed: int = 0, *, noise: float = DEFAULT_FIELD_NOISE, t1_noise: float = DEFAULT_T1_NOISE,
                 chi_variation: float = DEFAULT_CHI_VARIATION, supersampling: int | None = None,
                 overwrite: bool = False, progress: bool = False) -> CohortSummary:
    """Write subjects 1..n_subjects of cohort `seed` (see `make_subject` for the arguments).

    Raises:
        ValueError: n_subjects < 1, a bad grid / B0 / level, or a non-empty `out_dir` without
            `overwrite` (with it, labels.json and sub-* folders are replaced, other files kept).
    """
    if int(n_subjects) != n_subjects or n_subjects < 1:
        raise ValueError(f"n_subjects (-n/--subjects) must be an integer >= 1; got {n_subjects}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed}")
    shape, voxel_size, b0 = check_grid(shape, voxel_size, b0_dir)
    check_levels(noise, t1_noise, chi_variation)
    check_supersampling(supersampling)
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    _write_labels_json(out_dir)

    sums = np.zeros(len(LABELS))
    present = np.zeros(len(LABELS))
    low, high = np.inf, -np.inf
    start = time.perf_counter()
    for index in tqdm(range(1, int(n_subjects) + 1), desc="mqsm_phantom", unit="subject", disable=not progress):
        subject = make_subject(index, shape, voxel_size, b0, seed, noise=noise, t1_noise=t1_noise,
                               chi_variation=chi_variation, supersampling=supersampling)
        name = f"sub-{index:03d}"
        with atomic_folder(out_dir / name) as build:
            for role, data, dtype in (("t1", subject.t1, np.float32), ("field", subject.field, np.float32),
                                      ("mask", subject.mask, np.uint8), ("labels", subject.labels, np.uint8),
                                      ("chi", subject.chi, np.float32)):
                write_volume(build / f"{role}.nii.gz", data, subject.affine, dtype)
        counts = np.bincount(subject.labels.ravel(), minlength=len(LABELS))
        totals = np.bincount(subject.labels.ravel(), weights=subject.chi.ravel(), minlength=len(LABELS))
        found = counts > 0
        sums[found] += 1000.0 * totals[found] / counts[found]
        present += found
        low, high = min(low, float(subject.field.min())), max(high, float(subject.field.max()))

    mean_chi = {name: float(sums[LABELS[name]] / present[LABELS[name]])
                for name in SUSCEPTIBILITY_PPB if present[LABELS[name]]}
    return CohortSummary(out_dir, int(n_subjects), int(seed), shape, voxel_size, b0, float(noise), mean_chi,
                         (low, high), (time.perf_counter() - start) / n_subjects)


def write_template(out_dir: str | os.PathLike, shape: Sequence[int] = DEFAULT_SHAPE,
                   voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE, seed: int = 0, *, t1_noise: float = 0.0,
                   overwrite: bool = False) -> Path:
    """Write the template of cohort `seed` (`make_template`) as `TEMPLATE_FILES` into `out_dir`.

    The folder is built under a hidden name beside `out_dir` and renamed into place; with
    `overwrite`, the template files of an existing folder are replaced one by one, other files kept.

    Raises:
        ValueError: a bad grid / seed / noise level, or a non-empty `out_dir` without `overwrite`.
    """
    template = make_template(shape, voxel_size, seed, t1_noise=t1_noise)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"template output {out_dir} exists and is not a folder; choose another --template")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"template folder {out_dir} is not empty; pass --overwrite (overwrite=True) to replace "
                         "its template files, or choose another --template folder")
    with atomic_folder(out_dir, merge=True, owned=TEMPLATE_FILES) as build:
        for role, data, dtype in (("t1", template.t1, np.float32), ("labels", template.labels, np.uint8),
                                  ("mask", template.mask, np.uint8), ("chi", template.chi, np.float32)):
            write_volume(build / f"{role}.nii.gz", data, template.affine, dtype)
        _write_labels_json(build)
    return out_dir
