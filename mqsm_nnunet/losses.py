"""Self-supervised QSM reconstruction loss of mQSM (paper Eq. 5), in torch.

The segmentation loss (paper Eq. 6: Dice + CE with deep-supervision weights) is nnU-Net's own
``DC_and_CE_loss`` wrapped in ``DeepSupervisionWrapper``, set up by the trainer; nothing here.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mqsm_nnunet.physics import sobel_kernel

_SOBEL_WEIGHT = np.stack([sobel_kernel(axis) for axis in range(3)])[:, None].astype(np.float32)  # (3, 1, 3, 3, 3)


def sobel_gradients_torch(x: torch.Tensor) -> torch.Tensor:
    """Sobel derivatives along the three voxel axes: (B, 1, X, Y, Z) -> (B, 3, X, Y, Z).

    The torch twin of ``mqsm_nnunet.physics.sobel_gradients`` (same kernels, correlation, edge-replicate
    boundaries), differentiable, per-voxel units (no division by the voxel size).
    """
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"x must have shape (B, 1, X, Y, Z), got {tuple(x.shape)}")
    weight = torch.from_numpy(_SOBEL_WEIGHT).to(device=x.device, dtype=x.dtype)
    return F.conv3d(F.pad(x, (1,) * 6, mode="replicate"), weight)


class ReconstructionLossTerms(NamedTuple):
    """total = consistency + morph_weight * morphology; each a scalar tensor (mean over samples)."""

    total: torch.Tensor
    consistency: torch.Tensor
    morphology: torch.Tensor


class ReconstructionLoss(nn.Module):
    """L_rec = L_C + morph_weight * L_M (paper Eq. 5), inside the brain mask.

    - Consistency: L_C = mean over mask voxels of |QSM-| * |QSM- - QSM| / rms(QSM-)^2: the prediction
      is held to QSM- where QSM- is large (confident), free where QSM- is near 0 (streaking-prone).
      The division by the squared RMS of QSM- inside the sample's mask makes L_C unit-free like the
      z-scored L_M. In ppm (tissue QSM- ~0.03 ppm) the raw term is ~1e-4, the 0.01-weighted L_M
      outweighs it, and since L_M ignores scale the QSM amplitude drifts (seen: ~2 ppm after two tiny
      epochs); the authors' code multiplies L_C by a constant for the same reason.
    - Morphology: L_M = mean over mask voxels and the 3 axes of | |z(Sobel_a(field))| - |z(Sobel_a(QSM))| |,
      where z is the z-score over the mask voxels of one sample and axis, and both maps are multiplied
      by the mask before the Sobel (so values outside the mask never enter the loss), as in the
      authors' reference code. The z-scoring makes L_M free of units and of the field / QSM scale:
      it compares edge patterns, not values.

    Each sample's terms are averaged over its own mask and then over the batch (a per-sample mean,
    so DDP's gradient averaging over equally sized rank batches equals the full-batch gradient). A
    sample with an empty mask contributes 0.

    Args:
        morph_weight: weight of L_M (paper: 0.01).
        eps: floor of the z-scoring variance and of the QSM- mean square; keeps constant maps finite.

    forward(qsm_pred, qsm_minus, field, mask): all (B, 1, X, Y, Z); QSM, QSM- and field in ppm; mask
    0/1 (values > 0.5 count as brain). Returns ReconstructionLossTerms(total, consistency, morphology).
    """

    def __init__(self, morph_weight: float = 0.01, eps: float = 1e-8) -> None:
        super().__init__()
        if morph_weight < 0:
            raise ValueError(f"morph_weight must be >= 0, got {morph_weight}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.morph_weight = float(morph_weight)
        self.eps = float(eps)

    def forward(self, qsm_pred: torch.Tensor, qsm_minus: torch.Tensor, field: torch.Tensor,
                mask: torch.Tensor) -> ReconstructionLossTerms:
        shapes = {name: tuple(t.shape) for name, t in
                  (("qsm_pred", qsm_pred), ("qsm_minus", qsm_minus), ("field", field), ("mask", mask))}
        if len(set(shapes.values())) != 1 or qsm_pred.ndim != 5 or qsm_pred.shape[1] != 1:
            raise ValueError(f"all inputs must share one shape (B, 1, X, Y, Z), got {shapes}")
        m = (mask > 0.5).to(qsm_pred.dtype)
        n_vox = m.sum(dim=(1, 2, 3, 4)).clamp(min=1.0)  # (B,)

        # L_C in units of the sample's QSM- RMS inside the mask (see the class docstring).
        rms_sq = ((qsm_minus * m) ** 2).sum(dim=(1, 2, 3, 4)) / n_vox
        weighted = qsm_minus.abs() * (qsm_minus - qsm_pred).abs() * m
        consistency = (weighted.sum(dim=(1, 2, 3, 4)) / (n_vox * (rms_sq + self.eps))).mean()

        z_field = self._masked_zscore(sobel_gradients_torch(field * m), m, n_vox)
        z_qsm = self._masked_zscore(sobel_gradients_torch(qsm_pred * m), m, n_vox)
        diff = (z_field.abs() - z_qsm.abs()).abs() * m
        morphology = (diff.sum(dim=(1, 2, 3, 4)) / (3.0 * n_vox)).mean()

        return ReconstructionLossTerms(consistency + self.morph_weight * morphology, consistency, morphology)

    def _masked_zscore(self, g: torch.Tensor, m: torch.Tensor, n_vox: torch.Tensor) -> torch.Tensor:
        """Per sample and channel: (g - mean) / sqrt(var + eps), moments over mask voxels (population var)."""
        n = n_vox.view(-1, 1, 1, 1, 1)
        mean = (g * m).sum(dim=(2, 3, 4), keepdim=True) / n
        var = (((g - mean) * m) ** 2).sum(dim=(2, 3, 4), keepdim=True) / n
        return (g - mean) / torch.sqrt(var + self.eps)
