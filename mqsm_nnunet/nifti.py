"""NIfTI reading and writing in NIfTI voxel order (i, j, k), the convention of every public function here.

nibabel keeps arrays in voxel order with the 4x4 affine, which is what the physics needs (voxel
sizes and B0 direction in the same (i, j, k) order). nnU-Net itself reads through SimpleITK; both
libraries agree on the geometry of a NIfTI file, so files written here are read back by nnU-Net with
the same spacing, origin and direction.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class Volume:
    """A 3D array in voxel order (i, j, k) with its voxel-to-world (RAS, mm) affine."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm, in (i, j, k) order."""
        return voxel_size_from_affine(self.affine)


def check_voxel_size(voxel_size) -> tuple[float, float, float]:
    """3 positive finite voxel sizes (mm, (i, j, k) order) as floats.

    Raises:
        ValueError: anything else, showing the value.
    """
    values = np.asarray(voxel_size, dtype=float).ravel()
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"voxel_size must be 3 positive numbers (mm, (i, j, k) order), got {voxel_size!r}")
    return tuple(float(v) for v in values)


def voxel_size_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel edge lengths (mm, (i, j, k) order): the column norms of the affine's 3x3 part."""
    sizes = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    return tuple(float(s) for s in sizes)


def read_volume(path: str | os.PathLike, dtype: type | None = np.float32) -> Volume:
    """Read a 3D NIfTI file (a trailing singleton 4th axis is dropped).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the image is not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {data.shape}")
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return Volume(np.ascontiguousarray(data), np.asarray(image.affine, dtype=float))


def write_volume(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, dtype: type | None = None) -> Path:
    """Write a 3D array in voxel order with the given affine (sform and qform both set, code 1).

    The file is written to a temporary name first and renamed, so an interrupted write never
    leaves a truncated NIfTI behind.
    """
    path = Path(path)
    array = np.asarray(data if dtype is None else np.asarray(data).astype(dtype))
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D array, got shape {array.shape}")
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=float))
    image.set_sform(np.asarray(affine, dtype=float), code=1)
    image.set_qform(np.asarray(affine, dtype=float), code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    nib.save(image, str(tmp))
    os.replace(tmp, path)
    return path
