"""Real-anatomy label maps: the 16 that ship with the package, and a user's own (NIfTI or .mgz).

`prepare_anatomy` turns a FreeSurfer-id label map into what the simulation needs: the cohort's regions
inside a brain mask (merged ids folded, the iron nuclei added), head tissue ids outside it. The
embedded maps are SynthSeg's training label maps (Billot et al. 2023, Apache-2.0; `anatomies/SOURCE.md`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mqsm_nnunet.io.grid import check_voxel_size
from mqsm_nnunet.phantom.freesurfer import (BACKGROUND, CSF, EXTRA_CEREBRAL_CSF, MERGED_INTO, REGIONS,
                                            is_brain_id)
from mqsm_nnunet.phantom.iron_nuclei import add_iron_nuclei

EMBEDDED_DIR = Path(__file__).resolve().parent / "anatomies"
LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".mgz")
MASK_CLOSING_MM = 3.0
"""The brain mask is the brain tissue closed by this radius (sulci filled) with its holes filled: CSF
inside it (sulci, cisterns) is the region CSF; CSF outside it is extra-cerebral (head)."""


@dataclass(frozen=True)
class Anatomy:
    """A label map ready for simulation (voxel order, world mm through `affine`).

    `labels` holds `freesurfer.REGIONS` ids inside the brain, 0 for air and head tissue ids (>= 85,
    `EXTRA_CEREBRAL_CSF` for CSF outside the brain) elsewhere; `name` is the file's stem.
    """

    name: str
    labels: np.ndarray
    affine: np.ndarray

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def brain(self) -> np.ndarray:
        return np.isin(self.labels, list(REGIONS))


def label_map_stem(path: Path) -> str:
    """The file name without its label-map suffix (`bert_aseg.mgz` -> `bert_aseg`)."""
    for suffix in LABEL_MAP_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def embedded_anatomies() -> list[Path]:
    """The 16 label maps shipped in the package, in order (anatomy_01 ... anatomy_16)."""
    return sorted(EMBEDDED_DIR.glob("anatomy_*.nii.gz"))


def anatomy_files(folder: str | os.PathLike) -> list[Path]:
    """The label maps of a folder (`*.nii.gz`, `*.nii`, `*.mgz`), sorted by name.

    Raises:
        ValueError: the folder does not exist or holds no label map.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--anatomy {folder}: no such folder; give a folder of label maps (.nii.gz, .nii or .mgz)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(LABEL_MAP_SUFFIXES))
    if not files:
        raise ValueError(f"--anatomy {folder}: no label map in it (.nii.gz, .nii or .mgz with FreeSurfer ids, "
                         "e.g. FreeSurfer's aseg.mgz or a SynthSeg output)")
    return files


def read_label_map(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(integer label map in voxel order, affine) of a NIfTI or FreeSurfer .mgz file.

    Raises:
        ValueError: unreadable, not 3D, non-integer values, a bad affine, or no brain id in it (naming the file).
    """
    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises several types for damaged or foreign files
        raise ValueError(f"{path}: not a readable NIfTI / .mgz label map ({error})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: a label map must be 3D; got shape {data.shape}")
    if not np.all(np.isfinite(data)) or np.any(data != np.rint(data)) or data.min() < 0:
        raise ValueError(f"{path}: a label map holds non-negative integer ids; this file has other values "
                         "(an intensity image?)")
    affine = np.asarray(image.affine, dtype=float)
    check_voxel_size(np.linalg.norm(affine[:3, :3], axis=0))
    labels = np.rint(data).astype(np.int32)
    if not is_brain_id(labels).any():
        raise ValueError(f"{path}: no FreeSurfer brain id (1-99) in this label map; mqsm_phantom --anatomy needs "
                         "aseg-style labels (FreeSurfer aseg.mgz, SynthSeg, FastSurfer)")
    return labels, affine


def _brain_mask(labels: np.ndarray, voxel_size: tuple[float, float, float]) -> np.ndarray:
    """Brain tissue (brain ids without CSF) closed by `MASK_CLOSING_MM`, holes filled."""
    tissue = is_brain_id(labels) & (labels != CSF)
    radius = [max(1, round(MASK_CLOSING_MM / v)) for v in voxel_size]
    ball = np.ones([2 * r + 1 for r in radius], dtype=bool)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball &= sum((g / r) ** 2 for g, r in zip(grid, radius)) <= 1.0
    closed = ndimage.binary_closing(np.pad(tissue, max(radius)), ball)
    closed = closed[tuple(slice(max(radius), -max(radius)) for _ in range(3))]
    return ndimage.binary_fill_holes(closed | tissue)


def _fold_into_regions(labels: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Every brain voxel labelled with a kept region: `MERGED_INTO` first, then the nearest kept region."""
    out = labels.copy()
    for source, target in MERGED_INTO.items():
        out[out == source] = target
    stray = brain & ~np.isin(out, list(REGIONS))
    if stray.any():
        kept = brain & ~stray
        _, nearest = ndimage.distance_transform_edt(~kept, return_indices=True)
        out[stray] = out[tuple(index[stray] for index in nearest)]
    return out


def prepare_anatomy(labels: np.ndarray, affine: np.ndarray, name: str) -> Anatomy:
    """A FreeSurfer-id label map as the simulation uses it (see `Anatomy`)."""
    voxel_size = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    mask = _brain_mask(labels, voxel_size)
    brain = mask & (is_brain_id(labels) | (labels == BACKGROUND))
    regions = _fold_into_regions(np.where(brain, labels, BACKGROUND).astype(np.int32), brain)
    regions[brain & (regions == BACKGROUND)] = CSF
    head = np.where(labels == CSF, EXTRA_CEREBRAL_CSF, labels)
    prepared = np.where(brain, regions, np.where(is_brain_id(labels), EXTRA_CEREBRAL_CSF, head)).astype(np.int32)
    return Anatomy(name, add_iron_nuclei(prepared, affine), affine)


def load_anatomy(path: str | os.PathLike) -> Anatomy:
    """Read and prepare one label map (`read_label_map`, `prepare_anatomy`), named after its file."""
    path = Path(path)
    labels, affine = read_label_map(path)
    return prepare_anatomy(labels, affine, label_map_stem(path))
