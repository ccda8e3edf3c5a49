"""Damaged NIfTI files as they turn up in practice, for the tests of the reader and of the commands:
gzip corruption at several positions, truncation, broken voxel sizes, and geometry that SimpleITK
(what nnU-Net reads with) and nibabel (what we read with) would see differently."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np


def _flip(raw: bytes, position: int, mask: int = 0xFF) -> bytes:
    return raw[:position] + bytes([raw[position] ^ mask]) + raw[position + 1:]


def _deflate_start(raw: bytes) -> int:
    """Offset of the compressed data in a gzip member (after the header and its file name)."""
    start = 10
    if raw[3] & 0x08:  # FNAME
        start = raw.index(b"\x00", start) + 1
    return start


CORRUPTIONS = {
    "crc": lambda raw: _flip(raw, len(raw) - 8),                    # CRC32 trailer
    "length": lambda raw: _flip(raw, len(raw) - 2),                 # ISIZE trailer
    "middle": lambda raw: _flip(raw, len(raw) // 2, 0x55),          # compressed voxel data
    "early": lambda raw: _flip(raw, _deflate_start(raw) + 3, 0x01),  # compressed header
    "truncated": lambda raw: raw[:len(raw) // 2],
    "not nifti": lambda raw: b"not a NIfTI file at all",
}
"""How -> damage done to the bytes of a .nii.gz file."""


def corrupt(path: Path, how: str) -> None:
    path.write_bytes(CORRUPTIONS[how](path.read_bytes()))


def expected_words(how: str) -> str:
    """What the reader's message says for each damage."""
    return "not a NIfTI" if how == "not nifti" else "corrupted"


def save_header(path: Path, *, sform: np.ndarray | None, sform_code: int, qform: np.ndarray | None,
                qform_code: int) -> None:
    """Rewrite `path` with the given sform / qform and codes (what a scanner export may hold)."""
    data = np.asanyarray(nib.load(str(path)).dataobj)
    image = nib.Nifti1Image(data, None)
    if qform is not None:
        image.set_qform(qform, qform_code)
    if sform is not None:
        image.set_sform(sform, sform_code)
    image.header["sform_code"], image.header["qform_code"] = sform_code, qform_code
    nib.save(image, str(path))


def patch_pixdim(path: Path, axis: int, value: float) -> None:
    """Set pixdim[axis] in the raw header bytes (nibabel's writer would repair a 0) and make the
    qform the geometry (sform code 0)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<f", raw, 76 + 4 * axis, value)
    struct.pack_into("<h", raw, 254, 0)
    path.write_bytes(gzip.compress(bytes(raw)))


def _affine(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).affine, dtype=float)


def sheared(path: Path) -> None:
    affine = _affine(path).copy()
    affine[0, 1] = 3.0
    save_header(path, sform=affine, sform_code=1, qform=None, qform_code=0)


def singular(path: Path) -> None:
    affine = _affine(path).copy()
    affine[:3, 1] = affine[:3, 0]
    save_header(path, sform=affine, sform_code=1, qform=None, qform_code=0)


def disagreeing(path: Path) -> None:
    """sform (code 2, nibabel's choice) and a flipped, shifted qform (code 1, SimpleITK's choice)."""
    affine = _affine(path)
    flipped = affine.copy()
    flipped[:3, 0] *= -1
    flipped[:3, 3] += 8.0
    save_header(path, sform=affine, sform_code=2, qform=flipped, qform_code=1)


def no_orientation(path: Path) -> None:
    save_header(path, sform=None, sform_code=0, qform=None, qform_code=0)
