"""training.geometry: B0 carried from NIfTI voxel axes into nnU-Net's preprocessed frame and into an
augmented patch's own frame, read from the voxel-coordinate channels (fast: no nnU-Net run)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mqsm_nnunet.training.geometry import (b0_in_patch_frame, b0_in_preprocessed_frame, is_exact_regrid,
                                           sampling_matrix)


def grid_coordinates(shape=(5, 6, 7)) -> torch.Tensor:
    """(3, X, Y, Z) source positions of each voxel (1-based, as the coordinate channels hold them)."""
    return torch.stack(torch.meshgrid(*[torch.arange(1.0, n + 1) for n in shape], indexing="ij"))


def test_b0_in_the_preprocessed_frame_follows_sitk_axis_order_and_transpose():
    np.testing.assert_allclose(b0_in_preprocessed_frame((1, 0, 0), (0, 1, 2)), (0, 0, 1))
    np.testing.assert_allclose(b0_in_preprocessed_frame((0, 0, 2), (2, 0, 1)), (0, 1, 0))  # new axis a = old t[a]
    with pytest.raises(ValueError, match="B0 direction must be 3 numbers"):
        b0_in_preprocessed_frame((0, 0, 0), (0, 1, 2))


def test_a_flip_flips_the_b0_component_along_it():
    matrix = sampling_matrix(grid_coordinates().flip(1)[None])
    torch.testing.assert_close(matrix[0], torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)))
    b = b0_in_patch_frame(torch.tensor([[0.6, 0.0, 0.8]]), matrix, (1.0, 1.0, 1.0))
    torch.testing.assert_close(b, torch.tensor([[-0.6, 0.0, 0.8]]))
    assert is_exact_regrid(matrix).item()


def test_an_axis_swap_moves_b0_with_it_and_is_an_exact_regrid():
    """Patch axes (0, 1) are source axes (1, 0): B0 along source axis 0 lies along patch axis 1."""
    swapped = grid_coordinates((6, 6, 7))[[1, 0, 2]][None]   # patch voxel (x, y, z) holds source (y, x, z)
    matrix = sampling_matrix(swapped)
    torch.testing.assert_close(matrix[0], torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64))
    b = b0_in_patch_frame(torch.tensor([[1.0, 0.0, 0.0]]), matrix, (1.0, 1.0, 1.0))
    torch.testing.assert_close(b, torch.tensor([[0.0, 1.0, 0.0]]))
    assert is_exact_regrid(matrix).item()


def test_a_rotated_patch_rotates_b0_by_the_transpose_and_is_resampled():
    """A patch rotated by 30 degrees about axis 2: b' = A^T b (isotropic voxels), unit length."""
    angle = np.deg2rad(30)
    rotation = torch.tensor([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]],
                            dtype=torch.float32)
    patch = grid_coordinates((9, 9, 5)) - 5.0
    source = torch.einsum("ij,jxyz->ixyz", rotation, patch) + 20.0   # positions well inside the data
    matrix = sampling_matrix(source[None])
    torch.testing.assert_close(matrix[0], rotation.double(), atol=1e-6, rtol=0)
    b = b0_in_patch_frame(torch.tensor([[0.0, 1.0, 0.0]]), matrix, (1.0, 1.0, 1.0))
    torch.testing.assert_close(b[0], (rotation.T @ torch.tensor([0.0, 1.0, 0.0])).float(), atol=1e-6, rtol=0)
    assert not is_exact_regrid(matrix).item()


def test_anisotropic_spacing_enters_the_patch_frame_in_mm():
    """Same voxel mapping (identity), anisotropic voxels: B0 stays the same unit vector."""
    matrix = sampling_matrix(grid_coordinates()[None])
    b = b0_in_patch_frame(torch.tensor([[0.0, 0.6, 0.8]]), matrix, (1.0, 1.0, 3.0))
    torch.testing.assert_close(b, torch.tensor([[0.0, 0.6, 0.8]]))


def test_an_unreadable_patch_geometry_is_refused():
    with pytest.raises(ValueError, match="patch geometry could not be read"):
        b0_in_patch_frame(torch.tensor([[0.0, 0.0, 1.0]]), torch.full((1, 3, 3), float("nan")), (1.0, 1.0, 1.0))
