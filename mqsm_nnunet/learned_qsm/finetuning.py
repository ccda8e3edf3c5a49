"""Fine-tuning the learned QSM on a user's own fields, with no truth, guarded against streaks.

The loss is the data misfit of the dipole model over the eroded brain (the edge is where real phase is
least dipolar), anchored to the pretrained net's own maps. Data consistency alone rewards fitting noise,
residual background and edge phase with streaks along the magic-angle cone, where the dipole kernel is
blind; so the anchor keeps the prior, and the guard (`cone_energy`) rejects a fine-tuned map whose
energy inside the cone grew by more than `CONE_TOLERANCE` over the pretrained one's: that subject keeps
its pretrained map.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from mqsm_nnunet.learned_qsm.inference import FieldMap, box_tensors, on_grid, reconstruct, tv_start
from mqsm_nnunet.learned_qsm.unrolled_net import DipoleOperator, UnrolledQSMNet
from mqsm_nnunet.learned_qsm.pretraining import autocast
from mqsm_nnunet.physics import dipole_kernel, padded_shape

FINETUNE_LR = 1e-4
ANCHOR_WEIGHT = 1.0
CONE_THRESHOLD = 0.1           # |D(k)| below this: the magic-angle cone, where the field says nothing
CONE_TOLERANCE = 1.03


def cone_energy(chi: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float],
                threshold: float = CONE_THRESHOLD) -> float:
    """Energy of the map's spectrum inside the magic-angle cone (|D(k)| < threshold), k = 0 excluded:
    where streaks live, since the field carries nothing there."""
    padded = padded_shape(chi.shape, 1.0)
    kernel = dipole_kernel(padded, voxel_size, b0_dir, rfft=True)
    spectrum = np.abs(scipy.fft.rfftn(chi, s=padded, workers=-1)) ** 2
    cone = np.abs(kernel) < threshold
    cone[0, 0, 0] = False
    return float(spectrum[cone].sum())


def _misfit(chi: torch.Tensor, f: torch.Tensor, weight: torch.Tensor, dipole: DipoleOperator) -> torch.Tensor:
    """Demeaned squared misfit of the dipole model over `weight`, relative to the field's own energy."""
    residual = dipole(chi) - f
    n = weight.sum().clamp(min=1.0)
    r = (residual - (residual * weight).sum() / n) * weight
    g = (f - (f * weight).sum() / n) * weight
    return (r ** 2).sum() / (g ** 2).sum().clamp(min=1e-20)


def finetune(net: UnrolledQSMNet, subjects: Sequence[FieldMap], steps: int, device: torch.device | str = "cpu",
             lr: float = FINETUNE_LR, anchor_weight: float = ANCHOR_WEIGHT, erosion: int = 2,
             starts: Sequence[np.ndarray] | None = None,
             progress: Callable[[int], object] | None = None) -> tuple[UnrolledQSMNet, list[bool]]:
    """A copy of `net` fine-tuned for `steps` Adam steps (subjects in turn) on data consistency plus the
    anchor, and per subject whether the guard accepts its fine-tuned map (see the module docstring).

    `starts`: the subjects' TV-ADMM maps, when the caller has them. `progress`: an optional callable
    receiving 1 per step (a progress bar's update).
    """
    device = torch.device(device)
    tuned = copy.deepcopy(net).to(device).train()
    starts = [tv_start(s) for s in subjects] if starts is None else list(starts)
    prepared = []
    for subject, start in zip(subjects, starts):
        box, (f, m, x0), dipole = box_tensors(subject, start, device)
        weight = 1.0 - F.max_pool3d(1.0 - m, 2 * erosion + 1, stride=1, padding=erosion) if erosion else m
        with torch.no_grad():
            anchor = net.to(device)(f, m, x0, dipole)
        prepared.append((box, f, m, x0, dipole, weight, anchor))
    optimizer = torch.optim.Adam(tuned.parameters(), lr=lr)
    for step in range(int(steps)):
        _, f, m, x0, dipole, weight, anchor = prepared[step % len(prepared)]
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, True):
            chi = tuned(f, m, x0, dipole).float()
        scale = (anchor ** 2 * m).sum() / m.sum()
        loss = _misfit(chi * m, f, weight, dipole) + anchor_weight * ((chi - anchor) ** 2 * m).sum() / m.sum() / scale
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
        optimizer.step()
        if progress is not None:
            progress(1)
    tuned.eval()
    accepted = []
    for subject, start, (box, *_, anchor) in zip(subjects, starts, prepared):
        before = cone_energy(on_grid(anchor, subject, box), subject.voxel_size, subject.b0_dir)   # the pretrained map
        after = cone_energy(reconstruct(tuned, subject.field, subject.mask, subject.voxel_size, subject.b0_dir,
                                        start, device), subject.voxel_size, subject.b0_dir)
        accepted.append(after <= CONE_TOLERANCE * before)
    return tuned, accepted
