"""NIfTI reading and writing in NIfTI voxel order (i, j, k), the convention of every public function here.

nibabel keeps arrays in voxel order with the 4x4 affine, which is what the physics needs (voxel
sizes and B0 direction in the same (i, j, k) order). nnU-Net reads the same files through
SimpleITK, so `read_volume` also asks SimpleITK for the geometry and refuses a file the two
libraries place differently in the world (a sheared affine, sform and qform that disagree): such
a file would be trained on in one orientation and analysed in another.

`read_volume` is the one way every command reads an image. It reads the whole file, so a
corrupted `.nii.gz` is noticed (gzip CRC and length, truncation) and reported as corrupted rather
than decoded into wrong voxels.
"""
from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mqsm_nnunet.io.files import atomic_file
from mqsm_nnunet.io.grid import GRID_TOLERANCE_MM, corner_distance, voxel_size_from_affine

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_CLASSES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_SHEAR_COSINE = 1e-4
"""Largest |cos| between two voxel axes of an unsheared affine (float32 rounding is far below)."""


@dataclass(frozen=True)
class Volume:
    """A 3D array in voxel order (i, j, k) with its voxel-to-world (RAS, mm) affine."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm, in (i, j, k) order."""
        return voxel_size_from_affine(self.affine)


def _uncompressed(path: Path) -> bytes:
    """The file's bytes, gunzipped when compressed; every gzip member's CRC and length checked."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: file is corrupted (gzip: {error}); copy or export it again") from None


def _image(path: Path, raw: bytes) -> nib.Nifti1Image:
    size = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0
    if size not in _HEADER_CLASSES:
        size = int.from_bytes(raw[:4], "big")
    if size not in _HEADER_CLASSES:
        raise ValueError(f"{path}: not a NIfTI image (no NIfTI-1 or NIfTI-2 header); file corrupted or of another "
                         "format? Convert it to NIfTI (.nii.gz)")
    image_class = _HEADER_CLASSES[size]
    try:
        stored = image_class.header_class.from_fileobj(io.BytesIO(raw), check=False)
        pixdim = np.asarray(stored["pixdim"][1:4], dtype=float)
        # nibabel's loader repairs some header fields silently (a zero pixdim becomes 1 mm); our checks speak instead
        with warnings.catch_warnings(), nib.imageglobals.LoggingOutputSuppressor():
            warnings.simplefilter("ignore")
            image = image_class.from_bytes(raw)
    except Exception as error:  # nibabel raises several types for a broken header
        raise ValueError(f"{path}: file is corrupted (unreadable NIfTI header: {error})") from None
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):
        raise ValueError(f"{path}: voxel size (header pixdim) {tuple(float(v) for v in pixdim)} mm; voxel sizes must "
                         "be positive and finite: fix the header")
    proxy = image.dataobj
    needed = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    if len(raw) < needed:
        raise ValueError(f"{path}: file is corrupted (truncated: {len(raw)} of {needed} bytes); copy or export it "
                         "again")
    return image


def _check_affine(path: Path, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)):
        raise ValueError(f"{path}: the header's affine holds NaN or Inf; fix the header (sform / qform)")
    sizes = np.array(voxel_size_from_affine(affine))
    if np.any(sizes <= 0):
        raise ValueError(f"{path}: voxel size {tuple(float(s) for s in sizes)} mm in the header; voxel sizes must be "
                         "positive: fix the header (pixdim / sform)")
    axes = affine[:3, :3] / sizes
    if abs(np.linalg.det(axes)) < 1e-6:
        raise ValueError(f"{path}: singular affine (two voxel axes point the same way); fix the header (sform / qform)")
    cosines = np.abs(axes.T @ axes - np.eye(3))
    if cosines.max() > _SHEAR_COSINE:
        raise ValueError(f"{path}: sheared affine (voxel axes not perpendicular, |cos| up to {cosines.max():.3g}); "
                         "SimpleITK, which nnU-Net reads with, cannot represent it: resample the image onto a grid "
                         "with perpendicular axes")


def _sitk_affine(path: Path) -> np.ndarray:
    """The voxel-to-world (RAS) affine SimpleITK reads from the header (what nnU-Net sees)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise ValueError(f"{path}: SimpleITK, which nnU-Net reads with, cannot read it ({reason})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    dimension = reader.GetDimension()
    direction = np.array(reader.GetDirection()).reshape(dimension, dimension)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction * np.array(reader.GetSpacing())[:3]
    affine[:3, 3] = _LPS_TO_RAS @ np.array(reader.GetOrigin())[:3]
    return affine


def read_volume(path: str | os.PathLike, dtype: type | None = np.float32) -> Volume:
    """Read a 3D NIfTI file completely and check it (a trailing singleton 4th axis is dropped).

    Checked: the whole file decodes (gzip CRC and length, no truncation); 3D; a finite affine with
    positive voxel sizes and perpendicular, independent axes; SimpleITK places the voxels where
    nibabel does (`grid.GRID_TOLERANCE_MM`).

    Raises:
        FileNotFoundError: the file does not exist.
        PermissionError: it cannot be read.
        ValueError: any check above failed; the message names the file and says "corrupted" for
            a damaged file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    image = _image(path, _uncompressed(path))
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # a header whose data description does not fit the bytes
        raise ValueError(f"{path}: file is corrupted (voxel data unreadable: {error})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {data.shape}")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        affine = np.asarray(image.affine, dtype=float)
    _check_affine(path, affine)
    distance = corner_distance(affine, _sitk_affine(path), data.shape)
    if distance > GRID_TOLERANCE_MM:
        codes = int(image.header["sform_code"]), int(image.header["qform_code"])
        cause = ("the header has no orientation (sform and qform codes 0): set it from the scanner geometry"
                 if codes == (0, 0) else f"its sform (code {codes[0]}) and qform (code {codes[1]}) disagree and each "
                 "library uses another: make them equal (e.g. nibabel img.set_qform(img.get_sform()))")
        raise ValueError(f"{path}: SimpleITK (what nnU-Net reads with) and nibabel place this image differently in "
                         f"the world (voxel centres up to {distance:.3g} mm apart); {cause}")
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return Volume(np.ascontiguousarray(data), affine)


def write_volume(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, dtype: type | None = None) -> Path:
    """Write a 3D array in voxel order with the given affine (sform and qform both set, code 1),
    through `files.atomic_file`, so an interrupted write never leaves a truncated NIfTI behind."""
    path = Path(path)
    array = np.asarray(data if dtype is None else np.asarray(data).astype(dtype))
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D array, got shape {array.shape}")
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=float))
    image.set_sform(np.asarray(affine, dtype=float), code=1)
    image.set_qform(np.asarray(affine, dtype=float), code=1)
    with atomic_file(path) as tmp:
        nib.save(image, str(tmp))
    return path
