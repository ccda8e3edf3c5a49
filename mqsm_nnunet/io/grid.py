"""Voxel grids in NIfTI voxel order (i, j, k): voxel sizes, and one rule for "the same grid".

Every command that pairs two images of a subject (mask and field map, QSM and segmentation,
prediction and reference) and the image reader itself (SimpleITK against nibabel) compare grids
here, so a pair that one command accepts is accepted by all.

The rule: two grids are the same when their shapes are equal and the world positions (mm) of
corresponding voxel centres differ by at most `GRID_TOLERANCE_MM` anywhere in the volume. The map
between the two grids is affine, so the largest difference sits at one of the 8 corner voxels and
checking those is exact. 0.01 mm is far above what NIfTI's float32 affines and quaternions round
away (about 1e-5 mm over a 256-voxel volume) and far below a real misalignment (a tenth of a
1 mm voxel is 0.1 mm).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

GRID_TOLERANCE_MM = 1e-2
"""Largest distance (mm) between corresponding voxel centres of two grids that count as the same."""


def check_voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    """3 finite positive voxel sizes (mm, (i, j, k) order) as floats.

    Raises:
        ValueError: anything else, showing the value.
    """
    try:
        values = np.asarray(voxel_size, dtype=float).ravel()
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"voxel_size must be 3 finite positive numbers (mm, (i, j, k) order), got {voxel_size!r}")
    return tuple(float(v) for v in values)


def voxel_size_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel edge lengths in mm, (i, j, k) order: the column norms of the affine's 3x3 part."""
    sizes = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    return tuple(float(s) for s in sizes)


def corner_distance(affine: np.ndarray, other: np.ndarray, shape: Sequence[int]) -> float:
    """Largest world distance (mm) between the voxel centres that `affine` and `other` give the
    same index, over a grid of `shape` (attained at a corner, the map being affine)."""
    corners = np.array(list(itertools.product(*[(0, max(int(n) - 1, 0)) for n in shape])), dtype=float)
    difference = np.asarray(affine, dtype=float)[:3] - np.asarray(other, dtype=float)[:3]
    return float(np.max(np.linalg.norm(corners @ difference[:, :3].T + difference[:, 3], axis=1)))


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def grid_mismatch(affine: np.ndarray, shape: Sequence[int], reference_affine: np.ndarray,
                  reference_shape: Sequence[int], reference_name: str = "the reference") -> str | None:
    """How a grid differs from the reference beyond `GRID_TOLERANCE_MM`, or None when they are the same.

    The text names what differs (shape, spacing, origin, axis directions) and how far apart the
    voxel centres are.
    """
    if tuple(shape) != tuple(reference_shape):
        return f"shape {tuple(shape)} vs {tuple(reference_shape)} of {reference_name}"
    affine, reference_affine = np.asarray(affine, dtype=float), np.asarray(reference_affine, dtype=float)
    distance = corner_distance(affine, reference_affine, shape)
    if distance <= GRID_TOLERANCE_MM:
        return None
    extent = max(max(int(n) - 1, 1) for n in shape)
    spacing, reference_spacing = np.array(voxel_size_from_affine(affine)), np.array(voxel_size_from_affine(reference_affine))
    parts = []
    if np.any(np.abs(spacing - reference_spacing) * extent > GRID_TOLERANCE_MM):
        parts.append(f"spacing {_fmt(spacing)} mm vs {_fmt(reference_spacing)} mm")
    if np.linalg.norm(affine[:3, 3] - reference_affine[:3, 3]) > GRID_TOLERANCE_MM:
        parts.append(f"origin {_fmt(affine[:3, 3])} mm vs {_fmt(reference_affine[:3, 3])} mm")
    directions = affine[:3, :3] / np.where(spacing > 0, spacing, 1)
    reference_directions = reference_affine[:3, :3] / np.where(reference_spacing > 0, reference_spacing, 1)
    if np.any(np.abs(directions - reference_directions) * spacing * extent > GRID_TOLERANCE_MM):
        parts.append(f"orientation {_fmt(directions.ravel())} vs {_fmt(reference_directions.ravel())}")
    return (f"{'; '.join(parts) or 'affine'} of {reference_name} (their affines put voxel centres up to "
            f"{distance:.3g} mm apart; tolerance {GRID_TOLERANCE_MM:g} mm)")


def check_same_grid(path, affine: np.ndarray, shape: Sequence[int], reference_path, reference_affine: np.ndarray,
                    reference_shape: Sequence[int]) -> None:
    """Refuse two images of one case that are not on the same grid, naming both files.

    Raises:
        ValueError: shapes differ or voxel centres lie more than `GRID_TOLERANCE_MM` apart.
    """
    mismatch = grid_mismatch(affine, shape, reference_affine, reference_shape, str(reference_path))
    if mismatch is not None:
        raise ValueError(f"{path} is not on the grid of {reference_path}: {mismatch}; both must be on one "
                         "grid in the same native space (resample one onto the other)")
