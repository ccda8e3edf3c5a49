"""Supervised pretraining of the learned QSM on simulated fields with known susceptibility.

One step takes one example (`simulated_fields`), cuts a random box of at most `CROP` voxels out of its
brain, turns and flips it (the B0 direction and voxel size follow), and fits the network's map to the
true chi by the demeaned NRMSE inside the box's mask (the 2019 challenge's metric, free of units and of
the unobservable mean). The field of a box is made to be the field of the box's own sources: the dipole
field of the true chi outside the box is subtracted (what the data-consistency steps see is then
explainable by the box, as the whole brain's field is by the whole brain at inference); noise and the
field's imperfections stay. Whole volumes would cost 3-4 times more per step on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mqsm_nnunet.learned_qsm.unrolled_net import DipoleOperator, UnrolledQSMNet
from mqsm_nnunet.learned_qsm.simulated_fields import FieldExample
from mqsm_nnunet.physics import forward_field

CROP = 64
MASK_MARGIN = 2   # voxels kept around the mask's bounding box (in training boxes and at inference)


@dataclass(frozen=True)
class TrainingBox:
    """Tensors (1, 1, *S) of one training box, with its geometry."""

    field: torch.Tensor
    mask: torch.Tensor
    chi: torch.Tensor
    start: torch.Tensor
    voxel_size: tuple[float, float, float]
    b0_dir: tuple[float, float, float]


def mask_box(mask: np.ndarray, margin: int = MASK_MARGIN) -> tuple[slice, slice, slice]:
    """The mask's bounding box grown by `margin` voxels (clipped to the volume)."""
    indices = np.nonzero(mask)
    if not indices[0].size:
        raise ValueError("the brain mask is empty")
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
                 for i, n in zip(indices, mask.shape))


def sample_box(example: FieldExample, rng: np.random.Generator, crop: int = CROP) -> TrainingBox:
    """A random box of the example's brain, its field reduced to the box's own sources, turned and flipped."""
    brain = mask_box(example.mask)
    box = []
    for piece in brain:
        length = piece.stop - piece.start
        size = min(crop, length)
        start = piece.start + int(rng.integers(0, length - size + 1))
        box.append(slice(start, start + size))
    box = tuple(box)
    outside = example.chi.astype(np.float32).copy()
    outside[box] = 0.0
    field = (example.field - forward_field(outside, example.voxel_size, example.b0_dir) * example.mask)[box]
    arrays = [field, example.mask[box].astype(np.float32), example.chi[box], example.tv[box]]
    voxel, b0 = np.asarray(example.voxel_size), np.asarray(example.b0_dir)
    order = rng.permutation(3)
    arrays = [np.transpose(a, order) for a in arrays]
    voxel, b0 = voxel[order], b0[order]
    for axis in range(3):
        if rng.uniform() < 0.5:
            arrays = [np.flip(a, axis) for a in arrays]
            b0[axis] = -b0[axis]
    tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None] for a in arrays]
    return TrainingBox(*tensors, tuple(float(v) for v in voxel), tuple(float(v) for v in b0))


def demeaned_nrmse(prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||(p - mean p) - (t - mean t)|| / ||t - mean t|| in the mask (fraction, not %)."""
    m = (mask > 0.5).to(prediction.dtype)
    n = m.sum(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1.0)
    p = (prediction - (prediction * m).sum(dim=(1, 2, 3, 4), keepdim=True) / n) * m
    t = (truth - (truth * m).sum(dim=(1, 2, 3, 4), keepdim=True) / n) * m
    error = torch.sqrt(((p - t) ** 2).sum(dim=(1, 2, 3, 4)))
    return (error / torch.sqrt((t ** 2).sum(dim=(1, 2, 3, 4))).clamp(min=1e-12)).mean()


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on the CPU (about twice as fast here), float16 AMP on CUDA; off when not `enabled`."""
    if device.type == "cuda":
        return torch.autocast("cuda", enabled=enabled)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def supervised_step(net: UnrolledQSMNet, box: TrainingBox, optimizer: torch.optim.Optimizer,
                    device: torch.device, mixed_precision: bool = True, clip: float = 1.0) -> float:
    """One optimizer step on one box; returns the box's demeaned NRMSE (fraction) before the step."""
    field, mask, chi, start = (t.to(device) for t in (box.field, box.mask, box.chi, box.start))
    dipole = DipoleOperator(field.shape[2:], box.voxel_size, box.b0_dir, device)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, mixed_precision):
        prediction = net(field, mask, start, dipole)
    loss = demeaned_nrmse(prediction.float(), chi, mask)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    optimizer.step()
    return float(loss.detach())


def cosine_lr(step: int, total: int, peak: float, warmup: int = 20, floor: float = 0.02) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor` x peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
