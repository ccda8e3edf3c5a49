"""Self-supervised QSM reconstruction losses of mQSM, in torch: the paper's Eq. 5 and a dipole-model
data-consistency term.

The segmentation loss (paper Eq. 6: Dice + CE with deep-supervision weights) is nnU-Net's own
``DC_and_CE_loss`` wrapped in ``DeepSupervisionWrapper``, set up by the trainer; nothing here.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mqsm_nnunet.physics import DEFAULT_PAD_FACTOR, dipole_kernel, padded_shape, sobel_kernel

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


class DataConsistencyLoss(nn.Module):
    """L_DC: how well the dipole model explains the measured field (beyond the paper's Eq. 5).

    Eq. 5 anchors the QSM to QSM- (L_C) and compares edge patterns (L_M); nothing in it says that
    ``D * chi`` should reproduce the measured field, so on its own it cannot beat QSM-. This term does,
    as in self-supervised QSM (uQSM, FINE, LPCNN-style unrolls):

        r = D * (QSM . mask) - field,   L_DC = sum_w (r - mean_w r)^2 / sum_w (field - mean_w field)^2

    per sample, averaged over the batch: the squared misfit relative to the field's own energy (unit-
    free, 0 for a perfect model, 1 for QSM = 0). Choices, each for a reason:
    - support: the QSM is masked before the convolution (chi = 0 outside the brain, as after
      background-field removal); this support constraint is what makes the inversion well posed.
    - where it is evaluated (weights w): inside the brain mask eroded by ``erosion`` voxels (the field
      at the brain edge is the least reliable in vivo) and at least ``margin`` voxels away from the
      patch border. The dipole field is non-local: sources outside a patch are missing from D * chi
      there, and they matter most near the border; the convolution itself zero-pads the patch to
      ``pad_factor`` times its size so nothing wraps around.
    - demeaned: the residual's mean over w is removed (the mean local field is not observable; D(0)
      = 0), so a constant offset of the field costs nothing.
    - geometry: ``b0_dirs`` is each sample's B0 direction in the patch's own voxel frame (after
      nnU-Net's transpose and the augmentation's rotations and flips: the trainer tracks them) and
      ``voxel_size`` the patch's voxel size in the same axis order.

    Args:
        margin: voxels next to each patch face left out of the misfit.
        erosion: voxels eroded from the brain mask for the misfit.
        pad_factor: zero-padding of the FFT convolution (see ``physics.padded_shape``).

    forward(qsm, field, mask, b0_dirs, voxel_size, sample_weights=None): qsm, field, mask (B, 1, X, Y, Z)
    (ppm, ppm, 0/1); b0_dirs (B, 3); voxel_size 3 floats (mm); sample_weights (B,) (default 1). Returns
    mean over samples of weight * misfit; samples whose misfit region is empty (or whose field is
    constant there) contribute 0.
    """

    def __init__(self, margin: int = 4, erosion: int = 1, pad_factor: float = DEFAULT_PAD_FACTOR) -> None:
        super().__init__()
        if margin < 0 or erosion < 0:
            raise ValueError(f"margin and erosion must be >= 0, got margin={margin}, erosion={erosion}")
        self.margin = int(margin)
        self.erosion = int(erosion)
        self.pad_factor = float(pad_factor)

    def misfit_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) 0/1: eroded brain mask, minus a ``margin`` band along the patch faces."""
        m = (mask > 0.5).to(torch.float32)
        if self.erosion:
            size = 2 * self.erosion + 1
            m = 1.0 - F.max_pool3d(1.0 - m, size, stride=1, padding=self.erosion)
        if self.margin:
            interior = torch.zeros_like(m)
            k = self.margin
            interior[:, :, k:-k or None, k:-k or None, k:-k or None] = 1.0
            m = m * interior
        return m

    def residual(self, qsm: torch.Tensor, field: torch.Tensor, mask: torch.Tensor, b0_dirs: torch.Tensor,
                 voxel_size) -> torch.Tensor:
        """r = D * (qsm . mask) - field on the patch grid, (B, 1, X, Y, Z)."""
        shapes = {tuple(t.shape) for t in (qsm, field, mask)}
        if len(shapes) != 1 or qsm.ndim != 5 or qsm.shape[1] != 1:
            raise ValueError(f"qsm, field and mask must share one shape (B, 1, X, Y, Z), got {shapes}")
        if tuple(b0_dirs.shape) != (qsm.shape[0], 3):
            raise ValueError(f"b0_dirs must have shape ({qsm.shape[0]}, 3), got {tuple(b0_dirs.shape)}")
        spatial = tuple(int(s) for s in qsm.shape[2:])
        padded = padded_shape(spatial, self.pad_factor)
        voxel = tuple(float(v) for v in voxel_size)
        kernels = torch.stack([torch.from_numpy(dipole_kernel(padded, voxel, b.tolist(), rfft=True))
                               for b in b0_dirs.detach().double().cpu()])
        kernels = kernels[:, None].to(device=qsm.device, dtype=torch.float32)
        chi = (qsm * (mask > 0.5)).float()
        spectrum = torch.fft.rfftn(chi, s=padded, dim=(2, 3, 4)) * kernels
        model = torch.fft.irfftn(spectrum, s=padded, dim=(2, 3, 4))[..., :spatial[0], :spatial[1], :spatial[2]]
        return model - field.float()

    def forward(self, qsm: torch.Tensor, field: torch.Tensor, mask: torch.Tensor, b0_dirs: torch.Tensor,
                voxel_size, sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        r = self.residual(qsm, field, mask, b0_dirs, voxel_size)
        w = self.misfit_weights(mask)
        n = w.sum(dim=(1, 2, 3, 4)).clamp(min=1.0)

        def demeaned_energy(x: torch.Tensor) -> torch.Tensor:
            mean = (x * w).sum(dim=(1, 2, 3, 4), keepdim=True) / n.view(-1, 1, 1, 1, 1)
            return (((x - mean) * w) ** 2).sum(dim=(1, 2, 3, 4))

        field_energy = demeaned_energy(field.float())
        valid = field_energy > 0
        ratio = demeaned_energy(r) / torch.where(valid, field_energy, torch.ones_like(field_energy))
        ratio = torch.where(valid, ratio, torch.zeros_like(ratio))
        if sample_weights is not None:
            ratio = ratio * sample_weights.to(ratio)
        return ratio.mean()
