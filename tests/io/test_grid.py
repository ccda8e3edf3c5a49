"""grid: voxel sizes and the one same-grid rule (corner distance within GRID_TOLERANCE_MM)."""
from __future__ import annotations

import numpy as np
import pytest

from mqsm_nnunet.io.grid import (GRID_TOLERANCE_MM, check_same_grid, check_voxel_size, corner_distance, grid_mismatch,
                              voxel_size_from_affine)

SHAPE = (10, 12, 8)
AFFINE = np.array([[2.0, 0, 0, -10], [0, 1.5, 0, 5], [0, 0, 3.0, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("value", [(1, 2, 3), [0.5, 0.5, 0.5], np.array([1.0, 1.0, 2.0])])
def test_check_voxel_size_accepts_three_positive_numbers(value):
    assert check_voxel_size(value) == tuple(float(v) for v in value)


@pytest.mark.parametrize("value", [(1, 2), (1, 0, 1), (1, -1, 1), (1, np.nan, 1), (1, np.inf, 1), "abc", None])
def test_check_voxel_size_refuses_anything_else(value):
    with pytest.raises(ValueError, match="voxel_size"):
        check_voxel_size(value)


def test_voxel_size_is_the_column_norm():
    rotation = np.array([[0.6, -0.8, 0], [0.8, 0.6, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * [2.0, 3.0, 4.0]
    assert voxel_size_from_affine(affine) == pytest.approx((2.0, 3.0, 4.0))


def test_corner_distance_closed_forms():
    moved = AFFINE.copy()
    moved[:3, 3] += [0.3, 0.4, 0.0]
    assert corner_distance(AFFINE, moved, SHAPE) == pytest.approx(0.5)  # a translation moves every voxel by |t|
    stretched = AFFINE.copy()
    stretched[0, 0] *= 1.01
    assert corner_distance(AFFINE, stretched, SHAPE) == pytest.approx(0.02 * (SHAPE[0] - 1))  # largest at i = N-1


def test_within_the_tolerance_is_the_same_grid():
    moved = AFFINE.copy()
    moved[:3, 3] += 0.5 * GRID_TOLERANCE_MM
    assert grid_mismatch(moved, SHAPE, AFFINE, SHAPE) is None
    check_same_grid("a.nii.gz", moved, SHAPE, "b.nii.gz", AFFINE, SHAPE)


@pytest.mark.parametrize("change, word", [
    (lambda a: a.__setitem__((0, 3), a[0, 3] + 2 * GRID_TOLERANCE_MM), "origin"),
    (lambda a: a.__setitem__((1, 1), a[1, 1] * 1.001), "spacing"),
    (lambda a: a.__setitem__((slice(0, 3), 0), -a[:3, 0]), "orientation"),
])
def test_beyond_the_tolerance_says_what_differs(change, word):
    other = AFFINE.copy()
    change(other)
    message = grid_mismatch(other, SHAPE, AFFINE, SHAPE, "the field map")
    assert message is not None and word in message and "the field map" in message and "mm apart" in message


def test_another_shape_is_another_grid_and_both_files_are_named():
    with pytest.raises(ValueError, match=r"mask.nii.gz is not on the grid of field.nii.gz: shape \(10, 12, 7\)"):
        check_same_grid("mask.nii.gz", AFFINE, (10, 12, 7), "field.nii.gz", AFFINE, SHAPE)
