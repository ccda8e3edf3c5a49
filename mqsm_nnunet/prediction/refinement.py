"""Data-consistency refinement: the network's QSM made to explain the measured field.

The network predicts from a local view (its receptive field is a few centimetres); the dipole field
is non-local, and the part of chi it constrains least, the magic-angle cone, is what the support
constraint (chi = 0 outside the brain) pins down through the whole volume. So at prediction the
network's map is the start of `baselines.support_cg` on the case's own field, mask and B0, on the
native grid: a few conjugate-gradient iterations of ``min ||M (D chi - f)||^2`` from the network's
map, the count being the regulariser (as in unrolled learned inversions, whose data-consistency step
this is, done once after the network). Iterations 0 keeps the network's map as it is.
The measured effect and the choice of the default count: docs/training.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mqsm_nnunet.baselines import support_cg
from mqsm_nnunet.physics import b0_direction_from_affine

if TYPE_CHECKING:
    import torch

DEFAULT_REFINE_ITERATIONS = 40
"""Conjugate-gradient iterations from the network's map (chosen on training subjects: docs/training.md)."""


def case_b0(case: str, known: dict[str, Sequence[float]], properties: dict) -> tuple[float, float, float]:
    """The case's B0 in voxel axes (i, j, k): as its conversion recorded it (`known`: the model's
    dataset.json `mqsm.b0_direction` and what mqsm_predict's own conversion found), else from the
    image orientation, as mqsm_convert does when nothing else says (SimpleITK's LPS direction
    matrix and the NIfTI affine's RAS one share world z, so `b0_direction_from_affine` reads either)."""
    if case in known:
        b0 = np.asarray(known[case], dtype=float)
        return tuple(float(v) for v in b0 / np.linalg.norm(b0))
    direction = np.reshape(np.asarray(properties["sitk_stuff"]["direction"], dtype=float), (3, 3))
    return tuple(float(v) for v in b0_direction_from_affine(direction))


@dataclass(frozen=True)
class Refinement:
    """What the export needs to refine one case: its field channel on the preprocessed grid, its B0,
    the iteration count, and where to write the unrefined network map too (None: nowhere)."""

    field: "torch.Tensor | np.ndarray"
    b0_ijk: tuple[float, float, float]
    iterations: int = DEFAULT_REFINE_ITERATIONS
    network_file: Path | None = None

    def apply(self, qsm_zyx: np.ndarray, field_zyx: np.ndarray, inside_zyx: np.ndarray,
              spacing_xyz: Sequence[float]) -> np.ndarray:
        """The refined map on the native grid (SimpleITK (z, y, x) arrays; spacing as SimpleITK gives it).

        Solved in NIfTI voxel order (i, j, k), as every inversion here: for an oblique B0 the discrete
        kernel differs between k = -N/2 and +N/2 (the Nyquist planes), so the half-spectrum FFT's result
        depends slightly on which axis is last, and this way it is the same as `baselines.support_cg`
        on the files (and as the phantom's forward model)."""
        if self.iterations == 0:
            return qsm_zyx
        ijk = (2, 1, 0)
        refined = support_cg(field_zyx.transpose(ijk), tuple(spacing_xyz), self.b0_ijk, inside_zyx.transpose(ijk),
                             iterations=self.iterations, start=qsm_zyx.transpose(ijk))
        return np.ascontiguousarray(refined.transpose(ijk), dtype=np.float32)
